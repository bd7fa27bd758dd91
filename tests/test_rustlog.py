"""Icechunk's Rust log lines become levelled `logging` records, warnings once."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from icefs.store.rustlog import parse_events

ESC = "\x1b"
SAMPLE = [
    f"  {ESC}[2m2026-11-30T15:30:26.306974Z{ESC}[0m {ESC}[33m WARN{ESC}[0m "
    f"{ESC}[1;33micechunk_arrow_object_store{ESC}[0m{ESC}[33m: {ESC}[33mThe LocalFileSystem "
    f"storage is not safe for concurrent commits.{ESC}[0m\n",
    f"    {ESC}[2;3mat{ESC}[0m icechunk-arrow-object-store/src/lib.rs:343\n",
    "\n",
    "  2026-11-30T15:30:27.000000Z ERROR icechunk::store: invalid zarr key format `a/0`\n",
    "  | context:\n",
    "\n",
    "thread '<unnamed>' panicked at src/lib.rs:1:1\n",
]


def test_events_are_parsed_with_level_target_and_continuation_lines():
    events = parse_events(SAMPLE)
    assert events == [
        (
            logging.WARNING,
            "icechunk.icechunk_arrow_object_store",
            "The LocalFileSystem storage is not safe for concurrent commits.",
        ),
        (logging.ERROR, "icechunk.icechunk", "invalid zarr key format `a/0`\n| context:"),
        (logging.ERROR, "icefs.stderr", "thread '<unnamed>' panicked at src/lib.rs:1:1"),
    ]


def test_icechunk_warnings_reach_the_log_once(tmp_path):
    """A real process: Icechunk warns twice, the log holds it once and no colour codes."""
    script = textwrap.dedent(f"""
        import logging, sys, time
        from icefs.store.rustlog import route_stderr
        stream = route_stderr()
        logging.basicConfig(stream=stream, level=logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        import icechunk
        icechunk.set_logs_filter("warn")
        icechunk.local_filesystem_storage({str(tmp_path / "a")!r})
        icechunk.local_filesystem_storage({str(tmp_path / "b")!r})
        time.sleep(0.5)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in result.stderr.splitlines() if "not safe" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("WARNING icechunk.icechunk_arrow_object_store: The LocalFileSystem")
    assert ESC not in result.stderr
