"""``mount.fuse.icefs``: the helper mount(8) runs for ``-t fuse.icefs`` and fstab lines.

mount(8) calls ``mount.fuse.icefs SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]``.
SOURCE is the storage URL; when ``config=FILE`` names the storage, SOURCE is
ignored (write e.g. ``icefs``). Options are those `icefs mount -o` takes: FUSE
options, ``config=FILE`` and every setting as ``name=value`` (``refresh=5``,
``journal_interval=0``, ...; secrets only as ``<name>_file=PATH``).
``_netdev``, ``nofail``, ``noauto``, ``auto``, ``user``, ``users``, ``defaults``
and ``x-*`` (systemd's) are accepted and ignored.
It returns once the mount is ready, as mount(8) expects.

Install: ``ln -s $(command -v mount.fuse.icefs) /sbin/mount.fuse.icefs``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from icefs.cli.exits import ExitCode
from icefs.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "translate_options"]


def translate_options(source: str, mountpoint: str, options: str) -> list[str]:
    """Return the ``icefs mount`` arguments for a mount(8) call.

    Every option goes on as ``-o``: `icefs mount -o` takes FUSE options and every
    setting as ``name=value`` (`icefs.settings`), and ignores what mount(8) and
    systemd add for themselves.
    """
    items = [o.strip() for o in options.split(",") if o.strip() and o.strip() != "rw"]
    config = next((i.partition("=")[2] for i in items if i.startswith("config=")), None)
    # With config=FILE naming the storage, SOURCE is only a placeholder such as "icefs"
    # (mount(8) may even have made it an absolute path).
    named = _config_storage(config) if config else None
    argv = ["mount", named or source, mountpoint]
    if items:
        argv += ["-o", ",".join(items)]
    return argv


def _config_storage(path: str) -> str | None:
    from icefs.config import load_config

    try:
        storage = load_config(path).get("storage")
    except UsageError:
        return None  # icefs mount reports the problem with the file
    return storage if isinstance(storage, str) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run as mount(8)'s helper; return the exit code."""
    from icefs.cli.main import main as icefs_main

    args = list(sys.argv[1:] if argv is None else argv)
    positional: list[str] = []
    options = ""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-o" and i + 1 < len(args):
            options = f"{options},{args[i + 1]}" if options else args[i + 1]
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options = f"{options},{arg[2:]}" if options else arg[2:]
        elif arg in ("-n", "-s", "-f", "-v"):
            pass  # no mtab, sloppy, fake, verbose: nothing for icefs to do
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        print("usage: mount.fuse.icefs SOURCE MOUNTPOINT [-o OPTIONS]", file=sys.stderr)
        return ExitCode.USAGE
    return icefs_main(translate_options(positional[0], positional[1], options))


if __name__ == "__main__":
    sys.exit(main())
