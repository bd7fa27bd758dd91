"""What writing a command file does, when its bytes arrive.

``refresh`` re-reads the refs; ``commit`` commits the branch with the written
message (and metadata, `icefs.fs.commitinfo`); ``discard`` drops its uncommitted
changes; ``reset`` moves the branch; ``branch`` and ``tag`` make refs.  After a
discard or a reset the kernel is told to forget what it caches of the branch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from icefs.errors import Busy, IcefsError, InvalidInput, ReadOnly
from icefs.fs import controltext
from icefs.fs.branchstatus import kept_because
from icefs.fs.commitinfo import parse_request
from icefs.fs.control.queries import json_request
from icefs.fs.values import NodeKind
from icefs.paths import METADATA_NAME, join_key
from icefs.store import history
from icefs.store.layout import chunk_key

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.handles import Command
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.refdirs import RefDirectories
    from icefs.fs.refs import RefTable
    from icefs.fs.values import Invalidator, Node
    from icefs.store import Repo

__all__ = ["RESET_FORGET_LIMIT", "Commands"]

log = logging.getLogger(__name__)

#: Keys of a reset's old and new snapshots whose kernel cache entries are dropped, at most.
RESET_FORGET_LIMIT: Final = 10_000


class Commands:
    """Runs the commands written to control files."""

    def __init__(
        self,
        repo: Repo,
        refs: RefTable,
        branches: Branches,
        refdirs: RefDirectories,
        inodes: InodeTable,
        kernel: Invalidator,
    ) -> None:
        self._repo = repo
        self._refs = refs
        self._branches = branches
        self._refdirs = refdirs
        self._inodes = inodes
        self._kernel = kernel

    async def write(self, handle: Command, data: bytes) -> int:
        """Run the command of *handle* with the written *data*."""
        node = handle.node
        handle.wrote = True
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl == "refresh":
            self._refs.wanted()
            await self._refs.refresh()
        elif node.ctrl in controltext.REF_COMMANDS:
            await self._refdirs.make_ref(node, data)
        elif node.ctrl == "discard":
            await self._discard(node)
        elif node.ctrl == "commit":
            await self._commit(node, data, handle.uid)
        elif node.ctrl == "reset":
            await self._reset(node, data)
        else:
            raise ReadOnly(f"{'/'.join(node.path)} is read-only")
        return len(data)

    def released(self, handle: Command) -> None:
        """The last descriptor of *handle* closed.  Never raises."""
        if not handle.wrote and handle.node.ctrl == "commit" and handle.node.view is not None:
            # no errno can reach anyone now: status and log say it
            self._branches.state(handle.node.view.ref).error(
                "nothing was written to .icefs/commit before it was closed: nothing "
                "committed (write a message)"
            )

    async def _commit(self, node: Node, data: bytes, uid: int | None) -> None:
        state = self._branches.writable(node.view)
        try:
            request = parse_request(data)
        except InvalidInput as exc:
            state.error(f"commit refused: {exc}")
            raise
        await self._branches.commit(state, request.message, request.metadata, uid)

    async def _reset(self, node: Node, data: bytes) -> None:
        """Move the branch of *node* to the ref or snapshot written (``{"to", "discard"}``)."""
        assert node.view is not None
        branch = node.view.ref
        state = self._branches.writable(node.view)
        try:
            request = json_request(data) if data.lstrip().startswith(b"{") else {"to": data}
            target = request.get("to")
            if isinstance(target, bytes):
                target = target.decode("utf-8").strip()
            if not isinstance(target, str) or not target:
                raise InvalidInput("write the branch, tag or snapshot id to reset to")
            held = kept_because(state, scratch=False)
            if held != "nothing" and not request.get("discard"):
                raise Busy(
                    f"branch {branch} is not reset: {held}; or reset with discard "
                    "(icefs branch reset --discard)"
                )
            sid = await self._refs.resolve(target)
            old = await self._refs.tip(branch)
            await self._repo.reset_branch(branch, sid, old)
        except UnicodeDecodeError:
            state.error("reset refused: not UTF-8 text")
            raise InvalidInput("reset target is not UTF-8") from None
        except IcefsError as exc:
            state.error(f"reset refused: {exc}")
            raise
        changed = set(state.changed_keys)
        await state.discard()
        self._refs.committed(branch, sid)
        state.note_reset(old, sid)
        log.info("branch %s: reset from %s to %s", branch, old, sid)
        await self._forget_view(node.path[:2], changed | await self._keys_between(old, sid))

    async def _keys_between(self, old: str, new: str) -> set[str]:
        """The keys that differ between snapshots *old* and *new* (capped; empty if unrelated)."""
        try:
            doc = await history.diff(self._repo, old, new, chunks=True)
        except IcefsError as exc:  # unrelated snapshots, or storage trouble: none forgotten
            log.info("no keys to forget between %s and %s: %s", old, new, exc)
            return set()
        keys: set[str] = set()
        for node in doc["nodes"]:
            base = node["path"].strip("/")
            keys.add(join_key(base, METADATA_NAME))
            for row in node.get("chunk_coords", ()):
                keys.add(chunk_key(base, tuple(row)))
                if len(keys) >= RESET_FORGET_LIMIT:
                    return keys
        return keys

    async def _discard(self, node: Node) -> None:
        state = self._branches.writable(node.view)
        changed = set(state.changed_keys)
        await state.discard()
        await self._refs.follow(state.branch)
        await self._forget_view(node.path[:2], changed)

    async def _forget_view(self, prefix: Path, keys: set[str]) -> None:
        """Make the kernel forget what it caches of the ref directory *prefix*, whose
        content just changed under it (a discard): attributes, pages and names, and
        the cached absence of each of *keys*; return when it has, so that the next
        call sees the new content."""
        names: dict[Path, int] = dict(self._inodes.below(prefix))
        for key in keys:
            parts = key.split("/")
            for depth in range(1, len(parts) + 1):  # a directory may be cached as absent too
                names.setdefault((*prefix, *parts[:depth]), 0)
        for ino in names.values():
            if ino:
                self._kernel.inode(ino)
        await self._kernel.entries(
            [(self._inodes.ino(p[:-1]), p[-1]) for p in names if self._inodes.known(p[:-1])]
        )
