"""Opening a repository: storage from a `StorageSpec`, settings, the ref lock, Icechunk's logs.

`open_repository` opens or creates a repository at start-up, synchronously and
within a bounded time, so that `icefs mount` and the ``--repo`` commands fail
before anything is mounted, with one line that says why (`SetupError`s).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Final

import icechunk

from icefs.errors import RepositoryError, StorageUnreachable, UsageError
from icefs.storage import redact
from icefs.store.errors import first_line
from icefs.store.reflock import RefLock

if TYPE_CHECKING:
    from icefs.storage import StorageSpec

__all__ = [
    "configure_icechunk_logs",
    "make_storage",
    "open_repository",
    "ref_lock",
    "storage_settings",
]

log = logging.getLogger(__name__)


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


def ref_lock(spec: StorageSpec) -> RefLock:
    """The `RefLock` ref changes of the repository at *spec* take (local disk only)."""
    return RefLock(spec.path if spec.kind == "local" else "")


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
        raise StorageUnreachable(f"{what}: no answer within {deadline:g} s") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def open_repository(
    spec: StorageSpec, mode: str, authorize: dict[str, Any] | None = None
) -> icechunk.Repository:
    """Open the repository at *spec* in *mode* ('open', 'create' or 'open_or_create'),
    with the virtual chunk containers *authorize* names authorized (`icefs.store.virtual`).

    ``memory://`` always starts empty, so every mode creates it.  Cloud storage
    is reached within a bounded time (its timeouts and retries).  Raises
    `RepositoryError`, `StorageUnreachable` or `UsageError` with a one-line
    reason, secrets removed, when the repository cannot be had.
    """
    if spec.kind == "memory":
        return icechunk.Repository.create(
            icechunk.in_memory_storage(), authorize_virtual_chunk_access=authorize
        )
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
            raise RepositoryError(f"not an Icechunk repository{hint}: {where}")
        if mode == "create" and exists:
            raise RepositoryError(f"a repository already exists at {where}")
        if mode == "create" and spec.kind == "local" and os.listdir(spec.path):
            raise RepositoryError(f"cannot create a repository in non-empty directory {where}")
        if (
            mode == "open_or_create"
            and not exists
            and spec.kind == "local"
            and os.listdir(spec.path)
        ):
            raise RepositoryError(f"not an Icechunk repository: {where}")
        if mode not in ("open", "create", "open_or_create"):
            raise UsageError(f"unknown mode {mode!r}")
        action = icechunk.Repository.open if exists else icechunk.Repository.create
        result: icechunk.Repository = _within(
            deadline,
            f"cannot open {where}",
            action,
            storage,
            config,
            authorize_virtual_chunk_access=authorize,
        )
        return result
    except icechunk.IcechunkError as exc:
        kind = StorageUnreachable if isinstance(exc, icechunk.StorageError) else RepositoryError
        raise kind(
            redact(f"cannot open repository {where}: {first_line(exc)}", spec.secrets)
        ) from None


def _check_local(path: str, mode: str) -> None:
    if mode == "open" and not os.path.exists(path):
        raise RepositoryError(
            f"no repository at {path} (use --mode create or open_or_create to make one)"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise RepositoryError(f"not an Icechunk repository (not a directory): {path}")
    os.makedirs(path, exist_ok=True)
