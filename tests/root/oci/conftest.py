"""Fixtures for the engine's root tests (see harness.py)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci.spec import default_spec
from tests.root.oci.harness import Bundle, cgroup_dirs, processes_in_cgroup
from tests.support.rootfs import make_busybox_rootfs


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Bundle]:
    # World-searchable, so a container in a user namespace (mapped to an unprivileged host uid)
    # can still reach its rootfs.
    for p in (tmp_path, *tmp_path.parents):
        if p == Path("/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o711)
    make_busybox_rootfs(tmp_path / "bundle" / "rootfs")
    cfg = default_spec().to_dict()
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    parent = "kata-oci-test-" + uuid.uuid4().hex[:8]
    b = Bundle(tmp_path / "bundle", tmp_path / "state", cfg, parent)
    yield b
    # Teardown: force-delete whatever a failing test left, then remove the cgroup parent.
    for cid in os.listdir(b.root) if b.root.exists() else []:
        b.kata_oci("delete", "--force", cid)
    for pid in processes_in_cgroup(parent):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for d in cgroup_dirs(parent):
        for sub, _, _ in sorted(os.walk(d), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(sub)
