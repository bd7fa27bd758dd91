"""The query files (``log``, ``diff``, the root's ``ops``): JSON requests, JSON answers.

A query file opened for writing (`Query`) answers the JSON request written to it
with a JSON document read back from the same descriptor; read plainly, it shows
the default answer as text (`texts`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from icefs.errors import IcefsError, InvalidInput
from icefs.fs import controltext
from icefs.store import history

if TYPE_CHECKING:
    from icefs.fs.handles import Query
    from icefs.fs.refs import RefTable
    from icefs.fs.values import Node, View
    from icefs.store import Repo

__all__ = ["MAX_REQUEST", "Queries", "json_request"]

#: The largest JSON request a query or reset file takes.
MAX_REQUEST: Final = 64 << 10


class Queries:
    """Answers the query files of the root and of each view, from the repository's history."""

    def __init__(self, repo: Repo, refs: RefTable) -> None:
        self._repo = repo
        self._refs = refs

    async def ask(self, handle: Query, data: bytes) -> int:
        """Answer the JSON request *data* written to the query file of *handle*.

        A refused request is also the root status's `last_error` (for ``icefs``'s message).
        """
        try:
            return await self._ask(handle, data)
        except IcefsError as exc:
            self._refs.note_error(f"{'/'.join(handle.node.path)}: {exc}")
            raise

    async def _ask(self, handle: Query, data: bytes) -> int:
        request = json_request(data)
        node = handle.node
        limit = request.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidInput('"limit" must be a positive integer')
        answer: object
        if node.ctrl == "ops":
            answer = await history.operations(self._repo, limit)
        elif node.ctrl == "log":
            answer = await self._log(node, request, limit)
        else:
            answer = await self._diff(node, request)
        handle.answer = (json.dumps(answer, indent=2, sort_keys=True) + "\n").encode()
        return len(data)

    async def _log(
        self, node: Node, request: dict[str, Any], limit: int | None
    ) -> list[dict[str, Any]]:
        """The page of the history *request* asks for: at most *limit* snapshots, from the
        view's snapshot or from the one after ``"after"`` (the last of the page before)."""
        assert node.view is not None
        after = request.get("after")
        if after is not None and not isinstance(after, str):
            raise InvalidInput('"after" is a snapshot id or a ref name')
        start = await self._refs.resolve(after) if after else node.view.snapshot_id
        skip = 1 if after else 0
        metas = await self._repo.ancestry(start, limit=None if limit is None else limit + skip)
        return [history.snapshot_doc(m) for m in metas[skip:]]

    async def _diff(self, node: Node, request: dict[str, Any]) -> dict[str, Any]:
        assert node.view is not None
        names = {k: request.get(k) for k in ("from", "to")}
        if any(v is not None and not isinstance(v, str) for v in names.values()):
            raise InvalidInput('"from" and "to" are ref names or snapshot ids')
        to = await self._refs.resolve(names["to"]) if names["to"] else node.view.snapshot_id
        start = await self._refs.resolve(names["from"]) if names["from"] else None
        return await history.diff(self._repo, start, to, chunks=bool(request.get("chunks")))

    # -- read plainly ------------------------------------------------------------------------

    async def operations_text(self) -> bytes:
        return controltext.render_operations(await history.operations(self._repo))

    async def log_text(self, view: View) -> bytes:
        """One page of the view's history: one of 100k snapshots is not read at once."""
        metas = await self._repo.ancestry(view.snapshot_id, limit=controltext.LOG_PAGE + 1)
        page = controltext.render_log(
            [history.snapshot_doc(m) for m in metas[: controltext.LOG_PAGE]]
        )
        if len(metas) > controltext.LOG_PAGE:
            page += controltext.more_log(metas[controltext.LOG_PAGE - 1].id)
        return page

    async def diff_text(self, view: View) -> bytes:
        return controltext.render_diff(await history.diff(self._repo, None, view.snapshot_id))


def json_request(data: bytes) -> dict[str, Any]:
    """The JSON object *data* holds (an empty write asks the default question)."""
    if len(data) > MAX_REQUEST:
        raise InvalidInput(f"request larger than {MAX_REQUEST} bytes")
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidInput(f"not a JSON request: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("a request is a JSON object")
    return doc
