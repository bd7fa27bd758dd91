"""Many machines, one repository: the short profile of benchmarks/machines.py (CI).

Four daemons with their own cache directories commit disjoint chunks of one branch
on the S3 server every second, while a read-only mount watches the branch. Nothing
acknowledged may be lost, every chunk written must be in the final snapshot, the
reader must see every commit, and overlapping chunks must give EBUSY naming the
conflict. Timings are printed, never asserted.
"""

from __future__ import annotations

import pytest

from benchmarks.machines import run

pytestmark = pytest.mark.fuse


def test_four_daemons_commit_to_one_branch(s3_server, tmp_path, capsys):
    result = run(s3_server, tmp_path, seconds=12, daemons=4, refresh=0.5)
    with capsys.disabled():
        print("\n" + result.table())
    assert not result.failures, result.failures
    assert len(result.acknowledged) == 4 * 12
    assert not result.lost, f"{len(result.lost)} acknowledged commits are not on main"
    assert not result.missing, result.missing
    assert result.unseen == 0, "the reading mount never saw some commits"
    outcomes = result.conflict.split(" / ")
    assert sorted(o.split(":")[0] for o in outcomes) == ["EBUSY", "committed"], result.conflict
    assert "shared" in result.conflict, "the conflict names the chunk's array"
