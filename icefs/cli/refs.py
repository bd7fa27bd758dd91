"""``icefs init``, ``branch``, ``tag``, ``log`` and ``diff``: on a mount or a repository.

`MountRefs` (`icefs.cli.mounted`) only uses ordinary file operations on a
mounted icefs; `RepoRefs` (`icefs.cli.direct`) talks to Icechunk directly
(``--repo STORAGE``).  Both raise `QuietError` with a documented exit code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from icefs.cli.exits import ExitCode, QuietError
from icefs.cli.storage import storage_from_args

if TYPE_CHECKING:
    import argparse

__all__ = [
    "RefBackend",
    "diff_command",
    "init_command",
    "log_command",
    "ref_command",
]


class RefBackend(Protocol):
    def branches(self) -> dict[str, str]: ...
    def tags(self) -> dict[str, str]: ...
    def create_branch(self, name: str, source: str | None) -> str: ...
    def delete_branch(self, name: str) -> None: ...
    def create_tag(self, name: str, source: str | None) -> str: ...
    def delete_tag(self, name: str) -> None: ...
    def reset(self, name: str, to: str, discard: bool) -> tuple[str, str]: ...
    def log(
        self, ref: str | None, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]: ...
    def diff(self, start: str | None, end: str | None, chunks: bool) -> dict[str, Any]: ...
    def operations(self, limit: int | None) -> list[dict[str, Any]]: ...


def init_command(args: argparse.Namespace) -> int:
    from icefs.store.open import open_repository

    spec = storage_from_args(args.storage, args)
    if spec.kind == "memory":
        raise QuietError("memory:// repositories exist only inside a mount", ExitCode.USAGE)
    open_repository(spec, args.mode)
    print(f"repository ready at {spec.display()}")
    return ExitCode.OK


def _refs(args: argparse.Namespace) -> RefBackend:
    if args.repo:
        from icefs.cli.direct import RepoRefs

        return RepoRefs(storage_from_args(args.repo, args), args.default_branch)
    from icefs.cli.mounted import MountRefs

    return MountRefs(args.mount)


def _print_refs(refs: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"name": n, "snapshot_id": s} for n, s in refs.items()], indent=2))
        return
    width = max((len(n) for n in refs), default=0)
    for name, sid in refs.items():
        print(f"{name:<{width}}  {sid}")


def _print(doc: object, text: str, as_json: bool) -> None:
    print(json.dumps(doc, indent=2) if as_json else text)


def ref_command(args: argparse.Namespace) -> int:
    refs = _refs(args)
    kind = args.command
    if args.action == "list":
        _print_refs(refs.branches() if kind == "branch" else refs.tags(), args.json)
    elif args.action == "create":
        create = refs.create_branch if kind == "branch" else refs.create_tag
        sid = create(args.name, args.source)
        doc = {"name": args.name, "snapshot_id": sid}
        _print(doc, f"{kind} {args.name} created at {sid}", args.json)
    elif args.action == "reset":
        old, new = refs.reset(args.name, args.to, args.discard)
        doc = {"name": args.name, "from": old, "to": new}
        text = (
            f"branch {args.name} reset from {old} to {new}"
            f"\n(to undo: icefs branch reset {args.name} --to {old})"
        )
        _print(doc, text, args.json)
    else:
        (refs.delete_branch if kind == "branch" else refs.delete_tag)(args.name)
        _print({"deleted": args.name}, f"{kind} {args.name} deleted", args.json)
    return ExitCode.OK


def log_command(args: argparse.Namespace) -> int:
    from icefs.fs import controltext

    refs = _refs(args)
    if args.ops:
        if args.ref:
            raise QuietError("--ops shows the whole repository: no REF", ExitCode.USAGE)
        entries = refs.operations(args.limit)
        _print(entries, controltext.render_operations(entries).decode().rstrip("\n"), args.json)
        return ExitCode.OK
    history = refs.log(args.ref, args.limit, args.after)
    _print(history, controltext.render_log(history).decode().rstrip("\n"), args.json)
    return ExitCode.OK


def diff_command(args: argparse.Namespace) -> int:
    from icefs.fs import controltext

    refs = list(args.refs)
    start, end = (refs[0] if len(refs) == 2 else None), (refs[-1] if refs else None)
    doc = _refs(args).diff(start, end, args.chunks)
    _print(doc, controltext.render_diff(doc).decode().rstrip("\n"), args.json)
    return ExitCode.OK
