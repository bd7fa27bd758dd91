"""Honest errors: only Icechunk's and the OS's exceptions become errno values."""

from __future__ import annotations

import errno
import logging

import icechunk
import pytest

from icefs import errors
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.store.errors import translate


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (icechunk.NodeNotFoundError("no node /x"), errors.NotFound),
        (icechunk.InvalidInputError("bad key"), errors.InvalidInput),
        (icechunk.ConflictError("parent moved"), errors.Busy),
        (icechunk.AlreadyExistsError("tag t"), errors.Exists),
        (icechunk.StorageError("timed out"), errors.StorageFailure),
        (icechunk.RepositoryNotFoundError("gone"), errors.StorageFailure),
        (OSError(errno.ENOENT, "missing"), errors.NotFound),
        (OSError(errno.ENOSPC, "full"), errors.StorageFailure),
    ],
)
def test_icechunk_and_os_errors_are_translated(exc, expected):
    got = translate(exc)
    assert type(got) is expected
    assert str(got)


@pytest.mark.parametrize("bug", [KeyError("k"), ValueError("v"), TypeError("t"), AssertionError()])
def test_anything_else_is_a_bug_and_goes_through(bug):
    """A KeyError or ValueError of our own is not 'no such file' nor 'invalid input'."""

    def translated() -> None:
        try:
            raise bug
        except Exception as exc:
            raise translate(exc) from exc

    with pytest.raises(type(bug)):
        translated()


def test_log_levels():
    assert errors.NotFound.log_level == logging.DEBUG
    assert errors.InvalidInput.log_level == logging.INFO
    assert errors.StorageFailure.log_level == logging.WARNING


def test_exit_codes_live_with_the_cli():
    assert exit_code(errors.RepositoryError("x")) == ExitCode.REPOSITORY
    assert exit_code(errors.UsageError("x")) == ExitCode.USAGE
    assert exit_code(errors.Timeout("x")) == ExitCode.TIMEOUT
    assert exit_code(errors.Busy("x")) == ExitCode.CONFLICT
    assert exit_code(OSError(errno.EPERM, "no")) == ExitCode.NOT_PERMITTED
    assert exit_code(QuietError("x", ExitCode.EXISTS)) == ExitCode.EXISTS
    assert not hasattr(errors, "ExitCode")


def test_daemon_logs_are_checked_for_errors():
    """Mount tests fail on an error line or traceback the test did not expect."""
    from harness.mount import problems_in

    log = (
        "2026-11-30 10:00:00.000 INFO icefs.daemon.lifecycle: ready\n"
        "2026-11-30 10:00:01.000 WARNING icefs.fs.branch: storing a/c/0 failed\n"
        "2026-11-30 10:00:02.000 ERROR icefs.fuse.ops: read failed unexpectedly\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
    )
    assert len(problems_in(log, [])) == 2
    assert problems_in(log, ["failed unexpectedly", "most recent call"]) == []


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "a virtual chunk in this repository resolves to the url prefix s3://testbucket/ "
            "(container: s3), to be able to fetch the chunk you need to authorize",
            "virtual chunk container s3://testbucket/ (named s3) is not authorized: "
            "mount with --virtual s3://testbucket/[=ACCESS]",
        ),
        (
            "a virtual chunk in this repository resolves to the url prefix s3://b/data/, to "
            "be able to fetch the chunk you need to authorize",
            "virtual chunk container s3://b/data/ is not authorized: "
            "mount with --virtual s3://b/data/[=ACCESS]",
        ),
    ],
    ids=["declared by name (spec 1)", "declared by prefix"],
)
def test_unauthorized_container_hint_follows_icechunk(message, shown):
    translated = translate(icechunk.InvalidInputError(message))
    assert isinstance(translated, errors.NotAuthorized)
    assert str(translated).startswith(shown)


def test_the_log_check_sees_errors_and_tracebacks_only():
    """What the autouse `_log_check` fails a test on: ERROR records and tracebacks at any
    level, unless a `log_allows` pattern matches them."""
    from harness.mount import LogProblems

    handler = LogProblems()
    log = logging.getLogger("icefs.test.logcheck")
    log.addHandler(handler)
    log.propagate = False  # this test's own records must not trip its own check
    try:
        log.warning("a warning is no problem")
        log.error("storage broke: %s", "EIO")
        try:
            raise ValueError("boom")
        except ValueError:
            log.warning("kept going", exc_info=True)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert handler.lines == [
        "icefs.test.logcheck ERROR storage broke: EIO",
        "icefs.test.logcheck WARNING kept going (with a traceback)",
    ]
    assert handler.unexpected([r"storage broke"]) == [handler.lines[1]]
    assert handler.unexpected([r"broke", r"kept going"]) == []
