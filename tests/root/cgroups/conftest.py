"""Fixtures for real cgroup tests: a unique parent cgroup per test, removed (with anything left
inside it) even when the test fails, and helper child processes killed after the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from oci.cgroups import CgroupMode, detect_mode, v1_controllers
from tests.root.cgroups.support import UNIFIED, Child, cleanup_tree, leftovers


@pytest.fixture
def parent() -> Iterator[PurePosixPath]:
    """A unique top-level cgroup path; everything below it is removed after the test."""
    if detect_mode() is not CgroupMode.V1:
        pytest.skip("these tests expect the v1/hybrid layout of the dev/CI machines")
    name = f"ocispec-test-{uuid.uuid4().hex[:10]}"
    yield PurePosixPath("/", name)
    for m in set(v1_controllers().values()):
        cleanup_tree(m / name)
    cleanup_tree(UNIFIED / name)
    assert leftovers(name) == [], "cleanup failed"


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.kill()
