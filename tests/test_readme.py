"""The worked examples of the README and the manual run as written against a real mount.

A shell block right after ``<!-- runs in tests/test_readme.py: NAME -->`` in
README.md or docs/*.md is one example. Each runs with bash (-euo pipefail) on a
fresh mount of the sample repository, ``/mnt/ice`` standing for the mountpoint;
some have checks of their own below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import icechunk
import pytest
import zarr

from icefs.store.sample import build_sample, sample_storage

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- runs in tests/test_readme\.py: ([\w-]+) -->\n```sh\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    """Every marked example, by name."""
    found: dict[str, str] = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name, script in MARKER.findall(doc.read_text()):
            assert name not in found, f"two examples named {name}"
            found[name] = script
    return found


def test_the_examples_are_found():
    assert "branches-and-tags" in examples()


def checks_branches_and_tags(repo: Path, mnt: Path, out: str) -> None:
    assert '"note": "tried on dev"' in out
    assert "annotate on dev" in out
    repository = icechunk.Repository.open(sample_storage(str(repo)))
    assert "dev" not in repository.list_branches()
    tagged = repository.readonly_session(tag="v1.1").store
    assert zarr.open_group(tagged, mode="r").attrs["note"] == "tried on dev"
    assert json.loads((mnt / "tags/v1.1/.icefs/status").read_text())["kind"] == "tag"


def checks_history(repo: Path, mnt: Path, out: str) -> None:
    assert "ticket=OPS-12" in out
    assert "chunks: (0,0,0) (0,0,1)" in out
    assert "branch_reset  name=main" in out
    repository = icechunk.Repository.open(sample_storage(str(repo)))
    bad, good = (line.split()[0] for line in out.splitlines()[1:5:2])
    assert repository.lookup_branch("main") == good
    assert next(repository.ancestry(snapshot_id=bad)).message == "recalibrate sensor 3"
    tip = zarr.open_array(repository.readonly_session(branch="main").store, path="temperature")
    assert tip[:].min() > -100
    assert zarr.open_array(str(mnt / "branches/main/temperature"))[:].min() > -100


def checks_legacy(repo: Path, mnt: Path, out: str) -> None:
    assert "float temperature(time, lat, lon) ;" in out  # ncdump -h
    assert re.search(r"temperature =\s*\n\s*-?\d", out), "ncdump -v prints values"
    assert "Driver: Zarr/Zarr" in out  # gdalinfo
    assert "temperature (2, 4, 4) float32" in out  # zarr 2's tree()
    assert "Dimensions:" in out  # xarray
    assert (repo.parent / "t0.tif").stat().st_size > 0


CHECKS = {
    "branches-and-tags": checks_branches_and_tags,
    "history": checks_history,
    "legacy": checks_legacy,
}
#: Where an example finds its `python`: zarr-python 2 for the legacy example.
PYTHONS = {"legacy": ROOT / ".tools" / "zarr2" / "bin"}


@pytest.mark.parametrize("name", sorted(examples()))
def test_example(name, tmp_path, mount_factory):
    repo = tmp_path / "repo"
    build_sample(icechunk.Repository.create(sample_storage(str(repo))), times=2, lat=4, lon=4)
    m = mount_factory(repo)
    script = examples()[name].replace("/mnt/ice", str(m.mountpoint))
    python = PYTHONS.get(name, Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{python}:{os.environ['PATH']}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    if name in CHECKS:
        CHECKS[name](repo, m.mountpoint, result.stdout)
