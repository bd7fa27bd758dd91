"""What a branch's status says, and why a branch cannot be deleted or reset now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icefs.timefmt import render_time

if TYPE_CHECKING:
    from icefs.fs.branch import BranchState
    from icefs.fs.files import OverlayFile

__all__ = ["kept_because", "leftovers", "shown_files", "status", "uncommitted_since"]


def uncommitted_since(state: BranchState) -> str | None:
    """When the uncommitted changes began (their chunks are no older), None if none."""
    writer = state.writer
    if not state.dirty or writer is None or not writer.since_ns:
        return None
    return render_time(writer.since_ns)


def shown_files(state: BranchState) -> list[tuple[str, OverlayFile]]:
    """Every file that lives in the mount for the branch, by the name status gives it:
    its key, or ``zarr2/<v2 key>`` for one written through the Zarr v2 view."""
    zarr2 = state.zarr2_files.of_branch(state.branch) if state.zarr2_files else []
    return [*state.local.files.items(), *zarr2]


def leftovers(state: BranchState) -> dict[str, list[str]]:
    """What unmounting drops without committing: scratch files and pending chunks
    (through either view)."""
    shown = shown_files(state)
    return {
        "scratch_files": sorted(k for k, f in shown if f.scratch),
        "pending_chunks": sorted(k for k, f in shown if f.pending),
    }


def kept_because(state: BranchState, *, scratch: bool = True) -> str:
    """Say what in this mount keeps the branch from being deleted (or reset: *scratch*
    False, since scratch files survive a reset), in status's words; "nothing" if nothing."""

    def listed(kind: str) -> list[str]:
        return sorted(
            k
            for k, f in shown_files(state)
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
        **leftovers(state),
        "files_being_written": sorted(
            k for k, f in shown_files(state) if not f.scratch and not f.pending
        ),
        "empty_directories": sorted(state.local.dirs),
        "recovered_from_journal": state.recovered,
        "lost_at_crash": state.lost_at_crash,
        "uncommitted_since": uncommitted_since(state),
        "last_commit": state.last_commit,
        "last_reset": state.last_reset,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
        "last_error_path": state.last_error_path,
        "conflicts": state.conflicts,
        "background_stores": sorted(state.local.uploading),
        "failed_background_stores": sorted(
            k for k, f in state.local.files.items() if f.upload_error is not None
        ),
    }
