from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icefs.errors import InvalidInput, NameTooLong
from icefs.paths import check_name, join_key, name_to_ref, ref_to_name


@given(st.text(min_size=1, max_size=60))
def test_ref_names_round_trip(ref):
    name = ref_to_name(ref)
    if name is None:
        return
    assert "/" not in name
    assert "\0" not in name
    assert name_to_ref(name) == ref


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("main", "main"),
        ("feature/x", "feature%2Fx"),
        ("50%", "50%25"),
        ("a%2Fb", "a%252Fb"),
    ],
)
def test_ref_name_escaping(ref, name):
    assert ref_to_name(ref) == name
    assert name_to_ref(name) == ref


@pytest.mark.parametrize("ref", ["", ".", "..", "x" * 300])
def test_refs_that_cannot_be_file_names(ref):
    assert ref_to_name(ref) is None


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b", "\udcff"])
def test_check_name_rejects(bad):
    with pytest.raises(InvalidInput):
        check_name(bad)


def test_check_name_too_long():
    with pytest.raises(NameTooLong):
        check_name("é" * 128)
    assert check_name("x" * 255) == "x" * 255


def test_join_key():
    assert join_key("", "zarr.json") == "zarr.json"
    assert join_key("a/b", "c") == "a/b/c"
