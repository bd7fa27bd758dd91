"""BranchFiles: what lives only in the mount for a branch, changed by named operations."""

from __future__ import annotations

from icefs.fs.branchfiles import BranchFiles
from icefs.fs.files import OverlayFile
from icefs.fs.spool import SpoolBudget, SpoolFile


def overlay(budget: SpoolBudget, scratch: bool = False) -> OverlayFile:
    return OverlayFile(SpoolFile(budget), scratch=scratch)


def test_keep_and_drop_answer_for_the_file_they_replace(tmp_path):
    budget = SpoolBudget(1 << 20, str(tmp_path))
    local, a, b = BranchFiles(), overlay(budget), overlay(budget)
    assert local.keep("x/c/0", a) is None
    assert local.keep("x/c/0", a) is None, "keeping the same file replaces nothing"
    assert local.keep("x/c/0", b) is a
    assert local.drop("x/c/0", a) is None, "only the file held is dropped"
    assert local.files == {"x/c/0": b}
    assert local.drop("x/c/0") is b
    assert local.files == {}


def test_discard_keeps_scratch_files_and_unmount_drops_all(tmp_path):
    budget = SpoolBudget(1 << 20, str(tmp_path))
    local = BranchFiles()
    written, scratch = overlay(budget), overlay(budget, scratch=True)
    local.keep("a/c/0", written)
    local.keep("notes.txt", scratch)
    assert local.drop_written() == [written]
    assert local.files == {"notes.txt": scratch}
    assert local.drop_all() == [scratch]
    assert local.files == {}


def test_moves_carry_what_lives_below_and_stamps(tmp_path):
    budget = SpoolBudget(1 << 20, str(tmp_path))
    local, f = BranchFiles(), overlay(budget, scratch=True)
    local.make_dir("g/empty", 5)
    local.make_dir("h", 6)  # an empty directory the move replaces
    local.keep("g/notes.txt", f)
    local.move_below("g", "h")
    assert local.dirs == {"h/empty": 5}
    assert local.files == {"h/notes.txt": f}
    local.give("a", 0o600, 1, 2)
    local.restamp("a/x", mode=0o100644, uid=None, gid=None, atime_ns=None, mtime_ns=7)
    local.give("b", 0o700, 3, 4)  # the target's own attributes do not survive the move
    local.move_stamps("a", "b")
    assert local.stamp_of("a") is None
    stamp = local.stamp_of("b")
    assert stamp is not None
    assert (stamp.mode, stamp.uid, stamp.gid) == (0o600, 1, 2)
    moved = local.stamp_of("b/x")
    assert moved is not None
    assert (moved.mode, moved.mtime_ns) == (0o644, 7), "permission bits only"
    local.give("c", 0o640, 5, 6)
    local.move_stamps("nothing-set-here", "c")
    assert local.stamp_of("c") is None, "a renamed file does not take the replaced one's mode"
    local.written("b/x")
    assert moved.mtime_ns == 0, "a write supersedes a time set before it"


def test_directories_above_a_stored_key_exist_in_the_session():
    local = BranchFiles()
    for key in ("a", "a/b", "z"):
        local.make_dir(key, 1)
    local.drop_dirs_above("a/b/c/0")
    assert local.dirs == {"z": 1}


def test_background_stores_end_only_for_the_file_that_started(tmp_path):
    budget = SpoolBudget(1 << 20, str(tmp_path))
    local, a, b = BranchFiles(), overlay(budget), overlay(budget)
    local.upload_started("k", a)
    local.upload_started("k", b)  # written and closed again: the newer store
    local.upload_ended("k", a)
    assert local.uploading == {"k": b}
    local.upload_ended("k", b)
    assert local.uploading == {}
