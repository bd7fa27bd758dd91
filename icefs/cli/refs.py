"""``icefs init``, ``branch``, ``tag`` and ``log``: on a mount (its files) or a repository.

`MountRefs` only uses ordinary file operations on a mounted icefs
(``mkdir``/``rmdir`` in ``branches/`` and ``tags/``, ``.icefs/branch`` and
``.icefs/tag``, ``.icefs/log``); `RepoRefs` talks to Icechunk directly
(``--repo STORAGE``).  Both raise `QuietError` with a documented exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any, Protocol

from icefs.cli.client import write_control
from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.cli.storage import storage_from_args
from icefs.errors import IcefsError
from icefs.paths import CONTROL_DIR, check_ref_name, name_to_ref, ref_to_name

if TYPE_CHECKING:
    import argparse

    from icefs.storage import StorageSpec

__all__ = ["MountRefs", "RefBackend", "RepoRefs", "init_command", "log_command", "ref_command"]


class RefBackend(Protocol):
    def branches(self) -> dict[str, str]: ...
    def tags(self) -> dict[str, str]: ...
    def create_branch(self, name: str, source: str | None) -> str: ...
    def delete_branch(self, name: str) -> None: ...
    def create_tag(self, name: str, source: str | None) -> str: ...
    def delete_tag(self, name: str) -> None: ...
    def log(self, ref: str | None) -> list[dict[str, Any]]: ...


def _escaped(ref: str) -> str:
    name = ref_to_name(ref)
    if name is None:
        raise QuietError(f"{ref!r} cannot be a ref name", ExitCode.INVALID)
    return name


class MountRefs:
    """Ref operations through a mounted icefs, found from any *path* inside it."""

    def __init__(self, path: str) -> None:
        current = os.path.abspath(path)
        while not (
            os.path.isfile(os.path.join(current, CONTROL_DIR, "pid"))
            and os.path.isdir(os.path.join(current, "branches"))
        ):
            parent = os.path.dirname(current)
            if parent == current:
                raise QuietError(
                    f"{path} is not inside an icefs mount (use --repo STORAGE)",
                    ExitCode.NOT_MOUNTED,
                )
            current = parent
        self.root = current

    def _fail(self, what: str, exc: OSError) -> QuietError:
        reason = exc.strerror or str(exc)
        with (
            contextlib.suppress(OSError, ValueError),
            open(os.path.join(self.root, CONTROL_DIR, "status")) as f,
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

    def _write(self, path: str, text: str, what: str) -> None:
        try:
            write_control(path, text)
        except OSError as exc:
            raise self._fail(what, exc) from None

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

    def log(self, ref: str | None) -> list[dict[str, Any]]:
        view = self._view_dir(ref or self._default_branch())
        with open(os.path.join(view, CONTROL_DIR, "log")) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            sid, when, message = ([*line.split("  ", 2), "", ""])[:3]
            out.append({"id": sid, "time": when, "message": message})
        return out


class RepoRefs:
    """Ref operations straight on a repository (``--repo STORAGE``)."""

    def __init__(self, spec: StorageSpec, default_branch: str = "main") -> None:
        from icefs.store.admin import RepoAdmin
        from icefs.store.open import open_repository, ref_lock

        if spec.kind == "memory":
            raise QuietError(
                "--repo memory:// would be a new, empty repository that vanishes", ExitCode.USAGE
            )
        self._admin = RepoAdmin(open_repository(spec, "open"), ref_lock(spec))
        self._default = default_branch

    def _run(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except IcefsError as exc:
            raise QuietError(f"{what}: {exc}", exit_code(exc.errno)) from None

    def branches(self) -> dict[str, str]:
        return dict(sorted(self._run("cannot list branches", self._admin.branches).items()))

    def tags(self) -> dict[str, str]:
        return dict(sorted(self._run("cannot list tags", self._admin.tags).items()))

    def _check(self, name: str) -> str:
        try:
            return check_ref_name(name)
        except IcefsError as exc:
            raise QuietError(str(exc), ExitCode.INVALID) from None

    def create_branch(self, name: str, source: str | None) -> str:
        self._check(name)
        what = f"cannot create branch {name!r}"
        if name in self.branches():
            raise QuietError(f"{what}: it already exists", ExitCode.EXISTS)
        sid: str = self._run(what, self._admin.resolve, source or self._default)
        self._run(what, self._admin.create_branch, name, sid)
        return sid

    def delete_branch(self, name: str) -> None:
        if name == self._default:
            raise QuietError(
                f"cannot delete branch {name!r}: the default branch", ExitCode.NOT_PERMITTED
            )
        self._run(f"cannot delete branch {name!r}", self._admin.delete_branch, name)

    def create_tag(self, name: str, source: str | None) -> str:
        self._check(name)
        what = f"cannot create tag {name!r}"
        sid: str = self._run(what, self._admin.resolve, source or self._default)
        self._run(what, self._admin.create_tag, name, sid)
        return sid

    def delete_tag(self, name: str) -> None:
        self._run(f"cannot delete tag {name!r}", self._admin.delete_tag, name)

    def log(self, ref: str | None) -> list[dict[str, Any]]:
        from icefs.fs.control import render_time

        what = f"cannot read the history of {ref or self._default!r}"
        sid = self._run(what, self._admin.resolve, ref or self._default)
        return [
            {"id": m.id, "time": render_time(m.written_ns), "message": m.message}
            for m in self._run(what, self._admin.log, sid)
        ]


# -- the commands -----------------------------------------------------------------------------


def init_command(args: argparse.Namespace) -> int:
    from icefs.store.open import open_repository

    spec = storage_from_args(args.storage, args)
    if spec.kind == "memory":
        raise QuietError("memory:// repositories exist only inside a mount", ExitCode.USAGE)
    open_repository(spec, args.mode)
    print(f"repository ready at {spec.display()}")
    return ExitCode.OK


def _refs(args: argparse.Namespace) -> RefBackend:
    from icefs.cli.refs import MountRefs, RepoRefs

    if args.repo:
        return RepoRefs(storage_from_args(args.repo, args), args.default_branch)
    return MountRefs(args.mount)


def _print_refs(refs: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"name": n, "snapshot_id": s} for n, s in refs.items()], indent=2))
        return
    width = max((len(n) for n in refs), default=0)
    for name, sid in refs.items():
        print(f"{name:<{width}}  {sid}")


def ref_command(args: argparse.Namespace) -> int:
    refs = _refs(args)
    kind = args.command
    if args.action == "list":
        _print_refs(refs.branches() if kind == "branch" else refs.tags(), args.json)
        return ExitCode.OK
    if args.action == "create":
        create = refs.create_branch if kind == "branch" else refs.create_tag
        sid = create(args.name, args.source)
        if args.json:
            print(json.dumps({"name": args.name, "snapshot_id": sid}))
        else:
            print(f"{kind} {args.name} created at {sid}")
        return ExitCode.OK
    (refs.delete_branch if kind == "branch" else refs.delete_tag)(args.name)
    if args.json:
        print(json.dumps({"deleted": args.name}))
    else:
        print(f"{kind} {args.name} deleted")
    return ExitCode.OK


def log_command(args: argparse.Namespace) -> int:
    history = _refs(args).log(args.ref)
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        for entry in history:
            print(f"{entry['id']}  {entry['time']}  {entry['message']}")
    return ExitCode.OK
