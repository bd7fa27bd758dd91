"""``icefs demo``: build the sample repository on local disk and mount it."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from icefs.cli.exits import ExitCode
from icefs.errors import RepositoryError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["run_demo"]

TRY_THIS = """\
icefs demo: {repo} is mounted at {mnt}

Try:
  ls {mnt}/branches {mnt}/tags {mnt}/snapshots
  cat {mnt}/branches/main/zarr.json
  ls -l {mnt}/branches/main/temperature/c/0/0
  cat {mnt}/branches/main/.icefs/log
  cat {mnt}/tags/v1.0/.icefs/status
  getfattr -n user.icefs.snapshot_id {mnt}/tags/v1.0
  {python} -c "import xarray as xr; print(xr.open_zarr('{mnt}/tags/v1.0', consolidated=False))"

When done:
  icefs umount {mnt}
"""


def run_demo(directory: str, *, foreground: bool, mount: Callable[[Sequence[str]], int]) -> int:
    """Build (once) the sample repository under *directory* and mount it at *directory*/mnt.

    In the foreground, *mount* runs ``icefs mount`` with the argument list it is given.
    """
    import logging

    from icefs.daemon import check_fuse, check_mountpoint, start_background
    from icefs.store.open import configure_icechunk_logs
    from icefs.store.sample import create_sample, sample_exists

    configure_icechunk_logs(logging.INFO)
    base = os.path.abspath(directory)
    repo_path, mnt = os.path.join(base, "repo"), os.path.join(base, "mnt")
    check_fuse()
    os.makedirs(mnt, exist_ok=True)
    mnt = check_mountpoint(mnt)
    if sample_exists(repo_path):
        print(f"icefs demo: reusing the sample repository at {repo_path}")
    elif os.path.exists(repo_path) and os.listdir(repo_path):
        raise RepositoryError(f"{repo_path} exists and is not a repository")
    else:
        print(f"icefs demo: building the sample repository at {repo_path}")
        create_sample(repo_path, lambda m: print("  " + m))
    if foreground:
        print(TRY_THIS.format(repo=repo_path, mnt=mnt, python=sys.executable))
        return mount(["mount", repo_path, mnt, "--foreground"])
    log_file = os.path.join(base, "icefs.log")
    start_background([repo_path, mnt], log_file)
    print(TRY_THIS.format(repo=repo_path, mnt=mnt, python=sys.executable))
    print(f"(daemon log: {log_file})")
    return ExitCode.OK
