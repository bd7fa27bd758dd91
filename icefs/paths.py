"""Pure helpers for names and keys: ref names as file names, Zarr keys, validation.

Nothing here does I/O.  Names are ``str`` inside icefs; the FUSE adapter decodes
bytes once with `os.fsdecode` and everything below works on the result.
"""

from __future__ import annotations

import re
from typing import Final

from icefs.errors import InvalidInput, NameTooLong

__all__ = [
    "CONTROL_DIR",
    "METADATA_NAME",
    "NAME_MAX",
    "check_name",
    "check_ref_name",
    "join_key",
    "name_to_ref",
    "ref_to_name",
]

#: The hidden control directory, at the mount root and at the root of each ref view.
CONTROL_DIR: Final = ".icefs"
#: The Zarr v3 metadata document of a group or array.
METADATA_NAME: Final = "zarr.json"
#: Longest file name (in bytes of its encoding) that icefs accepts, as on most filesystems.
NAME_MAX: Final = 255

# Characters a ref name may hold that a file name cannot (or should not) show as is.
# '%' is escaped first so that the mapping is reversible.
_ESCAPES: Final = (("%", "%25"), ("/", "%2F"), ("\0", "%00"))
_UNESCAPES: Final = {escaped: raw for raw, escaped in _ESCAPES}
_UNESCAPE_RE: Final = re.compile("%(?:25|2[fF]|00)")


def ref_to_name(ref: str) -> str | None:
    """Return the file name that shows the branch or tag *ref*, or None if it cannot be shown.

    A '/' in a ref becomes '%2F' and a '%' becomes '%25'.  Refs that would name
    '.', '..', the empty name or a name longer than NAME_MAX are not shown.
    """
    name = ref
    for raw, escaped in _ESCAPES:
        name = name.replace(raw, escaped)
    if name in ("", ".", "..") or len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return None
    return name


def name_to_ref(name: str) -> str:
    """Return the ref shown by the file name *name* (the inverse of `ref_to_name`)."""
    if "%" not in name:
        return name
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group(0).upper()], name)


def check_name(name: str) -> str:
    """Validate one path component *name* and return it.

    Raises `NameTooLong` past NAME_MAX bytes, and `InvalidInput` for the empty
    name, '.', '..', a '/' or a NUL, or bytes that are not valid UTF-8 (Zarr keys
    and Icechunk refs are Unicode text).
    """
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise NameTooLong(f"name longer than {NAME_MAX} bytes")
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidInput(f"invalid name {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"name {name!r} is not valid UTF-8") from None
    return name


def join_key(prefix: str, name: str) -> str:
    """Join a key *prefix* ('' for the root) and a child *name* with '/'."""
    return f"{prefix}/{name}" if prefix else name


def check_ref_name(ref: str) -> str:
    """Validate a new branch or tag name *ref* and return it.

    Icechunk accepts nearly any string; icefs accepts what it can show as a
    directory: not empty, no control characters, no leading or trailing
    spaces, not '.' or '..', at most NAME_MAX bytes once '/' and '%' are
    escaped.  Raises `InvalidInput` saying why.
    """
    if not ref:
        raise InvalidInput("a ref name cannot be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in ref):
        raise InvalidInput(f"ref name {ref!r} holds a control character")
    if ref != ref.strip():
        raise InvalidInput(f"ref name {ref!r} starts or ends with white space")
    try:
        ref.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"ref name {ref!r} is not valid UTF-8") from None
    if ref_to_name(ref) is None:
        raise InvalidInput(f"ref name {ref!r} cannot be shown as a directory name")
    return ref
