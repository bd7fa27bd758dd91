"""Command-line side of storage: the options every command that opens a repository takes.

`add_storage_options` adds them to a parser; `storage_from_args` resolves a
`StorageSpec` (command line > config file > environment) and installs the
log redaction of its secrets.  A daemon started in the background receives
the resolved spec, secrets included, in its environment (`SPEC_ENV`), never
in its argv.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Final

from icefs.cli.exits import ExitCode, QuietError
from icefs.cli.options import add_arguments
from icefs.settings import SETTINGS
from icefs.storage import (
    Secrets,
    StorageSpec,
    parse_storage,
    redact,
    resolve_spec,
)

if TYPE_CHECKING:
    import argparse

__all__ = [
    "SPEC_ENV",
    "add_storage_options",
    "install_redaction",
    "spec_to_env",
    "storage_from_args",
]

log = logging.getLogger(__name__)

#: Environment variable carrying the resolved spec to a background daemon.
SPEC_ENV: Final = "ICEFS_RESOLVED_STORAGE"
_SECRETS_SEEN: list[str] = []


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """Add the storage and credential options (`icefs.settings`, group storage) to *parser*."""
    group = parser.add_argument_group(
        "storage (s3://, gs://, az://; docs/configuration.md)",
        "Secrets are best given in the config file, in the environment or as *-file paths: "
        "a secret on the command line shows in ps.",
    )
    add_arguments(group, "storage")


def _cli_values(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    names = [s.name for s in SETTINGS.values() if s.group == "storage"]
    if isinstance(args, dict):
        return {k: args.get(k) for k in names}
    return {k: getattr(args, k, None) for k in names}


def storage_from_args(
    url: str, args: argparse.Namespace | dict[str, Any], config: dict[str, Any] | None = None
) -> StorageSpec:
    """Resolve the storage at *url* from the command line *args* (a namespace, or the
    settings given there), *config* and the environment."""
    inherited = os.environ.pop(SPEC_ENV, None)
    if inherited:
        spec = spec_from_env(inherited)
    else:
        spec, warnings = resolve_spec(parse_storage(url), _cli_values(args), config or {})
        for warning in warnings:
            print(f"icefs: warning: {warning}", file=sys.stderr)
        if config and config.get("_has_secrets") and config.get("_world_readable"):
            print(
                f"icefs: warning: config file {config.get('_path')} holds secrets and every "
                "user can read it (chmod 600)",
                file=sys.stderr,
            )
    install_redaction(spec.secrets)
    return spec


def spec_to_env(spec: StorageSpec) -> dict[str, str]:
    """Return the environment that hands *spec* to a background daemon."""
    doc = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "secrets"}
    doc["secrets"] = spec.secrets.as_dict()
    return {SPEC_ENV: json.dumps(doc)}


def spec_from_env(text: str) -> StorageSpec:
    doc = json.loads(text)
    secrets = Secrets(**doc.pop("secrets"))
    return StorageSpec(**doc, secrets=secrets)


class _Redactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS_SEEN:
            message = record.getMessage()
            cleaned = redact(message, _SECRETS_SEEN)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_REDACTOR: Final = _Redactor()


def install_redaction(secrets: Secrets) -> None:
    """Remove *secrets* from every log record and from `QuietError` messages from now on."""
    _SECRETS_SEEN.extend(v for v in secrets.values() if v not in _SECRETS_SEEN)
    for handler in logging.getLogger().handlers:
        if _REDACTOR not in handler.filters:
            handler.addFilter(_REDACTOR)


def redact_message(text: str) -> str:
    """Return *text* without any secret seen by this process."""
    return redact(text, _SECRETS_SEEN)


def fail_if_memory(spec: StorageSpec, what: str) -> None:
    if spec.kind == "memory":
        raise QuietError(f"{what}: memory:// exists only inside a mount", ExitCode.USAGE)
