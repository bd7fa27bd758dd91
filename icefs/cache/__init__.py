"""A persistent read cache of immutable repository data, on local disk, shared by daemons.

`ReadCache` (used by `icefs.store`) looks entries up and fills them; `EntryStore` holds
them in a directory that any number of daemons and ``icefs cache`` use at once.
"""

from icefs.cache._entries import SHARDS, Damaged, EntryStore, Scan, default_size
from icefs.cache._reads import CacheCounters, ReadCache

__all__ = [
    "SHARDS",
    "CacheCounters",
    "Damaged",
    "EntryStore",
    "ReadCache",
    "Scan",
    "default_size",
]
