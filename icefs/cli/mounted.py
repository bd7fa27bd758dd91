"""Ref and history operations through a mounted icefs: only its files.

``mkdir``/``rmdir`` in ``branches/`` and ``tags/``; commands written to
``.icefs/branch``, ``tag`` and ``reset``; JSON queries to ``.icefs/log``,
``diff`` and the root's ``ops`` (docs/commands.md).  Failures are `QuietError`s
with the documented exit code and the daemon's reason (from ``status``).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from icefs.cli.client import ask, find_up, write_control
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.paths import CONTROL_DIR, name_to_ref, ref_to_name

__all__ = ["MountRefs"]


def _escaped(ref: str) -> str:
    name = ref_to_name(ref)
    if name is None:
        raise QuietError(f"{ref!r} cannot be a ref name", ExitCode.INVALID)
    return name


class MountRefs:
    """Ref operations through a mounted icefs, found from any *path* inside it."""

    def __init__(self, path: str) -> None:
        self.root = find_up(
            path,
            lambda d: (
                os.path.isfile(os.path.join(d, CONTROL_DIR, "pid"))
                and os.path.isdir(os.path.join(d, "branches"))
            ),
            f"{path} is not inside an icefs mount (use --repo STORAGE)",
        )

    def _fail(self, what: str, exc: OSError, where: str = "") -> QuietError:
        """The error for *exc*, with the reason from the ``status`` of *where* (a ref
        directory; default: the mount's root)."""
        reason = exc.strerror or str(exc)
        with (
            contextlib.suppress(OSError, ValueError),
            open(os.path.join(where or self.root, CONTROL_DIR, "status")) as f,
        ):
            reason = json.load(f).get("last_error") or reason
        return QuietError(f"{what}: {reason}", exit_code(exc.errno or 0))

    def _listing(self, kind: str) -> dict[str, str]:
        out = {}
        base = os.path.join(self.root, kind)
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name, CONTROL_DIR, "snapshot_id")
            with contextlib.suppress(OSError), open(path) as f:
                out[name_to_ref(name)] = f.read().strip()
        return out

    def branches(self) -> dict[str, str]:
        return self._listing("branches")

    def tags(self) -> dict[str, str]:
        return self._listing("tags")

    def _view_dir(self, ref: str) -> str:
        for kind in ("branches", "tags"):
            name = ref_to_name(ref)
            if name and os.path.isdir(os.path.join(self.root, kind, name)):
                return os.path.join(self.root, kind, name)
        path = os.path.join(self.root, "snapshots", ref)
        if ref and "/" not in ref and os.path.isdir(path):
            return path
        raise QuietError(f"no branch, tag or snapshot {ref!r}", ExitCode.NOT_FOUND)

    def _default_branch(self) -> str:
        with open(os.path.join(self.root, CONTROL_DIR, "status")) as f:
            return str(json.load(f).get("default_branch", "main"))

    def _write(self, path: str, text: str, what: str, where: str = "") -> None:
        try:
            write_control(path, text)
        except OSError as exc:
            raise self._fail(what, exc, where) from None

    def create_branch(self, name: str, source: str | None) -> str:
        _escaped(name)
        if source is None:
            path = os.path.join(self.root, "branches", _escaped(name))
            try:
                os.mkdir(path)
            except OSError as exc:
                raise self._fail(f"cannot create branch {name!r}", exc) from None
        else:
            view = self._view_dir(source)
            self._write(
                os.path.join(view, CONTROL_DIR, "branch"), name, f"cannot create branch {name!r}"
            )
        return self.branches()[name]

    def delete_branch(self, name: str) -> None:
        path = os.path.join(self.root, "branches", _escaped(name))
        try:
            os.rmdir(path)
        except OSError as exc:
            raise self._fail(f"cannot delete branch {name!r}", exc) from None
        if os.path.isdir(path):
            raise QuietError(
                f"branch {name!r} is empty and has uncommitted changes, or is the "
                "default branch: it stays",
                ExitCode.NOT_PERMITTED,
            )

    def create_tag(self, name: str, source: str | None) -> str:
        _escaped(name)
        view = self._view_dir(source or self._default_branch())
        self._write(os.path.join(view, CONTROL_DIR, "tag"), name, f"cannot create tag {name!r}")
        return self.tags()[name]

    def delete_tag(self, name: str) -> None:
        try:
            os.rmdir(os.path.join(self.root, "tags", _escaped(name)))
        except OSError as exc:
            raise self._fail(f"cannot delete tag {name!r}", exc) from None

    def _ask(self, path: str, request: dict[str, Any], what: str) -> Any:
        try:
            return ask(path, request)
        except OSError as exc:
            raise self._fail(what, exc) from None

    def log(
        self, ref: str | None, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        ref = ref or self._default_branch()
        path = os.path.join(self._view_dir(ref), CONTROL_DIR, "log")
        answer: list[dict[str, Any]] = self._ask(
            path, {"limit": limit, "after": after}, f"cannot read the history of {ref!r}"
        )
        return answer

    def diff(self, start: str | None, end: str | None, chunks: bool) -> dict[str, Any]:
        end = end or self._default_branch()
        path = os.path.join(self._view_dir(self._default_branch()), CONTROL_DIR, "diff")
        request = {"from": start, "to": end, "chunks": chunks}
        answer: dict[str, Any] = self._ask(path, request, "cannot diff")
        return answer

    def operations(self, limit: int | None) -> list[dict[str, Any]]:
        path = os.path.join(self.root, CONTROL_DIR, "ops")
        answer: list[dict[str, Any]] = self._ask(
            path, {"limit": limit}, "cannot read the operations log"
        )
        return answer

    def reset(self, name: str, to: str, discard: bool) -> tuple[str, str]:
        view = os.path.join(self.root, "branches", _escaped(name))
        if not os.path.isdir(view):
            raise QuietError(f"no branch {name!r}", ExitCode.NOT_FOUND)
        request = json.dumps({"to": to, "discard": discard})
        self._write(
            os.path.join(view, CONTROL_DIR, "reset"), request, f"cannot reset {name!r}", view
        )
        with open(os.path.join(view, CONTROL_DIR, "status")) as f:
            done = json.load(f)["last_reset"]
        return str(done["from"]), str(done["to"])
