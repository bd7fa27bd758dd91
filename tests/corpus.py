"""The Icechunk corpus: repositories written by Icechunk's own test suite, read directly.

`CORPUS` holds three repositories (``../shared/corpus/icechunk``: spec 1, spec 2,
spec 1 migrated; its README says what each holds).  Their one virtual chunk points
at ``s3://testbucket/can_read_old/chunk-1`` through a container whose endpoint is
``localhost:4200``; Icechunk's tests serve it from a local S3 server, as these do
from moto in a private network namespace (`tests.netns`), with the bytes of the
materialized chunk beside it.

Run as ``python -m tests.corpus REPO OUT`` (inside that namespace) it writes what
Icechunk reads directly from REPO: for every ref (branch, tag, snapshot), every
key's bytes and every array's values (a pickle).
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
#: The corpus beside the checkout (CI has a copy of shared/ there too).
CORPUS: Final = ROOT.parent / "shared" / "corpus" / "icechunk"
REPOSITORIES: Final = ("test-repo-v1", "test-repo-v2", "test-repo-v2-migrated")
#: Where the corpus's virtual chunk lives, and the port its container names.
VIRTUAL_BUCKET: Final = "testbucket"
VIRTUAL_KEY: Final = "can_read_old/chunk-1"
VIRTUAL_PORT: Final = 4200
#: The materialized chunk whose bytes the virtual one holds (as in Icechunk's tests).
SAME_BYTES: Final = "group1/big_chunks/c/0/1"


def open_repository(path: Path, keys: dict[str, str] | None = None) -> Any:
    import icechunk

    authorize = None
    if keys is not None:
        credentials = icechunk.s3_credentials(
            access_key_id=keys["access_key_id"], secret_access_key=keys["secret_access_key"]
        )
        authorize = icechunk.containers_credentials({f"s3://{VIRTUAL_BUCKET}/": credentials})
    return icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(path)), authorize_virtual_chunk_access=authorize
    )


def refs(repo: Any) -> dict[tuple[str, str], str]:
    """Every ref of *repo*: (kind, name) -> snapshot id; kinds branch, tag, snapshot."""
    out: dict[tuple[str, str], str] = {}
    for branch in sorted(repo.list_branches()):
        out[("branch", branch)] = repo.lookup_branch(branch)
        for snapshot in repo.ancestry(branch=branch):
            out[("snapshot", snapshot.id)] = snapshot.id
    for tag in sorted(repo.list_tags()):
        out[("tag", tag)] = repo.lookup_tag(tag)
    return out


def virtual_bytes(path: Path) -> bytes:
    """The bytes the corpus's virtual chunk holds."""
    session = open_repository(path).readonly_session(branch="main")
    return bytes(asyncio.run(_get(session.store, SAME_BYTES)))


async def _get(store: Any, key: str) -> bytes:
    from zarr.core.buffer import default_buffer_prototype

    buf = await store.get(key, default_buffer_prototype())
    assert buf is not None, key
    return bytes(buf.to_bytes())


def direct(path: Path, keys: dict[str, str]) -> dict[str, Any]:
    """What Icechunk reads from the repository at *path*: per snapshot id, every key's
    bytes and every array's values; and the refs."""
    import zarr

    repo = open_repository(path, keys)
    found: dict[str, Any] = {"refs": refs(repo), "snapshots": {}}
    for snapshot_id in sorted(set(found["refs"].values())):
        store = repo.readonly_session(snapshot_id=snapshot_id).store

        async def keys_and_bytes(store: Any = store) -> dict[str, bytes]:
            names = sorted([k async for k in store.list()])
            return {k: await _get(store, k) for k in names}

        arrays = {}
        root = zarr.open_group(store, mode="r") if _has_root(store) else None
        for name, node in root.members(max_depth=None) if root is not None else ():
            if isinstance(node, zarr.Array):
                arrays[name] = node[...]
        found["snapshots"][snapshot_id] = {
            "keys": asyncio.run(keys_and_bytes()),
            "arrays": arrays,
        }
    return found


def _has_root(store: Any) -> bool:
    return bool(asyncio.run(store.exists("zarr.json")))


if __name__ == "__main__":
    repo_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    pairs = (line.partition("=") for line in Path(sys.argv[3]).read_text().splitlines())
    key_file = {k.strip(): v.strip() for k, _, v in pairs}
    out.write_bytes(pickle.dumps(direct(repo_path, key_file)))
