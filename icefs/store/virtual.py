"""Virtual chunk containers: which ones a mount may read, and with which credentials.

A repository declares its virtual chunk containers (URL prefixes such as
``s3://bucket/data/`` with their store's region and endpoint); nothing in them
is read unless the user authorizes the prefix (``--virtual PREFIX[=ACCESS]``,
docs/virtual.md).  ACCESS is ``anonymous``, ``env`` (the cloud's usual
credential chain; the default for cloud prefixes) or ``static:PATH``: a file
of ``name=value`` lines (S3: ``access_key_id``, ``secret_access_key``, optional
``session_token``; Azure: ``access_key`` or ``sas_token`` or ``bearer_token``)
or, for GCS, a service-account JSON file.  ``file://`` and ``http(s)://``
prefixes take no ACCESS.  A secret never reaches the daemon's command line:
only the path of the file holding it does, and the file is read by the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from icefs.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import icechunk

__all__ = [
    "Grant",
    "authorization",
    "authorize_hint",
    "check_allow_other",
    "containers",
    "parse_grants",
    "unauthorized_prefix",
]

_SCHEMES: Final = {
    "s3": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
    "http": "http",
    "https": "http",
    "file": "local",
}
_ACCESS: Final = re.compile(r"^(anonymous|env|static:.+)$")
_STATIC_KEYS: Final = {
    "s3": {"access_key_id", "secret_access_key", "session_token"},
    "azure": {"access_key", "sas_token", "bearer_token"},
}


@dataclass(frozen=True, slots=True)
class Grant:
    """One authorized container: its URL prefix, its store kind and how to authenticate."""

    prefix: str
    kind: str  # s3, gcs, azure, http or local
    access: str  # "" (file://, http), anonymous, env or static
    key_file: str = ""


def parse_grants(items: Iterable[str]) -> list[Grant]:
    """Parse ``PREFIX[=ACCESS]`` items; `UsageError` names a bad one."""
    grants: dict[str, Grant] = {}
    for item in items:
        prefix, sep, access = item.rpartition("=")
        if not sep or not _ACCESS.match(access):
            prefix, access = item, ""
        scheme = prefix.partition("://")[0].lower()
        kind = _SCHEMES.get(scheme)
        if kind is None or "://" not in prefix:
            raise UsageError(
                f"--virtual {item!r}: not a container URL prefix "
                "(s3://, gs://, az://, http(s)://, file:///)"
            )
        if kind in ("local", "http") and access:
            raise UsageError(f"--virtual {item!r}: a {scheme}:// container takes no credentials")
        access = access or ("" if kind in ("local", "http") else "env")
        key_file = ""
        if access.startswith("static:"):
            access, key_file = "static", access.removeprefix("static:")
            if kind == "http":
                raise UsageError(f"--virtual {item!r}: http containers take no credentials")
        if prefix in grants:
            raise UsageError(f"--virtual {prefix!r} is given twice")
        grants[prefix] = Grant(prefix, kind, access, key_file)
    return list(grants.values())


def check_allow_other(grants: Iterable[Grant], allow_other: bool, accepted: bool) -> None:
    """Refuse ``file://`` containers on a mount other users can read, unless *accepted*.

    The daemon reads a ``file://`` chunk with its own rights: through an
    ``allow_other`` mount, any user could read any file the daemon may read by
    pointing a virtual reference at it.
    """
    local = [g.prefix for g in grants if g.kind == "local"]
    if local and allow_other and not accepted:
        raise UsageError(
            f"refusing to authorize {', '.join(local)} on an allow_other mount: every user "
            "of the mount could read those files with the daemon's rights; add "
            "--allow-other-file-access to accept that"
        )


def _read_key_file(grant: Grant) -> dict[str, str]:
    try:
        with open(grant.key_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(
            f"--virtual {grant.prefix}: cannot read {grant.key_file}: {exc.strerror}"
        ) from None
    values: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if line.strip() and not line.lstrip().startswith("#"):
            if not sep or name.strip() not in _STATIC_KEYS[grant.kind]:
                raise UsageError(
                    f"--virtual {grant.prefix}: {grant.key_file} has a line that is not one "
                    f"of {', '.join(sorted(_STATIC_KEYS[grant.kind]))} = value"
                )
            values[name.strip()] = value.strip()
    return values


def _credential(grant: Grant) -> Any:
    import icechunk

    if grant.kind == "local":
        return icechunk.credentials.LocalFileSystemAccess
    if grant.kind == "http":
        return icechunk.credentials.HttpAccess
    makers: dict[str, Callable[..., Any]] = {
        "s3": icechunk.s3_credentials,
        "gcs": icechunk.gcs_credentials,
        "azure": icechunk.azure_credentials,
    }
    make = makers[grant.kind]
    if grant.access == "anonymous":
        return make(anonymous=True)
    if grant.access == "env":
        return make(from_env=True)
    if grant.kind == "gcs":
        return make(service_account_file=grant.key_file)
    values = _read_key_file(grant)
    if grant.kind == "s3" and not {"access_key_id", "secret_access_key"} <= set(values):
        raise UsageError(
            f"--virtual {grant.prefix}: {grant.key_file} needs access_key_id and secret_access_key"
        )
    if grant.kind == "azure" and len(values) != 1:
        raise UsageError(
            f"--virtual {grant.prefix}: {grant.key_file} needs exactly one of access_key, "
            "sas_token, bearer_token"
        )
    return make(**values)


def authorization(grants: Iterable[Grant]) -> dict[str, Any]:
    """Icechunk's ``authorize_virtual_chunk_access`` for *grants*."""
    import icechunk

    return icechunk.containers_credentials({g.prefix: _credential(g) for g in grants})


def _normal(prefix: str) -> str:
    """*prefix* as containers are matched: without trailing slashes (Icechunk matches
    ``s3://bucket`` and ``s3://bucket/`` alike)."""
    return prefix.rstrip("/")


def containers(repository: icechunk.Repository, grants: Iterable[Grant]) -> list[dict[str, Any]]:
    """The containers *repository* declares, each with its name, URL prefix, and whether
    and how it is authorized.

    A repository written by Icechunk 1.x (or migrated from one) declares its
    containers by name (``s3``) with a URL prefix that differs (``s3://testbucket``);
    newer ones name each by its prefix.  Grants match the URL prefix, with or
    without a trailing slash.  A declared container whose prefix is not a URL is
    ignored by Icechunk, and listed as such.  Raises `UsageError` for a grant of a
    prefix the repository does not declare (a typo would otherwise leave every read of
    the container failing).
    """
    declared = repository.config.virtual_chunk_containers or {}
    by_prefix = {_normal(g.prefix): g for g in grants}
    prefixes = {_normal(str(c.url_prefix)): name for name, c in declared.items()}
    unknown = sorted(g.prefix for p, g in by_prefix.items() if p not in prefixes)
    if unknown:
        have = ", ".join(_described(n, str(c.url_prefix)) for n, c in sorted(declared.items()))
        raise UsageError(
            f"--virtual {', '.join(unknown)}: the repository declares no such virtual chunk "
            f"container (it declares: {have or 'none'})"
        )
    out = []
    for name, container in sorted(declared.items(), key=lambda item: str(item[1].url_prefix)):
        prefix = str(container.url_prefix)
        grant = by_prefix.get(_normal(prefix))
        store = _SCHEMES.get(prefix.partition("://")[0].lower(), "unknown")
        out.append(
            {
                "name": name,
                "prefix": prefix,
                "store": store if "://" in prefix else "invalid (not a URL: ignored)",
                "authorized": grant is not None,
                "access": (grant.access or "yes") if grant else None,
            }
        )
    return out


def _described(name: str, prefix: str) -> str:
    return prefix if _normal(name) == _normal(prefix) else f"{prefix} (named {name})"


#: Icechunk's refusal of an unauthorized container, by prefix (and name, for a container
#: declared by name: "resolves to the url prefix s3://testbucket/ (container: s3), ...")
_UNAUTHORIZED: Final = re.compile(
    r"resolves to the url prefix (\S+?)(?: \(container: ([^)]*)\))?, to be able to fetch"
)


def authorize_hint(prefix: str) -> str:
    """The option that authorizes the container *prefix*."""
    takes_access = _SCHEMES.get(prefix.partition("://")[0].lower()) not in ("local", "http")
    return f"--virtual {prefix}" + ("[=ACCESS]" if takes_access else "")


def unauthorized_prefix(message: str) -> tuple[str, str] | None:
    """The container an Icechunk error says is not authorized: (URL prefix, name or '')."""
    found = _UNAUTHORIZED.search(message)
    return (found.group(1), found.group(2) or "") if found else None
