"""Ref and history operations straight on a repository (``--repo STORAGE``).

Failures are `QuietError`s with the documented exit code.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from icefs.cli.exits import ExitCode, QuietError, exit_code
from icefs.errors import IcefsError
from icefs.paths import check_ref_name

if TYPE_CHECKING:
    from icefs.storage import StorageSpec

__all__ = ["RepoRefs"]


class RepoRefs:
    """Ref operations straight on a repository (``--repo STORAGE``)."""

    def __init__(self, spec: StorageSpec, default_branch: str = "main") -> None:
        from icefs.store.admin import RepoAdmin
        from icefs.store.open import open_repository, ref_lock

        if spec.kind == "memory":
            raise QuietError(
                "--repo memory:// would be a new, empty repository that vanishes", ExitCode.USAGE
            )
        self._spec = spec
        self._repository = open_repository(spec, "open")
        self._lock = ref_lock(spec)
        self._admin = RepoAdmin(self._repository, self._lock)
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

    def log(
        self, ref: str | None, limit: int | None = None, after: str | None = None
    ) -> list[dict[str, Any]]:
        from icefs.store.history import snapshot_doc

        what = f"cannot read the history of {ref or self._default!r}"
        sid = self._run(what, self._admin.resolve, after or ref or self._default)
        metas = self._run(what, self._admin.log, sid)[1 if after else 0 :]
        return [snapshot_doc(m) for m in metas[:limit]]

    def diff(self, start: str | None, end: str | None, chunks: bool) -> dict[str, Any]:
        import functools

        import trio

        from icefs.store import history

        what = "cannot diff"
        to = self._run(what, self._admin.resolve, end or self._default)
        since = self._run(what, self._admin.resolve, start) if start else None
        run = functools.partial(history.diff, chunks=chunks)
        result: dict[str, Any] = self._run(
            what, self._with_repo, lambda repo: trio.run(run, repo, since, to)
        )
        return result

    def _with_repo(self, fn: Any) -> Any:
        """Call *fn* with a `Repo` over this repository and a bridge of its own."""
        from icefs.store.bridge import Bridge
        from icefs.store.repo import Repo

        bridge = Bridge()
        repo = Repo(self._repository, bridge, self._spec.display(), self._lock)
        try:
            return fn(repo)
        finally:
            # Icechunk's sessions must go while the interpreter is whole: freed during
            # its shutdown instead, they crashed it now and then (SIGSEGV, 1 run in ~80)
            del repo
            gc.collect()
            bridge.close()

    def operations(self, limit: int | None) -> list[dict[str, Any]]:
        from icefs.store.history import read_operations

        result: list[dict[str, Any]] = self._run(
            "cannot read the operations log", read_operations, self._repository, limit
        )
        return result

    def reset(self, name: str, to: str, discard: bool) -> tuple[str, str]:
        what = f"cannot reset {name!r}"
        branches = self.branches()
        if name not in branches:
            raise QuietError(f"{what}: no such branch", ExitCode.NOT_FOUND)
        sid: str = self._run(what, self._admin.resolve, to)
        self._run(what, self._admin.reset_branch, name, sid, branches[name])
        return branches[name], sid
