"""Refs as directories: ``mkdir branches/<b>``, ``rmdir`` of branches and tags, and the
``.icefs/branch`` and ``.icefs/tag`` files that make refs at a view's snapshot.

Every refusal is recorded in the mount's status (`RefTable.note_error`) as
well as answered with its errno.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from icefs.errors import IcefsError, InvalidInput, NotPermitted, ReadOnly
from icefs.fs.branchstatus import kept_because
from icefs.paths import check_ref_name, name_to_ref, ref_to_name

if TYPE_CHECKING:
    from icefs.fs.branches import Branches
    from icefs.fs.inodes import InodeTable
    from icefs.fs.listings import Listings
    from icefs.fs.namespace import Namespace
    from icefs.fs.refs import RefTable
    from icefs.fs.values import MountOptions, Node

__all__ = ["RefDirectories"]

log = logging.getLogger(__name__)


class RefDirectories:
    """Makes and deletes refs through directory operations and ref control files."""

    def __init__(
        self,
        refs: RefTable,
        branches: Branches,
        namespace: Namespace,
        listings: Listings,
        inodes: InodeTable,
        options: MountOptions,
    ) -> None:
        self._refs = refs
        self._branches = branches
        self._namespace = namespace
        self._listings = listings
        self._inodes = inodes
        self._options = options

    def _failed(self, exc: IcefsError) -> IcefsError:
        """Record a failed ref operation in the mount's status and return *exc* to raise."""
        self._refs.note_error(str(exc))
        return exc

    async def mkdir_branch(self, name: str) -> None:
        """``mkdir branches/<name>``: a new branch at the default branch's tip."""
        if self._options.read_only:
            raise ReadOnly("the mount is read-only: no new branches")
        ref = name_to_ref(name)
        default = self._options.default_branch
        try:
            check_ref_name(ref)
            if ref_to_name(ref) != name:
                raise InvalidInput(f"{name!r} is not how icefs shows a ref name")
            sid = await self._refs.tip(default)
            await self._refs.create_branch(ref, sid)
        except IcefsError as exc:
            raise self._failed(exc) from None
        log.info("branch %s created at %s (the tip of %s)", ref, sid, default)

    async def rmdir(self, ref_list: Node, name: str) -> None:
        """``rmdir branches/<b>`` or ``rmdir tags/<t>``: delete the ref."""
        root = await self._namespace.child(ref_list, name)
        assert root.view is not None
        view = root.view
        if view.kind == "snapshot":
            raise NotPermitted("snapshots cannot be removed")
        if self._options.read_only:
            raise ReadOnly("the mount is read-only: refs cannot be deleted")
        if view.kind == "tag":
            try:
                await self._refs.delete_tag(view.ref)
            except IcefsError as exc:
                raise self._failed(exc) from None
            log.info("tag %s deleted", view.ref)
            return
        state = self._branches.get(view.ref)
        default = view.ref == self._options.default_branch
        empty = not await self._listings.entries(root)
        if empty and (default or (state and state.dirty)):
            # The tail of `rm -r` or zarr's mode="w" on a branch root that was just
            # emptied: the directory is empty, the branch stays.
            return
        if default:
            raise self._failed(NotPermitted(f"{view.ref} is the default branch"))
        if state is not None and (state.dirty or state.local.files):
            raise self._failed(NotPermitted(f"branch {view.ref}: {kept_because(state)}"))
        try:
            await self._refs.delete_branch(view.ref)
        except IcefsError as exc:
            raise self._failed(exc) from None
        self._branches.forget(view.ref)
        self._inodes.forget_path(root.path)
        log.info("branch %s deleted", view.ref)

    async def make_ref(self, node: Node, data: bytes) -> None:
        """Create the branch or tag (``node.ctrl``) named by *data* at *node*'s view."""
        assert node.view is not None
        try:
            name = check_ref_name(data.decode("utf-8").strip("\n"))
        except UnicodeDecodeError:
            raise self._failed(InvalidInput("a ref name must be UTF-8 text")) from None
        except InvalidInput as exc:
            raise self._failed(exc) from None
        # A branch being written stands on its session's base: its last commit.
        sid = node.view.snapshot_id
        try:
            if node.ctrl == "branch":
                await self._refs.create_branch(name, sid)
            else:
                await self._refs.create_tag(name, sid)
        except IcefsError as exc:
            raise self._failed(exc) from None
        log.info(
            "%s %s created at %s (from %s %s)", node.ctrl, name, sid, node.view.kind, node.view.ref
        )
