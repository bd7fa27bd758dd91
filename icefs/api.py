"""The Python API: mount a repository from a notebook or another project's tests.

::

    import icefs

    with icefs.mount("./repo", "/tmp/ice", refresh=0.5) as m:
        xr.open_zarr(m.tag("v1.0"), consolidated=False)
        ds.to_zarr(m.branch("main") / "new", zarr_format=3)
        m.commit("add new")
    # unmounted here; uncommitted changes were committed (on_unmount="commit")

`mount` takes every setting of ``icefs mount`` by name (docs/configuration.md),
secrets included: they reach the daemon through its environment, never its
command line.  It returns once the mount answers, and raises an
`icefs.errors.SetupError` (with the message ``icefs mount`` prints) if it cannot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icefs.cli.client import write_control
from icefs.errors import UsageError
from icefs.paths import CONTROL_DIR, ref_to_name
from icefs.settings import SECRET_NAMES, SETTINGS, SettingError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Mount", "mount"]


class Mount:
    """A mounted repository; a context manager that unmounts on exit."""

    def __init__(self, mountpoint: str | os.PathLike[str]) -> None:
        self.mountpoint = Path(mountpoint)
        self.mounted = True

    def branch(self, name: str = "main") -> Path:
        """The directory of the branch *name* (read-write)."""
        return self.mountpoint / "branches" / _name(name)

    def tag(self, name: str) -> Path:
        """The directory of the tag *name* (read-only)."""
        return self.mountpoint / "tags" / _name(name)

    def snapshot(self, snapshot_id: str) -> Path:
        """The directory of the snapshot *snapshot_id* (read-only)."""
        return self.mountpoint / "snapshots" / snapshot_id

    def status(self, branch: str = "main") -> dict[str, Any]:
        """The status document of the branch *branch* (`.icefs/status`)."""
        doc: dict[str, Any] = json.loads((self.branch(branch) / CONTROL_DIR / "status").read_text())
        return doc

    def commit(self, message: str, branch: str = "main") -> str | None:
        """Commit *branch* with *message*; return the new snapshot id, None if nothing changed.

        Raises `OSError` as the control file answers: EBUSY for a conflict that
        could not be rebased (the changes stay), EINVAL for an empty message.
        """
        before = self.status(branch).get("last_commit")
        write_control(self.branch(branch) / CONTROL_DIR / "commit", message)
        after = self.status(branch).get("last_commit")
        return str(after["snapshot_id"]) if after and after != before else None

    def discard(self, branch: str = "main") -> None:
        """Drop the uncommitted changes of *branch*."""
        write_control(self.branch(branch) / CONTROL_DIR / "discard", "discard\n")

    def unmount(self, timeout: float = 60.0) -> list[str]:
        """Unmount (committing per ``on_unmount``) and wait for the daemon to exit.

        Returns warnings about what the unmount dropped (scratch files, pending chunks).
        """
        from icefs.daemon import unmount

        if not self.mounted:
            return []
        _, warnings = unmount(str(self.mountpoint), timeout=timeout)
        self.mounted = False
        return warnings

    def __enter__(self) -> Mount:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"<icefs.Mount {self.mountpoint} {'mounted' if self.mounted else 'unmounted'}>"


def _name(ref: str) -> str:
    name = ref_to_name(ref)
    if name is None:
        raise ValueError(f"{ref!r} cannot be shown as a directory name")
    return name


def mount(
    storage: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    **settings: Any,
) -> Mount:
    """Mount the repository at *storage* on *mountpoint*; return once it answers.

    *settings* are the settings of ``icefs mount`` by name (``read_only=True``,
    ``refresh=0.5``, ``on_unmount="discard"``, ``region="eu-west-1"``,
    ``options=["allow_other"]``, ...).  Use the result as a context manager to
    unmount when done.  Raises `UsageError` for an unknown setting or a bad value,
    and the other `SetupError`s as ``icefs mount`` would fail.
    """
    from icefs.cli.mount import launch, resolve

    options = list(settings.pop("options", []))
    given: dict[str, Any] = {"storage": os.fspath(storage), "mountpoint": os.fspath(mountpoint)}
    secrets: dict[str, Any] = {}
    for name, value in settings.items():
        setting = SETTINGS.get(name)
        if setting is None or name in ("storage", "mountpoint", "foreground", "ready_fd"):
            raise UsageError(f"icefs.mount: no setting {name!r}")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        try:
            parsed = setting.parse(value)
        except SettingError as exc:
            raise UsageError(f"icefs.mount: {exc}") from None
        # secrets travel like a config file's (never warned as shown in ps: they are not)
        (secrets if name in SECRET_NAMES else given)[name] = parsed
    values, cli, config = resolve(given, options)
    config.update(secrets)
    return Mount(launch(values, cli, config))
