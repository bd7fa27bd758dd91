"""What a branch's status says, and why a branch cannot be deleted or reset now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icefs.fs.branch import BranchState

__all__ = ["kept_because", "status"]


def kept_because(state: BranchState, *, scratch: bool = True) -> str:
    """Say what in this mount keeps the branch from being deleted (or reset: *scratch*
    False, since scratch files survive a reset), in status's words; "nothing" if nothing."""

    def listed(kind: str) -> list[str]:
        return sorted(
            k
            for k, f in state.shown_files()
            if (
                f.scratch
                if kind == "scratch"
                else f.pending
                if kind == "pending"
                else not (f.scratch or f.pending)
            )
        )

    reasons = []
    if state.dirty:
        reasons.append("it has uncommitted changes (commit or discard them)")
    for kind, field_name, what in (
        ("open", "files_being_written", "files being written"),
        ("pending", "pending_chunks", "chunks waiting for their array's zarr.json"),
        (
            "scratch",
            "scratch_files",
            "scratch files, which live only in this mount and are never committed (delete them)",
        ),
    ):
        names = listed(kind) if scratch or kind != "scratch" else []
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            reasons.append(f"it holds {what}: {shown} (status: {field_name})")
    return "; ".join(reasons) or "nothing"


async def status(state: BranchState) -> dict[str, Any]:
    """Return the write-related part of the branch's status document."""
    # The counts need the session, which a commit holds until it ends (for minutes, if
    # the storage hangs): status answers at once, without them, while one is in flight.
    committing = state.committing
    counts = await state.writer.counts() if state.writer and not committing else None
    return {
        "has_uncommitted_changes": state.dirty,
        "commit_in_progress": committing,
        "changed_nodes": counts.nodes if counts else 0,
        "changed_chunks": counts.chunks if counts else 0,
        "changed_paths": list(counts.paths) if counts else [],
        **state.leftovers(),
        "files_being_written": sorted(
            k for k, f in state.shown_files() if not f.scratch and not f.pending
        ),
        "empty_directories": sorted(state.dirs),
        "recovered_from_journal": state.recovered,
        "lost_at_crash": state.lost_at_crash,
        "uncommitted_since": state.uncommitted_since(),
        "last_commit": state.last_commit,
        "last_reset": state.last_reset,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
        "last_error_path": state.last_error_path,
        "conflicts": state.conflicts,
        "background_stores": sorted(state.uploading),
        "failed_background_stores": sorted(
            k for k, f in state.files.items() if f.upload_error is not None
        ),
    }
