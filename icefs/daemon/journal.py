"""The crash journal: uncommitted sessions saved in the cache directory.

After a store, icefs saves the branch's writable session (Icechunk serializes it:
the change set with references to the chunk objects already written to storage)
into ``<cache-dir>/journal/<repository>/<branch>.session``: at once on `fsync`,
otherwise at most every ``--journal-interval`` seconds. A commit or discard
removes the file. If the daemon dies, the next mount of the same repository
with the same cache directory restores the session: the branch shows the
recovered changes again, to be committed or discarded.

Files are written atomically (temporary file, fsync, rename) with mode 0600 in
0700 directories: a serialized session holds the storage configuration, which
may include credentials. This module stores opaque bytes; `repo` makes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Journal", "JournalEntry"]

log = logging.getLogger(__name__)

_SUFFIX: Final = ".session"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    branch: str
    #: the session's token: its commit carries it (see `repo.TOKEN_KEY`)
    token: str
    data: bytes
    saved_ns: int
    #: when the session's first change was made (its oldest chunk is no older)
    since_ns: int
    #: files closed but not yet stored when it was saved (write-behind): not in *data*
    unstored: tuple[str, ...] = ()


class Journal:
    """The journal directory of one mount (*repository*: what identifies it, shown in
    the directory's REPOSITORY file); *root* "" disables journaling."""

    def __init__(self, root: str, repository: str) -> None:
        self.enabled = bool(root)
        digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
        self.dir = os.path.join(root, "journal", digest) if root else ""
        self._repository = repository

    @classmethod
    def of_repository(cls, root: str, storage: str) -> list[Journal]:
        """The journals under *root* of every mount of the repository *storage* (its
        display form), live or dead."""
        out = []
        base = os.path.join(root, "journal")
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            with contextlib.suppress(OSError):
                with open(os.path.join(base, name, "REPOSITORY"), encoding="utf-8") as f:
                    label = f.read().strip()
                if label.startswith(f"{storage} at "):
                    out.append(cls(root, label))
        return out

    def _path(self, branch: str) -> str:
        # hex: any branch name becomes a safe file name
        return os.path.join(self.dir, branch.encode().hex() + _SUFFIX)

    def save(
        self, branch: str, token: str, data: bytes, since_ns: int, unstored: Sequence[str] = ()
    ) -> None:
        """Replace the saved session of *branch* with *data*, atomically and durably;
        *unstored* names the files closed whose background store had not ended."""
        if not self.enabled:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        label = os.path.join(self.dir, "REPOSITORY")
        if not os.path.exists(label):
            with open(label, "w", encoding="utf-8") as f:
                f.write(self._repository + "\n")
        path = self._path(branch)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            header = json.dumps(
                {
                    "format": 1,
                    "branch": branch,
                    "token": token,
                    "since_ns": since_ns,
                    "unstored": list(unstored),
                }
            ).encode()
            view = memoryview(header + b"\n" + data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.debug("journal: saved branch %s (%d bytes)", branch, len(data))

    def drop(self, branch: str) -> None:
        """Forget the saved session of *branch* (it was committed or discarded)."""
        if self.enabled:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(branch))

    def entries(self) -> list[JournalEntry]:
        """Return every saved session, oldest first (unreadable files are skipped, kept)."""
        if not self.enabled or not os.path.isdir(self.dir):
            return []
        out: list[JournalEntry] = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(_SUFFIX):
                continue
            path = os.path.join(self.dir, name)
            try:
                branch = bytes.fromhex(name[: -len(_SUFFIX)]).decode()
                with open(path, "rb") as f:
                    header = json.loads(f.readline())
                    data = f.read()
                token = str(header["token"])
                saved = os.stat(path).st_mtime_ns
                since = int(header.get("since_ns") or saved)
                unstored = tuple(str(k) for k in header.get("unstored") or ())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("journal: cannot read %s: %s", path, exc)
                continue
            out.append(JournalEntry(branch, token, data, saved, since, unstored))
        return sorted(out, key=lambda e: e.saved_ns)

    def set_aside(self, branch: str, reason: str) -> str:
        """Rename the saved session of *branch* so it is kept but not restored again."""
        path = self._path(branch)
        kept = f"{path}.failed-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, kept)
        log.error(
            "journal: branch %s cannot be recovered (%s); its session is kept in %s",
            branch,
            reason,
            kept,
        )
        return kept
