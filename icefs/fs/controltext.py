"""The hidden control directories: which files exist and what they say.

Rendering is pure; `icefs.fs.control` gathers the facts and calls these
functions.  The command line renders the same documents with them.

Query files (`QUERY_FILES`: ``diff``, ``log`` and the root's ``ops``) answer
``cat`` with text; opened for writing, they take a JSON request and answer it
with a JSON document read back from the same descriptor (docs/commands.md).
"""

from __future__ import annotations

import json
from typing import Any, Final

from icefs.timefmt import render_time

__all__ = [
    "BRANCH_COMMANDS",
    "LOG_PAGE",
    "QUERY_FILES",
    "REF_COMMANDS",
    "REF_FILES",
    "ROOT_FILES",
    "WRITABLE_ROOT_FILES",
    "more_log",
    "ref_files",
    "render_diff",
    "render_json",
    "render_log",
    "render_operations",
    "render_time",
    "writable_files",
]

#: Snapshots a read of ``.icefs/log`` shows; older ones are asked for with ``"after"``.
LOG_PAGE: Final = 1000
#: Files of the mount-wide ``.icefs/``.
ROOT_FILES: Final = ("ops", "pid", "refresh", "stats", "status", "version")
#: Root control files that accept writes (``refresh``: re-read refs now; ``ops``: a query).
WRITABLE_ROOT_FILES: Final = frozenset({"ops", "refresh"})
#: Read-only files of each ref view's ``.icefs/`` (``diff`` and ``log`` also take queries).
REF_FILES: Final = ("diff", "log", "snapshot_id", "status")
#: Files that answer a JSON request written to them (root ``ops``; ``diff``, ``log``).
QUERY_FILES: Final = frozenset({"diff", "log", "ops"})
#: Files of a writable branch's ``.icefs/`` that take commands.
BRANCH_COMMANDS: Final = frozenset({"commit", "discard", "reset"})
#: Files of every ref view's ``.icefs/`` that make refs: a branch or a tag at its snapshot.
REF_COMMANDS: Final = frozenset({"branch", "tag"})


def ref_files(read_only: bool) -> tuple[str, ...]:
    """Return the names in a ref view's ``.icefs/`` (commit/discard/reset only on branches)."""
    commands = REF_COMMANDS if read_only else REF_COMMANDS | BRANCH_COMMANDS
    return tuple(sorted((*REF_FILES, *commands)))


def writable_files(root: bool) -> frozenset[str]:
    """Return the control files that accept writes, in the root or in a ref's ``.icefs/``."""
    if root:
        return WRITABLE_ROOT_FILES
    return BRANCH_COMMANDS | REF_COMMANDS | (QUERY_FILES & frozenset(REF_FILES))


def render_json(doc: dict[str, Any] | list[Any]) -> bytes:
    """Return *doc* as indented JSON with a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _value(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else json.dumps(value)


def more_log(last: str) -> bytes:
    """The line that ends a page of the log whose last snapshot is *last*."""
    return f"... older snapshots: icefs log --after {last}\n".encode()


def render_log(history: list[dict[str, Any]]) -> bytes:
    """Snapshot documents (`icefs.store.history.snapshot_doc`), newest first, one line each:
    id, time, message (first line only); below it, indented, the commit's metadata as
    ``key=value`` pairs when it has any."""
    lines = []
    for doc in history:
        message = doc["message"].splitlines()[0] if doc["message"] else ""
        lines.append(f"{doc['id']}  {doc['time']}  {message}".rstrip() + "\n")
        if doc["metadata"]:
            pairs = " ".join(f"{k}={_value(v)}" for k, v in sorted(doc["metadata"].items()))
            lines.append(f"    {pairs}\n")
    return "".join(lines).encode()


def _coords(rows: list[list[int]]) -> str:
    return " ".join("(" + ",".join(str(c) for c in row) + ")" for row in rows)


def render_diff(doc: dict[str, Any]) -> bytes:
    """A diff document (`icefs.store.history.diff`) as text, one line per node."""
    to, start = doc["to"], doc["from"]
    if start is None:
        return f"{to['id']} is the repository's first snapshot\n".encode()
    arrow = "->" if doc["direction"] == "forward" else "-> (back to an ancestor)"
    lines = [f"{start['id']} {arrow} {to['id']}  {to['message']}".rstrip()]
    signs = {"new": "+", "deleted": "-", "updated": "~", "chunks": "~"}
    for node in doc["nodes"]:
        parts = []
        if node["change"] in ("new", "deleted"):
            parts.append(f"{node['change']} {node['kind']}")
        fields = node.get("metadata") or []
        if fields:
            parts.append("metadata: " + ", ".join(fields))
        attrs = node.get("attributes") or {}
        for what in ("added", "removed", "changed"):
            if attrs.get(what):
                parts.append(f"attributes {what}: " + ", ".join(attrs[what]))
        if node["change"] == "updated" and not fields and not any(attrs.values()):
            parts.append(f"{node['kind']} metadata rewritten, same content")
        if node.get("chunks"):
            parts.append(f"{node['chunks']} chunk{'s' if node['chunks'] != 1 else ''} changed")
        lines.append(f"{signs[node['change']]} {node['path']}  " + "; ".join(parts))
        if node.get("chunk_coords"):
            lines.append(f"    chunks: {_coords(node['chunk_coords'])}")
    for old, new in doc["moved"]:
        lines.append(f"> {old} -> {new}  moved")
    s = doc["summary"]
    if len(lines) == 1:
        lines.append("no changes")
    lines.append(
        f"{s['new']} new, {s['deleted']} deleted, {s['updated']} updated, "
        f"{s['chunks']} chunks changed"
    )
    return ("\n".join(lines) + "\n").encode()


def render_operations(entries: list[dict[str, Any]]) -> bytes:
    """The operations log, newest first: time, operation and its details."""
    lines = []
    for entry in entries:
        details = " ".join(
            f"{k}={_value(v)}" for k, v in entry.items() if k not in ("time", "operation")
        )
        lines.append(f"{entry['time']}  {entry['operation']}  {details}".rstrip())
    return ("\n".join(lines) + "\n").encode() if lines else b""
