"""The daemon: its lifecycle, its start in the background, the mountpoint, the journal.

The command line uses only what is exported here.
"""

from __future__ import annotations

from icefs.daemon.background import Reporter, start_background
from icefs.daemon.lifecycle import MountConfig, run_daemon
from icefs.daemon.mountpoint import check_fuse, check_mountpoint, parse_fuse_options, unmount

__all__ = [
    "MountConfig",
    "Reporter",
    "check_fuse",
    "check_mountpoint",
    "parse_fuse_options",
    "run_daemon",
    "start_background",
    "unmount",
]
