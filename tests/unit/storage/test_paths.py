from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import PermissionDenied
from agent.storage.paths import StorageRoots, confine, ensure_dir


@pytest.fixture
def roots(tmp_path: Path) -> StorageRoots:
    run = tmp_path / "run"
    run.mkdir()
    return StorageRoots(run)


def test_inside_is_accepted(roots: StorageRoots) -> None:
    p = confine(roots, str(roots.sandbox_dir / "shm"), what="s")
    assert p == Path(os.path.realpath(roots.run_dir)) / "sandbox" / "shm"


@pytest.mark.parametrize("bad", ["", "relative/x", "/etc", "/", "RUN", "RUN/../x", "RUN/a/../../x"])
def test_outside_is_rejected(roots: StorageRoots, bad: str) -> None:
    req = bad.replace("RUN", str(roots.run_dir))
    with pytest.raises(PermissionDenied):
        confine(roots, req, what="storage x")


def test_run_dir_itself_is_rejected(roots: StorageRoots) -> None:
    with pytest.raises(PermissionDenied, match="outside the allowed directories"):
        confine(roots, str(roots.run_dir), what="s")


def test_symlink_escape_is_rejected(roots: StorageRoots, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (roots.run_dir / "sandbox").mkdir()
    (roots.run_dir / "sandbox" / "evil").symlink_to(outside)
    with pytest.raises(PermissionDenied, match="leads outside"):
        ensure_dir(roots, str(roots.run_dir / "sandbox" / "evil" / "vol"), what="s")
    assert not (outside / "vol").exists()


def test_ensure_dir_creates(roots: StorageRoots) -> None:
    with ensure_dir(roots, str(roots.run_dir / "shared" / "containers" / "c1"), what="s") as p:
        assert p.path.is_dir()
