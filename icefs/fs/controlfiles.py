"""The control files at work: what reading them says, and what writing them does.

Reading a control file renders its text at open (`Text`): the mount's
version, pid, stats, status and operations log, a view's snapshot id, log,
diff and status.  Writing one (`Command`) runs its command when the bytes
arrive: ``refresh`` re-reads the refs, ``commit`` commits the branch with the
written message (and metadata, `icefs.fs.commitinfo`), ``discard`` drops its
uncommitted changes, ``reset`` moves the branch, ``branch`` and ``tag`` make
refs.  A commit file closed with nothing written commits nothing, and says so
in status.  A query file opened for writing (`Query`) answers the JSON request
written to it with a JSON document read back from the same descriptor.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Final

from icefs import __version__
from icefs.errors import Busy, IcefsError, InvalidInput, NotFound, PermissionDenied, ReadOnly
from icefs.fs import control
from icefs.fs.branchstatus import kept_because
from icefs.fs.branchstatus import status as branch_status
from icefs.fs.commitinfo import parse_request
from icefs.fs.handles import Command, Query, Text
from icefs.fs.values import NodeKind, OpenReply
from icefs.store import history
from icefs.store.zarr2tree import left_out

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.handles import HandleTable
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.namespace import Namespace
    from icefs.fs.refdirs import RefDirectories
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.uploads import Uploader
    from icefs.fs.values import Invalidator, MountOptions, Node, View
    from icefs.store import Repo
    from icefs.store.prefetch import Prefetcher

__all__ = ["ControlFiles"]

log = logging.getLogger(__name__)

#: The largest JSON request a query or reset file takes.
MAX_REQUEST: Final = 64 << 10
#: Keys of a reset's old and new snapshots whose kernel cache entries are dropped, at most.
RESET_FORGET_LIMIT: Final = 10_000


class ControlFiles:
    """Opens, renders and runs the control files of the root and of each view."""

    def __init__(
        self,
        repo: Repo,
        refs: RefTable,
        branches: Branches,
        refdirs: RefDirectories,
        handles: HandleTable,
        inodes: InodeTable,
        stats: Stats,
        prefetcher: Prefetcher,
        options: MountOptions,
        kernel: Invalidator,
        uploader: Uploader,
        namespace: Namespace,
    ) -> None:
        self._uploader = uploader
        self._namespace = namespace
        self._repo = repo
        self._refs = refs
        self._branches = branches
        self._refdirs = refdirs
        self._handles = handles
        self._inodes = inodes
        self._stats = stats
        self._prefetcher = prefetcher
        self._options = options
        self._kernel = kernel

    def check_writable(self, node: Node) -> None:
        """Refuse (EACCES, EROFS) writing the control file *node*."""
        is_root_file = node.kind is NodeKind.ROOT_CTRL_FILE
        if node.ctrl not in control.writable_files(is_root_file):
            raise PermissionDenied(f"{'/'.join(node.path)} is read-only")
        if node.kind is NodeKind.REF_CTRL_FILE:
            if node.ctrl in control.BRANCH_COMMANDS:
                self._branches.writable(node.view)  # commit, discard: writable branches only
            elif self._options.read_only:
                raise ReadOnly("the mount is read-only: no new branches or tags")

    async def open(self, node: Node, ino: int, writing: bool, uid: int | None = None) -> OpenReply:
        """Open the control file *node*: a command or query to write, or its text to read.

        *uid*: who opens it (a commit records them).
        """
        if writing:
            self.check_writable(node)
            handle: Command | Query = (
                Query(node, ino) if node.ctrl in control.QUERY_FILES else Command(node, ino, uid)
            )
            return OpenReply(self._handles.add(handle), direct_io=True)
        text = Text(node, ino, await self._render(node))
        return OpenReply(self._handles.add(text), direct_io=True)

    async def write(self, handle: Command, data: bytes) -> int:
        """Run the command of *handle* with the written *data*."""
        node = handle.node
        handle.wrote = True
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl == "refresh":
            self._refs.wanted()
            await self._refs.refresh()
        elif node.ctrl in control.REF_COMMANDS:
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

    async def ask(self, handle: Query, data: bytes) -> int:
        """Answer the JSON request *data* written to the query file of *handle*.

        A refused request is also the root status's `last_error` (for ``icefs``'s message).
        """
        try:
            return await self._ask(handle, data)
        except IcefsError as exc:
            self._refs.note_error(f"{'/'.join(handle.node.path)}: {exc}")
            raise

    async def _ask(self, handle: Query, data: bytes) -> int:
        request = _request(data)
        node = handle.node
        limit = request.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidInput('"limit" must be a positive integer')
        answer: object
        if node.ctrl == "ops":
            answer = await history.operations(self._repo, limit)
        elif node.ctrl == "log":
            answer = await self._log(node, request, limit)
        else:
            answer = await self._diff(node, request)
        handle.answer = (json.dumps(answer, indent=2, sort_keys=True) + "\n").encode()
        return len(data)

    async def _log(
        self, node: Node, request: dict[str, Any], limit: int | None
    ) -> list[dict[str, Any]]:
        """The page of the history *request* asks for: at most *limit* snapshots, from the
        view's snapshot or from the one after ``"after"`` (the last of the page before)."""
        assert node.view is not None
        after = request.get("after")
        if after is not None and not isinstance(after, str):
            raise InvalidInput('"after" is a snapshot id or a ref name')
        start = await self._refs.resolve(after) if after else node.view.snapshot_id
        skip = 1 if after else 0
        metas = await self._repo.ancestry(start, limit=None if limit is None else limit + skip)
        return [history.snapshot_doc(m) for m in metas[skip:]]

    async def _diff(self, node: Node, request: dict[str, Any]) -> dict[str, Any]:
        assert node.view is not None
        names = {k: request.get(k) for k in ("from", "to")}
        if any(v is not None and not isinstance(v, str) for v in names.values()):
            raise InvalidInput('"from" and "to" are ref names or snapshot ids')
        to = await self._refs.resolve(names["to"]) if names["to"] else node.view.snapshot_id
        start = await self._refs.resolve(names["from"]) if names["from"] else None
        return await history.diff(self._repo, start, to, chunks=bool(request.get("chunks")))

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
            request = _request(data) if data.lstrip().startswith(b"{") else {"to": data}
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
            keys.add(f"{base}/zarr.json".lstrip("/"))
            for row in node.get("chunk_coords", ()):
                keys.add("/".join([base, "c", *map(str, row)]).lstrip("/"))
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

    # -- what reading says -------------------------------------------------------------------

    async def _render(self, node: Node) -> bytes:
        name = node.ctrl
        if node.kind is NodeKind.ROOT_CTRL_FILE:
            if name == "version":
                return f"{__version__}\n".encode()
            if name == "pid":
                return f"{os.getpid()}\n".encode()
            if name == "stats":
                return control.render_json(self._stats_doc())
            if name == "refresh":
                return f"{self._refs.interval:g}\n".encode()
            if name == "status":
                return control.render_json(self.mount_status())
            if name == "ops":
                return control.render_operations(await history.operations(self._repo))
        view = node.view
        assert view is not None
        if name == "snapshot_id":
            return f"{view.snapshot_id}\n".encode()
        if name == "log":  # one page: a history of 100k snapshots is not read at once
            metas = await self._repo.ancestry(view.snapshot_id, limit=control.LOG_PAGE + 1)
            page = control.render_log([history.snapshot_doc(m) for m in metas[: control.LOG_PAGE]])
            if len(metas) > control.LOG_PAGE:
                page += control.more_log(metas[control.LOG_PAGE - 1].id)
            return page
        if name == "diff":
            return control.render_diff(await history.diff(self._repo, None, view.snapshot_id))
        if name == "status":
            return control.render_json(await self.view_status(view))
        if name in control.BRANCH_COMMANDS | control.REF_COMMANDS:
            return b""
        raise NotFound(name)

    def _stats_doc(self) -> dict[str, object]:
        return self.current_stats().as_json()

    def current_stats(self) -> Stats:
        """The mount's `Stats`, with what its collaborators count copied in."""
        stats, ahead = self._stats, self._prefetcher
        states = list(self._branches.states.values())
        stats.uncommitted = {
            st.branch: (st.uncommitted_bytes, len(st.changed_keys | st.files.keys()))
            for st in states
            if st.dirty
        }
        stats.journal_saves = sum(st.journal_saves for st in states)
        stats.commit_rebases = self._repo.events["rebases"]
        stats.commit_retries = self._repo.events["commit_retries"]
        stats.prefetch_misses = ahead.misses
        stats.pending_bytes = sum(
            f.spool.size
            for st in self._branches.states.values()
            for f in st.files.values()
            if not f.scratch
        )
        stats.prefetch_hits = ahead.hits
        stats.prefetch_at_open = ahead.at_open
        stats.prefetch_unused = ahead.unused
        stats.prefetch_joined = ahead.joined
        stats.prefetch_held_bytes = ahead.held_bytes
        stats.uploads_in_flight = sum(len(st.uploading) for st in self._branches.states.values())
        stats.uploads_stored = self._uploader.stored
        stats.uploads_failed = self._uploader.failed
        stats.prefetch_late = ahead.late
        stats.prefetch_window = ahead.widest
        stats.prefetch_fetch_ms = 1000 * ahead.fetch_seconds
        return stats

    def mount_status(self) -> dict[str, object]:
        """The mount-wide status document."""
        refs = self._refs
        return {
            "version": __version__,
            "pid": os.getpid(),
            "storage": self._options.storage,
            "mountpoint": self._options.mountpoint,
            "read_only": self._options.read_only,
            "refresh_seconds": refs.interval,
            "default_branch": self._options.default_branch,
            "branches": len(refs.branches),
            "tags": len(refs.tags),
            "last_refresh": (
                control.render_time(int(refs.last_refresh * 1e9)) if refs.last_refresh else None
            ),
            "last_error": refs.last_error,
            "last_error_at": refs.last_error_at,
            # what an unmount now would drop, by branch: scratch files, pending chunks
            "dropped_at_unmount": self._branches.leftovers(),
            # by branch: when its uncommitted changes began (`icefs gc` spares them)
            "uncommitted_since": self._branches.uncommitted_since(),
            "virtual_containers": list(self._options.virtual_containers),
            # how Icechunk's calls reach trio (see `Bridge.run`)
            "icechunk_calls": "direct" if self._repo.bridge.direct else "loop thread",
        }

    async def view_status(self, view: View) -> dict[str, object]:
        """The status document of one ref view."""
        doc: dict[str, object] = {
            "ref": view.ref,
            "kind": view.kind,
            "snapshot_id": view.snapshot_id,
            "read_only": view.read_only,
            "has_uncommitted_changes": False,
            "changed_nodes": 0,
            "changed_chunks": 0,
            "changed_paths": [],
            "scratch_files": [],
            "files_being_written": [],
            "empty_directories": [],
            "last_commit": None,
            "last_error": None,
            "last_error_at": None,
            "last_error_path": None,
            "conflicts": [],
        }
        state = self._branches.of_view(view)
        if state is not None:
            doc.update(await branch_status(state))
        if view.kind == "branch":
            doc["tip_snapshot_id"] = self._refs.branches.get(view.ref)
        if state is not None and state.committing:  # it holds the session: answer now
            doc["zarr2_left_out"] = None
            return doc
        tree = await self._namespace.tree_for(view)
        doc["zarr2_left_out"] = await left_out(tree, self._namespace.translations)
        return doc


def _request(data: bytes) -> dict[str, Any]:
    """The JSON object *data* holds (an empty write asks the default question)."""
    if len(data) > MAX_REQUEST:
        raise InvalidInput(f"request larger than {MAX_REQUEST} bytes")
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidInput(f"not a JSON request: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("a request is a JSON object")
    return doc
