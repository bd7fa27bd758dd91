"""The control files as the core sees them: open, read, write, ask, release.

Reading a control file renders its text at open (`Text`): the mount's version,
pid, stats, status and operations log, a view's snapshot id, log, diff and
status.  Writing one (`Command`) hands the bytes to `Commands`; a query file
opened for writing (`Query`) to `Queries`.  A commit file closed with nothing
written commits nothing, and says so in status.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from icefs import __version__
from icefs.errors import NotFound, PermissionDenied, ReadOnly
from icefs.fs import controltext
from icefs.fs.handles import Command, Query, Text
from icefs.fs.values import NodeKind, OpenReply

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.control.commands import Commands
    from icefs.fs.control.queries import Queries
    from icefs.fs.control.status import StatusReports
    from icefs.fs.handles import HandleTable
    from icefs.fs.refs import RefTable
    from icefs.fs.values import Node

__all__ = ["ControlFiles"]


class ControlFiles:
    """Opens the control files of the root and of each view, and routes what is written."""

    def __init__(
        self,
        commands: Commands,
        queries: Queries,
        status: StatusReports,
        handles: HandleTable,
        branches: Branches,
        refs: RefTable,
        read_only: bool,
    ) -> None:
        self.commands = commands
        self.queries = queries
        self.status = status
        self._handles = handles
        self._branches = branches
        self._refs = refs
        self._read_only = read_only

    def check_writable(self, node: Node) -> None:
        """Refuse (EACCES, EROFS) writing the control file *node*."""
        is_root_file = node.kind is NodeKind.ROOT_CTRL_FILE
        if node.ctrl not in controltext.writable_files(is_root_file):
            raise PermissionDenied(f"{'/'.join(node.path)} is read-only")
        if node.kind is NodeKind.REF_CTRL_FILE:
            if node.ctrl in controltext.BRANCH_COMMANDS:
                self._branches.writable(node.view)  # commit, discard: writable branches only
            elif self._read_only:
                raise ReadOnly("the mount is read-only: no new branches or tags")

    async def open(self, node: Node, ino: int, writing: bool, uid: int | None = None) -> OpenReply:
        """Open the control file *node*: a command or query to write, or its text to read.

        *uid*: who opens it (a commit records them).
        """
        if writing:
            self.check_writable(node)
            handle: Command | Query = (
                Query(node, ino)
                if node.ctrl in controltext.QUERY_FILES
                else Command(node, ino, uid)
            )
            return OpenReply(self._handles.add(handle), direct_io=True)
        text = Text(node, ino, await self._text(node))
        return OpenReply(self._handles.add(text), direct_io=True)

    async def write(self, handle: Command, data: bytes) -> int:
        """Run the command of *handle* with the written *data*."""
        return await self.commands.write(handle, data)

    async def ask(self, handle: Query, data: bytes) -> int:
        """Answer the JSON request *data* written to the query file of *handle*."""
        return await self.queries.ask(handle, data)

    def released(self, handle: Command) -> None:
        """The last descriptor of *handle* closed.  Never raises."""
        self.commands.released(handle)

    async def _text(self, node: Node) -> bytes:
        name = node.ctrl
        if node.kind is NodeKind.ROOT_CTRL_FILE:
            if name == "version":
                return f"{__version__}\n".encode()
            if name == "pid":
                return f"{os.getpid()}\n".encode()
            if name == "stats":
                return controltext.render_json(self.status.current_stats().as_json())
            if name == "refresh":
                return f"{self._refs.interval:g}\n".encode()
            if name == "status":
                return controltext.render_json(self.status.mount_status())
            if name == "ops":
                return await self.queries.operations_text()
        view = node.view
        assert view is not None
        if name == "snapshot_id":
            return f"{view.snapshot_id}\n".encode()
        if name == "log":
            return await self.queries.log_text(view)
        if name == "diff":
            return await self.queries.diff_text(view)
        if name == "status":
            return controltext.render_json(await self.status.view_status(view))
        if name in controltext.BRANCH_COMMANDS | controltext.REF_COMMANDS:
            return b""
        raise NotFound(name)
