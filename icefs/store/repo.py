"""Icechunk, seen from icefs: the only module that imports icechunk.

`open_repository` opens or creates a repository at start-up (synchronously, so
`icefs mount` can fail before anything is mounted).  `Repo` wraps it for trio
code: every call goes through the `Bridge`, and Icechunk's exceptions become
`IcefsError`s through `translate`.  `SnapshotReader` reads one immutable
snapshot: listings, chunk indexes and bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import icechunk

from icefs import errors
from icefs.errors import ExitCode, QuietError
from icefs.gate import ALONE, Gate
from icefs.storage import redact
from icefs.store.reflock import RefLock

if TYPE_CHECKING:
    from collections.abc import Buffer, Iterable

    from icefs.storage import StorageSpec
    from icefs.store.bridge import Bridge

__all__ = [
    "BranchWriter",
    "ChangeCounts",
    "ChunkIndex",
    "Repo",
    "RepoAdmin",
    "SnapshotMeta",
    "SnapshotReader",
    "configure_icechunk_logs",
    "make_storage",
    "open_repository",
    "open_writer",
    "translate",
]

log = logging.getLogger(__name__)

#: The root snapshot every new repository starts with.
ROOT_SNAPSHOT_ID: Final = "1CECHNKREP0F1RSTCMT0"
#: How many read-only sessions (one per snapshot) are kept open.
READERS_KEPT: Final = 64
#: Commits tried again after another writer's ref update dropped them (see `BranchWriter`).
COMMIT_ATTEMPTS: Final = 3
#: Snapshots walked back from a branch's tip to find a commit that just landed.
LANDED_WALK: Final = 1000


def ref_lock(spec: StorageSpec) -> RefLock:
    """The `RefLock` ref changes of the repository at *spec* take (local disk only)."""
    return RefLock(spec.path if spec.kind == "local" else "")


def landed(repository: icechunk.Repository, branch: str, snapshot_id: str) -> bool:
    """Whether *snapshot_id* is on the ancestry of *branch* (blocking: a worker thread)."""
    if repository.lookup_branch(branch) == snapshot_id:
        return True
    for i, info in enumerate(repository.ancestry(branch=branch)):
        if info.id == snapshot_id:
            return True
        if i >= LANDED_WALK:
            break
    return False


def configure_icechunk_logs(level: int, *, routed: bool = False) -> None:
    """Set what Icechunk's Rust side logs.

    *routed*: its output reaches `logging` (`icefs.store.rustlog.route_stderr`, the
    daemon), so its warnings are wanted (each is logged once); with *level* DEBUG
    its info lines too.  Otherwise (command line, tests) only errors, which go to
    stderr as Icechunk writes them.  ``ICECHUNK_LOG`` set by the user wins.
    """
    if os.environ.get("ICECHUNK_LOG"):
        return  # the user asked for something specific
    if not routed:
        icechunk.set_logs_filter("error")
    elif level <= logging.DEBUG:
        icechunk.set_logs_filter("info")
    else:
        icechunk.set_logs_filter("warn")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def translate(exc: BaseException) -> errors.IcefsError:
    """Return the `IcefsError` for an exception raised by Icechunk or zarr (the one table)."""
    message = _first_line(exc)
    table: tuple[tuple[type[BaseException], type[errors.IcefsError]], ...] = (
        # before NotFoundError, its base: the repository vanished under us (an I/O error
        # for whoever asked, not "no such file")
        (icechunk.RepositoryNotFoundError, errors.StorageFailure),
        (icechunk.NotFoundError, errors.NotFound),
        (icechunk.InvalidInputError, errors.InvalidInput),
        (icechunk.ReadOnlyError, errors.ReadOnly),
        (icechunk.ConflictError, errors.Busy),
        (icechunk.RebaseFailedError, errors.Busy),
        (icechunk.AlreadyExistsError, errors.Exists),
        (icechunk.SessionStateError, errors.NotPermitted),
        (icechunk.StorageError, errors.StorageFailure),
        (KeyError, errors.NotFound),
        (ValueError, errors.InvalidInput),
    )
    for source, target in table:
        if isinstance(exc, source):
            return target(message)
    return errors.StorageFailure(message)


#: The commit metadata key that holds the committing session's token.
TOKEN_KEY: Final = "icefs_session"


#: Credential types that hand one secret to Icechunk, and the argument that takes it.
_SECRET_ARGUMENT: Final = {
    "service-account-key": "service_account_key",
    "bearer-token": "bearer_token",
    "access-key": "access_key",
    "sas-token": "sas_token",
}


def _credentials(spec: StorageSpec) -> dict[str, Any]:
    """Return the credential arguments of Icechunk's storage factory for *spec*."""
    kind = spec.credential_type
    if kind == "static":
        return {
            "access_key_id": spec.secrets.access_key_id,
            "secret_access_key": spec.secrets.secret_access_key,
            "session_token": spec.secrets.session_token,
        }
    if kind == "anonymous":
        return {"anonymous": True}
    if kind == "service-account-file":
        return {"service_account_file": spec.service_account_file}
    if kind in _SECRET_ARGUMENT:
        name = _SECRET_ARGUMENT[kind]
        return {name: getattr(spec.secrets, name)}
    return {"from_env": True}  # the cloud's usual chain (AWS env/profile, GCS ADC, Azure env)


def make_storage(spec: StorageSpec) -> icechunk.Storage:
    """Return the Icechunk storage for *spec*, credentials as its credential type says."""
    if spec.kind == "memory":
        return icechunk.in_memory_storage()
    if spec.kind == "local":
        return icechunk.local_filesystem_storage(spec.path)
    credentials = _credentials(spec)
    if spec.kind == "s3":
        return icechunk.s3_storage(
            bucket=spec.bucket,
            prefix=spec.prefix or None,
            region=spec.region,
            endpoint_url=spec.endpoint_url,
            allow_http=spec.allow_http,
            force_path_style=spec.force_path_style,
            network_stream_timeout_seconds=max(1, int(spec.operation_timeout)),
            **credentials,
        )
    config = {}
    if spec.kind == "gcs":
        if spec.gcs_base_url:
            config["base_url"] = spec.gcs_base_url
        if spec.allow_http:
            config["allow_http"] = "true"
        return icechunk.gcs_storage(
            bucket=spec.bucket, prefix=spec.prefix or None, config=config or None, **credentials
        )
    if spec.endpoint_url:
        # An emulator's address, e.g. Azurite's http://127.0.0.1:10000 (the account is
        # appended by the client); Icechunk reads it from this variable in emulator mode.
        os.environ["AZURITE_BLOB_STORAGE_URL"] = spec.endpoint_url
        config["azure_storage_use_emulator"] = "true"
    return icechunk.azure_storage(
        account=spec.account,
        container=spec.bucket,
        prefix=spec.prefix,
        config=config or None,
        **credentials,
    )


def storage_settings(spec: StorageSpec) -> icechunk.StorageSettings:
    """Return Icechunk's storage settings for *spec*: timeouts, retries, concurrency."""
    concurrency = None
    if spec.max_concurrent_requests:
        concurrency = icechunk.StorageConcurrencySettings(
            max_concurrent_requests_for_object=spec.max_concurrent_requests
        )
    return icechunk.StorageSettings(
        retries=icechunk.StorageRetriesSettings(
            max_tries=spec.max_retries + 1, initial_backoff_ms=100, max_backoff_ms=2000
        ),
        timeouts=icechunk.StorageTimeoutSettings(
            connect_timeout_ms=int(spec.connect_timeout * 1000),
            read_timeout_ms=int(spec.operation_timeout * 1000),
            operation_attempt_timeout_ms=int(spec.operation_timeout * 1000),
        ),
        concurrency=concurrency,
    )


def _within(deadline: float, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run *fn* in a thread and give up after *deadline* seconds (the call may hang)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args, **kwargs)
    try:
        return future.result(timeout=deadline)
    except concurrent.futures.TimeoutError:
        raise QuietError(f"{what}: no answer within {deadline:g} s", ExitCode.STORAGE) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def open_repository(spec: StorageSpec, mode: str) -> icechunk.Repository:
    """Open the repository at *spec* in *mode* ('open', 'create' or 'open_or_create').

    ``memory://`` always starts empty, so every mode creates it.  Cloud storage
    is reached within a bounded time (its timeouts and retries).  Raises
    `QuietError` with a one-line reason, secrets removed, when the repository
    cannot be had.
    """
    if spec.kind == "memory":
        return icechunk.Repository.create(icechunk.in_memory_storage())
    if spec.kind == "local":
        _check_local(spec.path, mode)
    where = spec.display()
    storage = make_storage(spec)
    settings = storage_settings(spec) if spec.remote else None
    config = icechunk.RepositoryConfig(storage=settings) if settings else None
    deadline = (spec.connect_timeout + spec.operation_timeout) * (spec.max_retries + 1) + 5
    try:
        exists = _within(
            deadline, f"cannot reach {where}", icechunk.Repository.exists, storage, settings
        )
        if mode == "open" and not exists:
            hint = " (or its bucket/container does not exist)" if spec.remote else ""
            raise QuietError(f"not an Icechunk repository{hint}: {where}", ExitCode.REPOSITORY)
        if mode == "create" and exists:
            raise QuietError(f"a repository already exists at {where}", ExitCode.REPOSITORY)
        if mode == "create" and spec.kind == "local" and os.listdir(spec.path):
            raise QuietError(
                f"cannot create a repository in non-empty directory {where}", ExitCode.REPOSITORY
            )
        if (
            mode == "open_or_create"
            and not exists
            and spec.kind == "local"
            and os.listdir(spec.path)
        ):
            raise QuietError(f"not an Icechunk repository: {where}", ExitCode.REPOSITORY)
        if mode not in ("open", "create", "open_or_create"):
            raise QuietError(f"unknown mode {mode!r}", ExitCode.USAGE)
        action = icechunk.Repository.open if exists else icechunk.Repository.create
        result: icechunk.Repository = _within(
            deadline, f"cannot open {where}", action, storage, config
        )
        return result
    except icechunk.IcechunkError as exc:
        code = ExitCode.STORAGE if isinstance(exc, icechunk.StorageError) else (ExitCode.REPOSITORY)
        raise QuietError(
            redact(f"cannot open repository {where}: {_first_line(exc)}", spec.secrets), code
        ) from None


def _check_local(path: str, mode: str) -> None:
    if mode == "open" and not os.path.exists(path):
        raise QuietError(
            f"no repository at {path} (use --mode create or open_or_create to make one)",
            ExitCode.REPOSITORY,
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise QuietError(
            f"not an Icechunk repository (not a directory): {path}", ExitCode.REPOSITORY
        )
    os.makedirs(path, exist_ok=True)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What icefs shows of a snapshot: id, parent, commit time (epoch ns) and message."""

    id: str
    parent_id: str | None
    written_ns: int
    message: str
    #: the `BranchWriter.token` of the session that made it (icefs commits only)
    token: str = ""


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    """The chunks of one array in one snapshot: stored length and inline bytes by coordinates."""

    ndim: int
    lengths: dict[tuple[int, ...], int]
    inline: dict[tuple[int, ...], bytes]
    #: For each coordinate prefix shorter than ndim, the sorted next coordinates below it.
    children: dict[tuple[int, ...], list[int]]


def _byte_range(start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """Icechunk's form of the byte range [start, end); (None, None) means all of it."""
    return (None, None) if start is None or end is None else (start, end)


_PROBE_GROUP = b'{"zarr_format": 3, "node_type": "group"}'


async def direct_probe(bridge: Bridge) -> None:
    """Check `Bridge.run`'s direct path on an in-memory repository: a set, a get, an error.

    Raises (anything) if a call misbehaves; `Bridge.enable_direct` bounds its time.
    """
    repository = await bridge.run_sync(icechunk.Repository.create, icechunk.in_memory_storage())
    session = await bridge.run_sync(repository.writable_session, "main")
    raw = session.store._store
    await bridge.run(raw.set, "zarr.json", _PROBE_GROUP)
    if bytes(await bridge.run(raw.get, "zarr.json", (None, None))) != _PROBE_GROUP:
        raise RuntimeError("the direct path returned other bytes")
    try:
        await bridge.run(raw.get, "absent/zarr.json", (None, None))
    except KeyError:
        return
    raise RuntimeError("the direct path lost an error")


def _meta(info: Any) -> SnapshotMeta:
    return SnapshotMeta(
        id=info.id,
        parent_id=info.parent_id,
        written_ns=int(info.written_at.timestamp() * 1_000_000_000),
        message=info.message,
        token=str((info.metadata or {}).get(TOKEN_KEY, "")),
    )


class SnapshotReader:
    """Reads one immutable snapshot through a read-only session."""

    def __init__(self, session: icechunk.Session, bridge: Bridge) -> None:
        self.snapshot_id: str = session.snapshot_id
        self._session = session
        # Taken once: the ``store`` property locks the session, blocking, with the GIL.
        self._store = session.store
        #: Icechunk's Rust store under the zarr one: its methods return pyo3 futures for
        #: `Bridge.run`, take any buffer and give bytes-like results, skipping zarr's
        #: Buffer wrappers.
        self._raw = self._store._store
        self._bridge = bridge

    def _using(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold this around every use of the session (`SessionReader` gates it)."""
        return contextlib.nullcontext()

    def _list_dir_sync(self, prefix: str) -> list[str]:
        # Icechunk's listing iterators are typed async but also iterate synchronously
        # (measured: ~10 us a name); list_dir can repeat names and has no stable order.
        names = cast("Iterable[str]", self._store.list_dir(prefix))
        return sorted(set(names))

    async def list_dir(self, prefix: str) -> list[str]:
        """Return the sorted, de-duplicated child names below key *prefix* ('' = root)."""
        try:
            async with self._using():
                return await self._bridge.run_sync(self._list_dir_sync, prefix)
        except Exception as exc:
            raise translate(exc) from exc

    def _node_paths_sync(self) -> set[str]:
        keys = cast("Iterable[str]", self._store.list())
        suffix = "/zarr.json"
        return {
            k[: -len(suffix)] if k != "zarr.json" else ""
            for k in keys
            if k == "zarr.json" or k.endswith(suffix)
        }

    async def node_paths(self) -> set[str]:
        """Return the path of every group and array ('' for the root group).

        `list_dir` misses directories that only hold deeper nodes (a group stored
        without its parent group); this one pass over the keys does not.
        """
        try:
            async with self._using():
                return await self._bridge.run_sync(self._node_paths_sync)
        except Exception as exc:
            raise translate(exc) from exc

    def _chunk_index_sync(self, array_path: str, ndim: int) -> ChunkIndex:
        lengths: dict[tuple[int, ...], int] = {}
        inline: dict[tuple[int, ...], bytes] = {}
        batches = cast(
            "Iterable[tuple[Any, Any, Any, Any, Any, dict[int, bytes]]]",
            self._store.array_chunk_iterator(array_path),
        )
        for coords, _kinds, _paths, _offsets, lens, inlined in batches:
            keys = [tuple(int(c) for c in row) for row in coords.tolist()]
            for i, key in enumerate(keys):
                lengths[key] = int(lens[i])
            for i, data in inlined.items():
                inline[keys[i]] = data
        below: dict[tuple[int, ...], set[int]] = {}
        for key in lengths:
            if len(key) != ndim:
                continue  # a key of the wrong dimensionality cannot be shown as a path
            for depth in range(ndim):
                below.setdefault(key[:depth], set()).add(key[depth])
        children = {prefix: sorted(nxt) for prefix, nxt in below.items()}
        return ChunkIndex(ndim, lengths, inline, children)

    async def chunk_index(self, array_path: str, ndim: int) -> ChunkIndex:
        """Return the `ChunkIndex` of the array at *array_path* (one pass over its manifest)."""
        try:
            async with self._using():
                return await self._bridge.run_sync(self._chunk_index_sync, array_path, ndim)
        except Exception as exc:
            raise translate(exc) from exc

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Buffer:
        """Return the bytes of *key*, or of [start, end) when both are given.

        The caller clamps *end* to the size: Icechunk raises past the end.
        Raises `NotFound` if the key does not exist.

        The result is Icechunk's own read-only buffer, not a copy: read replies
        slice it with memoryview (a 2 MiB chunk cost a 2 MiB copy on the FUSE
        thread). Use ``bytes()`` where a `bytes` is needed.
        """
        try:
            async with self._using():
                data = await self._bridge.run(self._raw.get, key, _byte_range(start, end))
        except KeyError:  # Icechunk's answer for a missing key
            raise errors.NotFound(f"no key {key}") from None
        except Exception as exc:
            raise translate(exc) from exc
        return cast("Buffer", data)


class Repo:
    """An open repository, used from trio: refs, snapshots and cached readers."""

    def __init__(
        self,
        repository: icechunk.Repository,
        bridge: Bridge,
        display: str,
        lock: RefLock | None = None,
    ) -> None:
        self.display = display
        self._repo = repository
        self._bridge = bridge
        #: held around every change of the repository's refs (commits included)
        self.lock = lock or RefLock()
        self._readers: OrderedDict[str, SnapshotReader] = OrderedDict()
        self._snapshots: dict[str, SnapshotMeta] = {}

    @property
    def bridge(self) -> Bridge:
        return self._bridge

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await self._bridge.run_sync(fn, *args)
        except Exception as exc:
            raise translate(exc) from exc

    def _refs_sync(self) -> tuple[dict[str, str], dict[str, str]]:
        branches = {b: self._repo.lookup_branch(b) for b in self._repo.list_branches()}
        tags = {t: self._repo.lookup_tag(t) for t in self._repo.list_tags()}
        return branches, tags

    async def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        """Return ({branch: tip snapshot id}, {tag: snapshot id}) as the repository has them now."""
        result: tuple[dict[str, str], dict[str, str]] = await self._call(self._refs_sync)
        return result

    async def lookup_branch(self, branch: str) -> str:
        result: str = await self._call(self._repo.lookup_branch, branch)
        return result

    async def lookup_tag(self, tag: str) -> str:
        result: str = await self._call(self._repo.lookup_tag, tag)
        return result

    async def snapshot(self, snapshot_id: str) -> SnapshotMeta:
        """Return the `SnapshotMeta` of *snapshot_id*; `NotFound`/`InvalidInput` if it is none."""
        meta = self._snapshots.get(snapshot_id)
        if meta is None:
            meta = _meta(await self._call(self._repo.lookup_snapshot, snapshot_id))
            self._snapshots[snapshot_id] = meta
        return meta

    def _ancestry_sync(self, snapshot_id: str) -> list[SnapshotMeta]:
        out: list[SnapshotMeta] = []
        for info in self._repo.ancestry(snapshot_id=snapshot_id):
            meta = self._snapshots.get(info.id)
            if meta is None:
                meta = self._snapshots[info.id] = _meta(info)
            out.append(meta)
        return out

    async def ancestry(self, snapshot_id: str) -> list[SnapshotMeta]:
        """Return the ancestry of *snapshot_id*, newest first, itself included."""
        result: list[SnapshotMeta] = await self._call(self._ancestry_sync, snapshot_id)
        return result

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self.lock.held():
            return fn(*args)

    async def create_branch(self, branch: str, snapshot_id: str) -> None:
        """Create *branch* at *snapshot_id* (`Exists`, `NotFound`)."""
        await self._call(self._locked, self._repo.create_branch, branch, snapshot_id)

    async def delete_branch(self, branch: str) -> None:
        await self._call(self._locked, self._repo.delete_branch, branch)

    async def create_tag(self, tag: str, snapshot_id: str) -> None:
        """Create *tag* at *snapshot_id* (`Exists`, also for a deleted tag's name)."""
        await self._call(self._locked, self._repo.create_tag, tag, snapshot_id)

    async def delete_tag(self, tag: str) -> None:
        await self._call(self._locked, self._repo.delete_tag, tag)

    async def reader(self, snapshot_id: str) -> SnapshotReader:
        """Return a (cached) `SnapshotReader` for *snapshot_id*."""
        reader = self._readers.get(snapshot_id)
        if reader is not None:
            self._readers.move_to_end(snapshot_id)
            return reader
        session = await self._call(self._open_readonly, snapshot_id)
        reader = SnapshotReader(session, self._bridge)
        self._readers[snapshot_id] = reader
        while len(self._readers) > READERS_KEPT:
            self._readers.popitem(last=False)
        return reader

    def _open_readonly(self, snapshot_id: str) -> icechunk.Session:
        return self._repo.readonly_session(snapshot_id=snapshot_id)


@dataclass(frozen=True, slots=True)
class ChangeCounts:
    """What a writable session holds that its base snapshot does not."""

    nodes: int
    chunks: int
    paths: tuple[str, ...]


class SessionReader(SnapshotReader):
    """A `SnapshotReader` over a writable session: it sees the session's uncommitted changes.

    Every use of the session passes `gate`: reads and listings together, stores and
    deletes together, the synchronous calls (status, commit) alone. Icechunk's
    session lock is not reentrant-safe under contention: with a listing in progress
    and a store queued, daemon threads stuck for good inside Icechunk's ``list_dir``
    (seen under concurrent zarr writes). Keeping readers and writers of one session
    apart in our own trio lock makes that impossible.
    """

    def __init__(self, session: icechunk.Session, bridge: Bridge) -> None:
        super().__init__(session, bridge)
        self.gate = Gate()

    def _using(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.gate.hold("read")


class BranchWriter:
    """One writable session on a branch: store and delete keys, commit, discard.

    Icechunk refuses every write after a commit; the owner opens a new writer.
    """

    def __init__(self, repo: Repo, branch: str, session: icechunk.Session) -> None:
        self.branch = branch
        self.base_snapshot_id: str = session.snapshot_id
        self._repo = repo
        self._session = session
        self.reader = SessionReader(session, repo.bridge)
        self._raw = self.reader._raw
        #: names this session in its commit's metadata, so that a session recovered
        #: from the crash journal can tell whether it was committed before the crash
        self.token = uuid.uuid4().hex
        #: True once a store or delete succeeded (a cheap, lock-free `has_changes`).
        self.touched = False

    async def set(self, key: str, data: bytes | memoryview | Any) -> None:
        """Store *data* (bytes-like) at *key*; `InvalidInput`, `NotFound` or `StorageFailure`."""
        try:
            async with self.reader.gate.hold("write"):
                await self._repo.bridge.run(self._raw.set, key, data)
        except Exception as exc:
            raise translate(exc) from exc
        self.touched = True

    async def delete(self, key: str) -> None:
        """Delete *key* (a node's ``zarr.json`` deletes the node and everything below)."""
        try:
            async with self.reader.gate.hold("write"):
                await self._repo.bridge.run(self._raw.delete, key)
        except Exception as exc:
            raise translate(exc) from exc
        self.touched = True

    def _counts_sync(self) -> ChangeCounts:
        diff = self._session.status()
        nodes: set[str] = set()
        for name in (
            "new_groups",
            "new_arrays",
            "updated_arrays",
            "updated_groups",
            "deleted_arrays",
            "deleted_groups",
        ):
            nodes.update(getattr(diff, name))
        chunks = sum(len(coords) for coords in diff.updated_chunks.values())
        return ChangeCounts(len(nodes), chunks, tuple(sorted(nodes | set(diff.updated_chunks))))

    async def counts(self) -> ChangeCounts:
        """Return how many nodes and chunks the session changed."""
        async with self.reader.gate.hold(ALONE):
            result: ChangeCounts = await self._repo._call(self._counts_sync)
        return result

    async def has_changes(self) -> bool:
        """Ask Icechunk whether the session holds changes (a store may have undone one)."""
        async with self.reader.gate.hold(ALONE):
            result: bool = await self._repo._call(
                lambda: bool(self._session.has_uncommitted_changes)
            )
        return result

    async def serialized(self) -> bytes:
        """Return the session as bytes for the crash journal (`restore_writer` reads them)."""
        # Icechunk's public pickling refuses writable sessions (they are meant to be
        # forked); its own pickling of forks uses these two calls.
        async with self.reader.gate.hold(ALONE):
            data: bytes = await self._repo._call(lambda: bytes(self._session._session.as_bytes()))
        return data

    def _adopt(self, session: icechunk.Session) -> None:
        """Make *session* (a writable session of the branch) this writer's session."""
        self._session = session
        self.reader = SessionReader(session, self._repo.bridge)
        self._raw = self.reader._raw

    def _commit_sync(self, message: str) -> str:
        """Commit, and return only once the branch has reached the new snapshot.

        On local disk a ref update is not conditional: a writer that does not take
        the `RefLock` can drop our snapshot from the branch moments after Icechunk
        reported it committed.  The session as it was before each attempt is kept;
        if the branch did not reach the snapshot, that session commits again (on
        top of the other writer's work, rebasing).  After `COMMIT_ATTEMPTS` the
        changes stay in the (restored) session and `StorageFailure` is raised.
        """
        repository = self._repo._repo
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            with self._repo.lock.held():
                saved = bytes(self._session._session.as_bytes())
                sid: str = self._session.commit(
                    message,
                    metadata={TOKEN_KEY: self.token},
                    rebase_with=icechunk.ConflictDetector(),
                )
                if landed(repository, self.branch, sid):
                    return sid
            log.warning(
                "branch %s: commit %s was dropped from the branch by another writer's "
                "ref update (a program other than icefs writing the repository?); "
                "committing again (attempt %d of %d)",
                self.branch,
                sid,
                attempt,
                COMMIT_ATTEMPTS,
            )
            self._adopt(_session_from_bytes(saved))
        raise errors.StorageFailure(
            f"commit to {self.branch} was dropped by other writers {COMMIT_ATTEMPTS} times; "
            "the changes stay uncommitted"
        )

    async def commit(self, message: str) -> str:
        """Commit with *message*, rebasing over changes made elsewhere when they do not overlap.

        Raises `Busy` (with the conflicts in its message) when they do.
        """
        try:
            async with self.reader.gate.hold(ALONE):
                sid: str = await self._repo.bridge.run_sync(self._commit_sync, message)
        except icechunk.RebaseFailedError as exc:
            conflicts = "; ".join(
                f"{getattr(c, 'conflict_type', c)} at {getattr(c, 'path', '?')}"
                for c in getattr(exc, "conflicts", ()) or ()
            )
            raise errors.Busy(
                f"conflicts with another writer: {conflicts or _first_line(exc)}"
            ) from exc
        except errors.IcefsError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        return sid


async def open_writer(repo: Repo, branch: str) -> BranchWriter:
    """Open a writable session on *branch* at its current tip."""
    session = await repo._call(repo._repo.writable_session, branch)
    return BranchWriter(repo, branch, session)


def _session_from_bytes(data: bytes) -> icechunk.Session:
    from icechunk._icechunk_python import PySession

    return icechunk.Session(PySession.from_bytes(data))


async def restore_writer(repo: Repo, branch: str, data: bytes, token: str) -> BranchWriter:
    """Rebuild the writable session of *branch* from `BranchWriter.serialized` bytes.

    Raises `InvalidInput` for bytes that are not a writable session of *branch*.
    """
    session: icechunk.Session = await repo._call(_session_from_bytes, data)
    if session.read_only or session.branch != branch:
        raise errors.InvalidInput(f"the saved session is not a writable session of {branch}")
    writer = BranchWriter(repo, branch, session)
    writer.token = token
    writer.touched = True
    return writer


class RepoAdmin:
    """Synchronous ref management for the command line (``icefs branch/tag/log --repo``)."""

    def __init__(self, repository: icechunk.Repository, lock: RefLock | None = None) -> None:
        self._repo = repository
        self._lock = lock or RefLock()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise translate(exc) from exc

    def _change(self, fn: Any, *args: Any) -> Any:
        """Call *fn*, which changes refs, holding the repository's `RefLock`."""
        with self._lock.held():
            return self._call(fn, *args)

    def branches(self) -> dict[str, str]:
        """Return {branch: tip snapshot id}."""
        return {
            b: self._call(self._repo.lookup_branch, b) for b in self._call(self._repo.list_branches)
        }

    def tags(self) -> dict[str, str]:
        """Return {tag: snapshot id}."""
        return {t: self._call(self._repo.lookup_tag, t) for t in self._call(self._repo.list_tags)}

    def resolve(self, ref: str) -> str:
        """Return the snapshot id *ref* names: a branch, else a tag, else a snapshot id."""
        if ref in self._call(self._repo.list_branches):
            return str(self._call(self._repo.lookup_branch, ref))
        if ref in self._call(self._repo.list_tags):
            return str(self._call(self._repo.lookup_tag, ref))
        try:
            return str(self._call(self._repo.lookup_snapshot, ref).id)
        except (errors.NotFound, errors.InvalidInput):
            raise errors.NotFound(f"no branch, tag or snapshot {ref!r}") from None

    def create_branch(self, name: str, snapshot_id: str) -> None:
        self._change(self._repo.create_branch, name, snapshot_id)

    def delete_branch(self, name: str) -> None:
        self._change(self._repo.delete_branch, name)

    def create_tag(self, name: str, snapshot_id: str) -> None:
        self._change(self._repo.create_tag, name, snapshot_id)

    def delete_tag(self, name: str) -> None:
        self._change(self._repo.delete_tag, name)

    def log(self, snapshot_id: str) -> list[SnapshotMeta]:
        """Return the ancestry of *snapshot_id*, newest first."""
        return [_meta(i) for i in self._call(self._repo.ancestry, snapshot_id=snapshot_id)]
