"""Storage URLs and credentials: what the user typed, as a `StorageSpec` (pure, no I/O).

``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://account/container/prefix``,
a local path or ``file:///path``, and ``memory://``.  Options and credentials
come from the command line, the config file or the environment (that order);
`resolve_spec` merges them.  Secrets live in `Secrets`, whose fields never
show in a repr, a log line or an error message: `redact` removes them from
any text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

from icefs.errors import UsageError
from icefs.settings import SECRET_NAMES, SETTINGS

__all__ = [
    "CREDENTIAL_TYPES",
    "SECRET_KEYS",
    "Secrets",
    "StorageSpec",
    "parse_storage",
    "redact",
    "resolve_spec",
]

StorageKind = Literal["local", "memory", "s3", "gcs", "azure"]
#: URL schemes icefs knows: "s3:/x" is a mistyped URL, not a local path named "s3:".
_SCHEMES: Final = frozenset({"s3", "gs", "gcs", "az", "azure", "file", "memory"})

#: Credential choices, by backend ("env" = the cloud's usual environment/defaults).
CREDENTIAL_TYPES: Final = {
    "s3": ("env", "static", "anonymous"),
    "gcs": ("env", "service-account-file", "service-account-key", "bearer-token", "anonymous"),
    "azure": ("env", "access-key", "sas-token", "bearer-token", "anonymous"),
}
#: Secret settings (config keys); each may also be given as <key>_file.
SECRET_KEYS: Final = SECRET_NAMES
_ENV: Final = {
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
    "access_key": ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"),
    "sas_token": ("AZURE_STORAGE_SAS_TOKEN",),
}


@dataclass(frozen=True, slots=True)
class Secrets:
    """Credentials; no field is ever shown (repr=False), only whether it is set."""

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    service_account_key: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    access_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)

    def values(self) -> list[str]:
        """Return every secret that is set (for redaction)."""
        return [v for f in fields(self) if (v := getattr(self, f.name))]

    def as_dict(self) -> dict[str, str]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name))}


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where a repository lives and how to reach it.  `display` is safe to show."""

    kind: StorageKind
    path: str = ""  # local
    bucket: str = ""  # s3, gcs; the container for azure
    prefix: str = ""
    account: str = ""  # azure
    region: str | None = None
    endpoint_url: str | None = None
    allow_http: bool = False
    force_path_style: bool = False
    credential_type: str = "env"
    service_account_file: str | None = None
    gcs_base_url: str | None = None
    connect_timeout: float = SETTINGS["connect_timeout"].default
    operation_timeout: float = SETTINGS["operation_timeout"].default
    max_retries: int = SETTINGS["max_retries"].default
    max_concurrent_requests: int | None = None
    secrets: Secrets = field(default_factory=Secrets, repr=False)

    def display(self) -> str:
        """Return a form of the URL that is safe to log and show (never a secret)."""
        if self.kind == "memory":
            return "memory://"
        if self.kind == "local":
            return self.path
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[self.kind]
        where = f"{self.account}/{self.bucket}" if self.kind == "azure" else self.bucket
        return f"{scheme}://{where}/{self.prefix}".rstrip("/")

    @property
    def remote(self) -> bool:
        return self.kind in ("s3", "gcs", "azure")

    def identity(self) -> str:
        """The repository's place, endpoint included: it names the repository in the read
        cache's keys (never a secret)."""
        return f"{self.display()} at {self.endpoint_url or 'the default endpoint'}"


def parse_storage(url: str) -> StorageSpec:
    """Parse the storage *url* given on the command line.

    Raises `UsageError` for an empty, malformed or unknown URL.
    """
    if not url:
        raise UsageError("empty storage URL")
    if url.startswith("memory://"):
        return StorageSpec("memory")
    scheme_like = url.partition(":")[0].lower() if ":" in url else ""
    if "://" not in url and scheme_like in _SCHEMES:
        raise UsageError(
            f"malformed storage URL {url!r}: write {scheme_like}://"
            f"{'bucket/prefix' if scheme_like not in ('file', 'memory') else ''}"
            f"{'/path' if scheme_like == 'file' else ''}"
        )
    if "://" not in url:
        return StorageSpec("local", os.path.abspath(os.path.expanduser(url)))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    path = unquote(parts.path).strip("/")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file URL with a host is not supported: {url}")
        return StorageSpec("local", os.path.abspath(unquote(parts.path)))
    if scheme in ("s3", "gs", "gcs"):
        if not parts.netloc:
            raise UsageError(f"{url}: a bucket is needed ({scheme}://bucket/prefix)")
        return StorageSpec("s3" if scheme == "s3" else "gcs", bucket=parts.netloc, prefix=path)
    if scheme in ("az", "azure"):
        container, _, prefix = path.partition("/")
        if not parts.netloc or not container:
            raise UsageError(f"{url}: use az://account/container/prefix")
        return StorageSpec("azure", account=parts.netloc, bucket=container, prefix=prefix)
    raise UsageError(f"unknown storage URL scheme {scheme!r} in {url!r}")


def _read_secret_file(path: str, key: str) -> str:
    try:
        with open(os.path.expanduser(path)) as f:
            return f.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {key} from {path}: {exc.strerror}") from None


def resolve_spec(
    spec: StorageSpec,
    cli: dict[str, Any],
    config: dict[str, Any],
    env: dict[str, str] | None = None,
) -> tuple[StorageSpec, list[str]]:
    """Merge storage options: *cli* > *config* > the environment; return (spec, warnings).

    Each secret comes from ``<key>`` or ``<key>_file`` (a path), first on the
    command line (warned: it shows in ``ps``), then in the config file, then in
    the cloud's usual environment variables.
    """
    env = dict(os.environ) if env is None else env
    warnings: list[str] = []

    def pick(key: str) -> Any:
        if cli.get(key) is not None:
            return cli[key]
        return config.get(key)

    secrets: dict[str, str] = {}
    for key in SECRET_KEYS:
        value = None
        if cli.get(key):
            value = cli[key]
            warnings.append(
                f"--{key.replace('_', '-')} on the command line shows in ps; use "
                f"--{key.replace('_', '-')}-file, the config file or the environment"
            )
        elif cli.get(f"{key}_file"):
            value = _read_secret_file(cli[f"{key}_file"], key)
        elif config.get(key):
            value = str(config[key])
        elif config.get(f"{key}_file"):
            value = _read_secret_file(config[f"{key}_file"], key)
        else:
            value = next((env[n] for n in _ENV.get(key, ()) if env.get(n)), None)
        if value:
            secrets[key] = value
    updates: dict[str, Any] = {"secrets": Secrets(**secrets)}
    for key in (
        "region",
        "endpoint_url",
        "service_account_file",
        "gcs_base_url",
        "max_concurrent_requests",
    ):
        value = pick(key)
        if value is not None:
            updates[key] = value
    for key in ("allow_http", "force_path_style"):
        if pick(key):
            updates[key] = True
    for key, kind in (
        ("connect_timeout", float),
        ("operation_timeout", float),
        ("max_retries", int),
    ):
        if pick(key) is not None:
            updates[key] = kind(pick(key))
    if spec.kind == "s3":
        updates.setdefault("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"))
        updates.setdefault(
            "endpoint_url", env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        )
    credential_type = pick("credential_type") or ("anonymous" if pick("anonymous") else None)
    if credential_type is None:
        credential_type = _infer_credential_type(spec.kind, secrets, updates)
    if spec.remote and credential_type not in CREDENTIAL_TYPES[spec.kind]:
        raise UsageError(
            f"credential type {credential_type!r} does not apply to {spec.kind}; "
            f"use one of {', '.join(CREDENTIAL_TYPES[spec.kind])}"
        )
    updates["credential_type"] = credential_type
    resolved = replace(spec, **updates)
    _check_complete(resolved)
    return resolved, warnings


def _infer_credential_type(kind: str, secrets: dict[str, str], updates: dict[str, Any]) -> str:
    if kind == "s3" and secrets.get("access_key_id") and secrets.get("secret_access_key"):
        return "static"
    if kind == "gcs":
        if updates.get("service_account_file"):
            return "service-account-file"
        if secrets.get("service_account_key"):
            return "service-account-key"
        if secrets.get("bearer_token"):
            return "bearer-token"
    if kind == "azure":
        for key in ("access_key", "sas_token", "bearer_token"):
            if secrets.get(key):
                return key.replace("_", "-")
    return "env"


def _check_complete(spec: StorageSpec) -> None:
    s = spec.secrets
    needed = {
        "static": ("access_key_id", "secret_access_key"),
        "service-account-key": ("service_account_key",),
        "bearer-token": ("bearer_token",),
        "access-key": ("access_key",),
        "sas-token": ("sas_token",),
    }.get(spec.credential_type, ())
    missing = [k for k in needed if not getattr(s, k)]
    if missing and spec.remote:
        raise UsageError(
            f"credential type {spec.credential_type} needs "
            + ", ".join(f"{k} (or {k}_file)" for k in missing)
        )
    if spec.credential_type == "service-account-file" and not spec.service_account_file:
        raise UsageError("credential type service-account-file needs service_account_file")


def redact(text: str, secrets: Secrets | list[str]) -> str:
    """Return *text* with every secret replaced by ``***``."""
    values = secrets.values() if isinstance(secrets, Secrets) else secrets
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
