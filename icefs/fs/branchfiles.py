"""What exists of a branch only in this mount, changed only through named operations.

`BranchFiles` holds, by key inside the branch: files being written and scratch
files (`OverlayFile`), empty directories made by ``mkdir``, attributes set by
chmod, chown and utime (`Stamp`), and files whose store runs in the background.
Everyone else reads it through read-only mappings; every change is one of the
operations below, so what may change it, and how, is written in one place.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from icefs.fs.files import Stamp

if TYPE_CHECKING:
    from collections.abc import Mapping

    from icefs.fs.files import OverlayFile

__all__ = ["BranchFiles"]


class BranchFiles:
    """The files, empty directories, stamps and background stores of one branch."""

    __slots__ = ("_dirs", "_files", "_stamps", "_uploading")

    def __init__(self) -> None:
        self._files: dict[str, OverlayFile] = {}
        self._dirs: dict[str, int] = {}
        self._stamps: dict[str, Stamp] = {}
        self._uploading: dict[str, OverlayFile] = {}

    @property
    def files(self) -> Mapping[str, OverlayFile]:
        """Files that live in the mount (being written, or scratch), by key."""
        return self._files

    @property
    def dirs(self) -> Mapping[str, int]:
        """Empty directories made by ``mkdir``: key -> when made (ns)."""
        return self._dirs

    @property
    def uploading(self) -> Mapping[str, OverlayFile]:
        """Files closed whose store runs in the background (write-behind), by key."""
        return self._uploading

    def stamp_of(self, key: str) -> Stamp | None:
        """Attributes set on *key* in this mount, if any."""
        return self._stamps.get(key)

    # -- files ---------------------------------------------------------------------------

    def keep(self, key: str, overlay: OverlayFile) -> OverlayFile | None:
        """Make *overlay* the file at *key*; return the one it replaces."""
        old = self._files.get(key)
        self._files[key] = overlay
        return old if old is not overlay else None

    def drop(self, key: str, overlay: OverlayFile | None = None) -> OverlayFile | None:
        """Forget the file at *key* (only if it is *overlay*, when given); return it."""
        held = self._files.get(key)
        if held is None or (overlay is not None and held is not overlay):
            return None
        del self._files[key]
        return held

    def drop_written(self) -> list[OverlayFile]:
        """Forget every file but scratch files (a discard); return them."""
        keys = [k for k, f in self._files.items() if not f.scratch]
        return [self._files.pop(k) for k in keys]

    def drop_all(self) -> list[OverlayFile]:
        """Forget every file (unmount); return them."""
        files = list(self._files.values())
        self._files.clear()
        return files

    # -- directories ---------------------------------------------------------------------

    def make_dir(self, key: str, now: int | None = None) -> None:
        """Keep *key* as an empty directory of the mount, made at *now*."""
        self._dirs[key] = now or time.time_ns()

    def drop_dir(self, key: str) -> None:
        self._dirs.pop(key, None)

    def drop_dirs_above(self, key: str) -> None:
        """*key* was stored: the directories above it exist in the session now."""
        path = key
        while path:
            path = path.rpartition("/")[0]
            self._dirs.pop(path, None)

    def move_dir(self, source: str, target: str) -> None:
        """Rename the empty directory *source* to *target* (replacing an empty one)."""
        self._dirs.pop(target, None)
        self._dirs[target] = self._dirs.pop(source)

    def move_below(self, source: str, target: str) -> None:
        """The node *source* moved to *target*: what lives only in the mount below it
        (scratch files, empty directories) moves along, and *target* is no longer an
        empty directory."""
        self._dirs.pop(target, None)
        _move_prefix(self._files, source, target)
        _move_prefix(self._dirs, source, target)

    # -- attributes ----------------------------------------------------------------------

    def restamp(
        self,
        key: str,
        *,
        mode: int | None,
        uid: int | None,
        gid: int | None,
        atime_ns: int | None,
        mtime_ns: int | None,
    ) -> None:
        """chmod, chown and utime of *key* (None: left as it is); its ctime is now."""
        stamp = self._stamp(key)
        if mode is not None:
            stamp.mode = mode & 0o7777
        if uid is not None:
            stamp.uid = uid
        if gid is not None:
            stamp.gid = gid
        if atime_ns is not None:
            stamp.atime_ns = atime_ns
        if mtime_ns is not None:
            stamp.mtime_ns = mtime_ns
        stamp.ctime_ns = time.time_ns()

    def give(self, key: str, perm: int, uid: int, gid: int) -> None:
        """A new *key* belongs to *uid*:*gid* with the permissions *perm*."""
        stamp = self._stamp(key)
        stamp.mode, stamp.uid, stamp.gid = perm, uid, gid

    def written(self, key: str) -> None:
        """*key* changed: a time set by utime before no longer holds."""
        stamp = self._stamps.get(key)
        if stamp is not None:
            stamp.atime_ns = stamp.mtime_ns = 0

    def unstamp(self, key: str) -> None:
        self._stamps.pop(key, None)

    def move_stamps(self, source: str, target: str) -> None:
        """Carry what was set on *source* and below it to *target*; drop what was set on
        the names it replaces (*target* itself always: a replaced file's mode does not
        pass to what takes its name)."""
        self._stamps.pop(target, None)
        for key in [k for k in self._stamps if k == source or k.startswith(f"{source}/")]:
            new = target + key[len(source) :]
            stamp = self._stamps.pop(key)
            self._stamps[new] = stamp

    def _stamp(self, key: str) -> Stamp:
        stamp = self._stamps.get(key)
        if stamp is None:
            stamp = self._stamps[key] = Stamp()
        return stamp

    # -- background stores ---------------------------------------------------------------

    def upload_started(self, key: str, overlay: OverlayFile) -> None:
        self._uploading[key] = overlay

    def upload_ended(self, key: str, overlay: OverlayFile) -> None:
        if self._uploading.get(key) is overlay:
            del self._uploading[key]


def _move_prefix[V](table: dict[str, V], source: str, target: str) -> None:
    """Rename every key of *table* below *source* to the same place below *target*."""
    prefix = f"{source}/"
    for key in [k for k in table if k.startswith(prefix)]:
        table[target + key[len(source) :]] = table.pop(key)
