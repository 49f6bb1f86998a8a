"""The README's guest commands exactly as a newcomer types them, from the repository root:
``make vm`` (relative BUILD), then, while it runs, a container rootfs copied into the share and
``kata-agent-ctl run`` on ``build/vm/agent.sock`` with another tool connected at the same time;
Ctrl-C stops the VM and nothing is left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hv.vm import running_pid
from tests.support.rootfs import make_busybox_rootfs

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
RUNDIR = REPO / "build" / "vm"


def _ctl() -> list[str]:
    script = REPO / ".venv" / "bin" / "kata-agent-ctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.ctl"]


def _wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if wanted in line:
            return seen
    raise AssertionError(f"make vm did not print {wanted!r}; it printed:\n{seen}")


def test_make_vm_as_the_readme_says(guest_image: dict[str, Any], tmp_path: Path) -> None:
    state = RUNDIR / "vm.json"
    if state.exists() and running_pid(json.loads(state.read_text()).get("qemu_pid")):
        pytest.skip(f"a VM started by make vm runs in {RUNDIR}; not touching it")
    make = subprocess.Popen(
        ["make", "vm"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group, as a terminal's Ctrl-C signals it
    )
    demo = RUNDIR / "shared" / "demo"
    try:
        printed = _wait_for_line(make, "Ctrl-C stops the VM", timeout=400)
        assert "sandbox created; build/vm/shared/ is" in printed
        info = json.loads(state.read_text())

        rootfs_dir = tmp_path / "rootfs"
        make_busybox_rootfs(rootfs_dir)
        subprocess.run(
            f"mkdir -p build/vm/shared/demo && cp -a {rootfs_dir} build/vm/shared/demo/rootfs",
            shell=True,
            cwd=REPO,
            check=True,
        )
        addr = "unix://build/vm/agent.sock"
        other = subprocess.Popen(
            [*_ctl(), "--addr", addr, "--timeout", "600", "call", "GetOOMEvent"],  # parks
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            run = subprocess.run(
                [
                    *_ctl(),
                    "--addr",
                    addr,
                    "run",
                    "--rootfs",
                    "/run/kata-containers/shared/containers/demo/rootfs",
                    "--",
                    "sh",
                    "-c",
                    "echo hi; exit 4",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            check = subprocess.run(
                [*_ctl(), "--addr", addr, "check"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert other.poll() is None, "the parked call of the other tool ended"
        finally:
            other.kill()
            other.wait()
        assert run.stdout == "hi\n", run.stderr
        assert run.returncode == 4
        assert '"SERVING"' in check.stdout, check.stderr
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        try:
            rest, _ = make.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            rest, _ = make.communicate()
        shutil.rmtree(demo, ignore_errors=True)
    assert not state.exists(), rest
    for key in ("qemu_pid", "virtiofsd_pid"):
        assert running_pid(info.get(key)) is None, f"{key} still runs after Ctrl-C"
    assert not (RUNDIR / "agent.sock").exists()
