"""Kata's bundle layout on real mounts (in a private mount namespace of a child process): the
rootfs bind mount is undone and the bundle removed, and nothing is ever deleted through a mount,
even a same-filesystem bind mount reached through a symlinked run_dir."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from agent.errors import Internal
    from agent.sandbox.bundle import Bundles, remove_tree
    from agent.storage import mountinfo
    from oci.spec import Process, Root, Spec
    from oci.syscalls.linux import LinuxSyscalls

    tmp = Path({tmp!r})
    src = tmp / "image"; src.mkdir(); (src / "keep").write_text("precious")
    real_run = tmp / "real-run"; real_run.mkdir()
    (tmp / "run").symlink_to(real_run)
    bundles = Bundles(tmp / "run", LinuxSyscalls())
    spec = Spec(process=Process(args=("sh",), cwd="/"), root=Root(path="/x"))
    bundle = bundles.create("c1", str(src), spec)
    assert (bundle / "rootfs" / "keep").read_text() == "precious"
    assert (bundle / "config.json").exists()
    # A removal that forgets to unmount must refuse to delete through the bind mount.
    try:
        remove_tree(tmp / "run" / "c1", check_mounts=False)
        print("DELETED-THROUGH-MOUNT")
    except Internal as err:
        print("refused:", err)
    assert (src / "keep").exists()
    bundles.remove("c1")
    print("bundle gone:", not (real_run / "c1").exists())
    print("source kept:", (src / "keep").read_text())
    print("mounts left:", [e.mount_point for e in mountinfo.mounts_below(real_run)])
    """
)


def test_bundle_create_and_remove_never_delete_through_a_mount(tmp_path: Path) -> None:
    script = SCRIPT.format(repo=str(REPO), tmp=str(tmp_path))
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "DELETED-THROUGH-MOUNT" not in out
    assert "refused:" in out
    assert "is a mount point" in out
    assert "bundle gone: True" in out
    assert "source kept: precious" in out
    assert "mounts left: []" in out
    assert (tmp_path / "image" / "keep").read_text() == "precious"
