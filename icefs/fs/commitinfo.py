"""What a commit records: its message, the user's metadata, and who and where made it.

The bytes written to ``<branch>/.icefs/commit`` are either the message itself,
or a JSON object with a ``message`` key::

    {"message": "...", "metadata": {"key": value, ...}}

Anything else, text starting with ``{`` included, is a plain message.
(``icefs commit -m MSG --meta KEY=VALUE`` writes that form).  One write carries
both, so nothing else can slip between the metadata and its commit.  Every
commit made through icefs also records `SIGNATURE_KEYS`: the user who wrote the
commit file, the host, the mountpoint and the icefs version.  Those keys, and
Icechunk's own, cannot be set by hand.
"""

from __future__ import annotations

import json
import pwd
import socket
from dataclasses import dataclass, field
from typing import Any, Final

from icefs import __version__
from icefs.errors import InvalidInput
from icefs.store.repo import TOKEN_KEY

__all__ = ["MAX_COMMIT_REQUEST", "SIGNATURE_KEYS", "CommitRequest", "parse_request", "signature"]

#: The largest commit file content accepted (message and metadata together).
MAX_COMMIT_REQUEST: Final = 64 << 10
#: Metadata keys icefs writes into every commit it makes.
SIGNATURE_KEYS: Final = ("committed_by", "host", "mountpoint", "icefs_version")


@dataclass(frozen=True, slots=True)
class CommitRequest:
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _json_object(text: str) -> dict[str, Any] | None:
    """*text* as a JSON object, if it is one."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_request(data: bytes) -> CommitRequest:
    """The commit *data* asks for; `InvalidInput` naming what is wrong with it."""
    if len(data) > MAX_COMMIT_REQUEST:
        raise InvalidInput(f"commit request larger than {MAX_COMMIT_REQUEST} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the commit message is not UTF-8 text") from None
    doc = _json_object(text)
    if doc is None or "message" not in doc:  # plain text, even if it starts with "{"
        if not text.strip():
            raise InvalidInput("empty commit message")
        return CommitRequest(text.strip())
    if set(doc) - {"message", "metadata"}:
        raise InvalidInput('a JSON commit request has only "message" and "metadata"')
    message, metadata = doc.get("message"), doc.get("metadata", {})
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput('a JSON commit request needs a non-empty "message" string')
    if not isinstance(metadata, dict):
        raise InvalidInput('"metadata" must be a JSON object')
    reserved = sorted(
        k for k in metadata if k in SIGNATURE_KEYS or k == TOKEN_KEY or k.startswith("__")
    )
    if reserved:
        raise InvalidInput(f"metadata keys recorded by icefs cannot be set: {', '.join(reserved)}")
    return CommitRequest(message.strip(), metadata)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def signature(uid: int, mountpoint: str) -> dict[str, Any]:
    """The metadata every commit made by user *uid* through *mountpoint* records."""
    return {
        "committed_by": _user(uid),
        "host": socket.gethostname(),
        "mountpoint": mountpoint,
        "icefs_version": __version__,
    }
