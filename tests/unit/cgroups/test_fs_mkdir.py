"""`oci.cgroups.fs.mkdir_p`: what it creates, what it reports, its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci.cgroups import CgroupError, fs


def test_mkdir_p_new_leaf_existing_and_missing_parents(tmp_path: Path) -> None:
    leaf = tmp_path / "c1"
    assert fs.mkdir_p(leaf) == [leaf]
    assert leaf.is_dir()
    assert fs.mkdir_p(leaf) == []  # already there: nothing created (nothing to roll back)
    deep = tmp_path / "a" / "b" / "c"
    assert fs.mkdir_p(deep) == [tmp_path / "a", tmp_path / "a" / "b", deep]
    assert deep.is_dir()


def test_mkdir_p_error_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CgroupError, match=r"mkdir .*file/c1"):
        fs.mkdir_p(tmp_path / "file" / "c1")
