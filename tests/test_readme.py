"""README.md's worked example runs as written against a real mount."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import icechunk

from icefs.store.sample import build_sample, sample_storage

README = Path(__file__).resolve().parent.parent / "README.md"


def worked_example() -> str:
    text = README.read_text()
    section = text[text.index("### Worked example") :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_branches_and_tags_worked_example(tmp_path, mount_factory):
    repo = tmp_path / "repo"
    build_sample(icechunk.Repository.create(sample_storage(str(repo))), times=2, lat=4, lon=4)
    m = mount_factory(repo)
    script = worked_example().replace("/mnt/ice", str(m.mountpoint))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"note": "tried on dev"' in result.stdout
    assert "annotate on dev" in result.stdout
    repository = icechunk.Repository.open(sample_storage(str(repo)))
    assert "dev" not in repository.list_branches()
    tagged = repository.readonly_session(tag="v1.1").store
    import zarr

    assert zarr.open_group(tagged, mode="r").attrs["note"] == "tried on dev"
    assert json.loads((m.mountpoint / "tags/v1.1/.icefs/status").read_text())["kind"] == "tag"
