"""kata-agent-hv as a process, without booting a guest: the remote hypervisor protocol's answers
to bad input and its bookkeeping (state directories, stale processes, shutdown)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.rpc.pb import hypervisor_pb2 as pb
from agent.rpc.status import Code, RpcError
from hv.config import MEMORY_ANNOTATION, VCPUS_ANNOTATION
from tests.support.hv import REPO, HvProcess, start_hv


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """An image.json the service accepts (no test here boots it)."""
    (tmp_path / "vmlinux").write_bytes(b"not a kernel")
    (tmp_path / "image.json").write_text(json.dumps({"kernel": "vmlinux", "initrd": None}))
    return tmp_path


@pytest.fixture
def hv(build: Path) -> Iterator[HvProcess]:
    service = start_hv(build)
    try:
        yield service
    finally:
        service.stop()
        service.remove()


async def _error(hv: HvProcess, method: str, request: object) -> RpcError:
    with pytest.raises(RpcError) as err:
        await hv.call(method, request)
    return err.value


async def test_version(hv: HvProcess) -> None:
    resp = await hv.call("Version", pb.VersionRequest(version="0.0.1"))
    from agent import __version__

    assert resp.version == __version__


async def test_start_and_stop_of_an_unknown_sandbox(hv: HvProcess) -> None:
    for method in ("StartVM", "StopVM"):
        err = await _error(hv, method, getattr(pb, f"{method}Request")(id="nosuch"))
        assert err.code == Code.NOT_FOUND
        assert "sandbox 'nosuch': no VM (CreateVM was not called for it)" in err.message


@pytest.mark.parametrize("bad", ["", "../../etc", "a/b", "-rf"])
async def test_create_vm_refuses_ids_that_are_no_sandbox_ids(hv: HvProcess, bad: str) -> None:
    err = await _error(hv, "CreateVM", pb.CreateVMRequest(id=bad))
    assert err.code == Code.INVALID_ARGUMENT
    assert "sandbox id" in err.message
    assert list(hv.state_dir.iterdir()) == []


async def test_create_vm_refuses_a_vm_size_it_cannot_honour(hv: HvProcess) -> None:
    err = await _error(
        hv, "CreateVM", pb.CreateVMRequest(id="s1", annotations={VCPUS_ANNOTATION: "lots"})
    )
    assert err.code == Code.INVALID_ARGUMENT
    assert VCPUS_ANNOTATION in err.message
    err = await _error(
        hv, "CreateVM", pb.CreateVMRequest(id="s1", annotations={MEMORY_ANNOTATION: "-1"})
    )
    assert f"{MEMORY_ANNOTATION}=-1: must not be negative" in err.message


async def test_create_then_stop_twice(hv: HvProcess) -> None:
    resp = await hv.call(
        "CreateVM",
        pb.CreateVMRequest(id="s1", annotations={VCPUS_ANNOTATION: "2", MEMORY_ANNOTATION: "300"}),
    )
    assert resp.agentSocketPath == str(hv.state_dir / "s1" / "agent.sock")
    assert (hv.state_dir / "s1").is_dir()
    err = await _error(hv, "CreateVM", pb.CreateVMRequest(id="s1"))
    assert err.code == Code.ALREADY_EXISTS
    await hv.call("StopVM", pb.StopVMRequest(id="s1"))  # never started: nothing to stop
    assert not (hv.state_dir / "s1").exists()
    err = await _error(hv, "StopVM", pb.StopVMRequest(id="s1"))
    assert err.code == Code.NOT_FOUND
    assert "its VM was stopped already" in err.message
    err = await _error(hv, "StartVM", pb.StartVMRequest(id="s1"))
    assert err.code == Code.NOT_FOUND
    created = next(r for r in hv.logs() if r.get("msg") == "VM created")
    assert (created["vcpus"], created["memory_mb"]) == (2, 300)
    assert created["caller_pid"] == os.getpid()


async def test_start_vm_after_the_caller_of_create_vm_exited(hv: HvProcess) -> None:
    """The shim's mount namespace (where the container root filesystems are) is gone with it: a
    clear error before anything starts."""
    shim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.vm.runtime_shim",  # CreateVM from its own process, which then exits
        str(hv.socket),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await shim.communicate(b"create orphan 1 512\n")
    assert shim.returncode == 0
    assert json.loads(out)["agentSocketPath"].endswith("/orphan/agent.sock")
    err = await _error(hv, "StartVM", pb.StartVMRequest(id="orphan"))
    assert err.code == Code.FAILED_PRECONDITION
    assert "the process that called CreateVM" in err.message
    assert "has exited" in err.message
    await hv.call("StopVM", pb.StopVMRequest(id="orphan"))
    assert list(hv.state_dir.iterdir()) == []


async def test_shutdown_removes_what_created_vms_hold(hv: HvProcess) -> None:
    for i in range(3):
        await hv.call("CreateVM", pb.CreateVMRequest(id=f"s{i}"))
    assert hv.stop() == 0
    assert list(hv.state_dir.iterdir()) == []
    assert not hv.socket.exists()


def test_stale_processes_of_a_killed_service_are_stopped_at_start(build: Path) -> None:
    """A service killed with SIGKILL leaves its VMs; the next run stops what its state files name
    (only processes that are still QEMU or virtiofsd) and removes their directories."""
    fake_bin = build / "bin"
    fake_bin.mkdir()
    os.symlink("/bin/sleep", fake_bin / "virtiofsd")
    leftover = subprocess.Popen([str(fake_bin / "virtiofsd"), "300"], start_new_session=True)
    innocent = subprocess.Popen(["sleep", "300"], start_new_session=True)
    first = start_hv(build)
    try:
        first.stop()
        stale = first.state_dir / "old"
        stale.mkdir(parents=True)
        (stale / "vm.json").write_text(
            json.dumps({"virtiofsd_pid": leftover.pid, "qemu_pid": innocent.pid})
        )
        second = start_hv(build, workdir=first.workdir)
        try:
            assert leftover.wait(timeout=10) == -9
            assert innocent.poll() is None
            assert not stale.exists()
        finally:
            second.stop()
            second.remove()
    finally:
        innocent.kill()
        innocent.wait()
        leftover.kill()
        leftover.wait()
        first.remove()


def test_no_image_stops_the_service_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hv", "--socket", str(tmp_path / "s"), "--build", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{tmp_path}/image.json missing (run `make image` first)" in done.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "kata-agent-hv"
    if not script.exists():
        pytest.skip("the project is not installed in this interpreter's environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "--socket" in done.stdout
