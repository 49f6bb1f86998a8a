"""kata-agent-hv with a real guest: the test plays the Kata runtime's part (remote hypervisor
protocol, then the agent through the socket CreateVM returned), the way containerd-shim-kata-v2
drives it with ``[hypervisor.remote]``.

The CreateVM call comes from a helper in a mount namespace of its own (``tests.vm.runtime_shim``),
which later bind-mounts the container's rootfs into the shared directory there only, as the Kata
shim does: the container runs only if virtiofsd serves the share from that namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.ctl.container_spec import container_spec
from agent.rpc.client import TtrpcClient
from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.pb import hypervisor_pb2 as pb
from agent.rpc.status import Code, RpcError
from hv.shared import GUEST_SHARED
from hv.vm import running_pid
from tests.support.hv import REPO, HvProcess, start_hv
from tests.support.rootfs import make_busybox_rootfs

pytestmark = pytest.mark.vm

BUILD = REPO / "build"


class RuntimeShim:
    """tests.vm.runtime_shim in its own mount namespace."""

    def __init__(self, hv_socket: Path) -> None:
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-m",
                "tests.vm.runtime_shim",
                str(hv_socket),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            text=True,
        )

    def _command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, f"runtime shim exited with {self.proc.wait()}"
        result: dict[str, Any] = json.loads(reply)
        return result

    def create_vm(self, sandbox_id: str, vcpus: int, memory_mb: int) -> Path:
        return Path(self._command(f"create {sandbox_id} {vcpus} {memory_mb}")["agentSocketPath"])

    def bind(self, src: Path, dst: Path) -> None:
        assert self._command(f"bind {src} {dst}") == {"ok": True}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def hv(guest_image: dict[str, Any]) -> Iterator[HvProcess]:
    service = start_hv(BUILD, "--log-rpc", "--keep-logs")
    try:
        yield service
    finally:
        assert service.stop() == 0
        assert _processes_mentioning(service.workdir) == []
        service.remove()


def _processes_mentioning(path: Path) -> list[str]:
    """Command lines of running processes that name something under ``path`` (QEMU and virtiofsd
    name their sockets in the sandbox's state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and "pytest" not in cmdline and "hv --socket" not in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


async def _read_to_eof(client: TtrpcClient, cid: str) -> str:
    out = b""
    while True:
        try:
            chunk = await client.agent.ReadStdout(
                agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=32768), timeout=120
            )
        except RpcError:
            break  # EOF: the process exited and its output is drained
        if not chunk.data:
            break
        out += chunk.data
    return out.decode(errors="replace")


async def test_the_kata_runtime_flow_through_the_remote_hypervisor(
    hv: HvProcess, tmp_path: Path
) -> None:
    sid, cid = f"hv-{uuid.uuid4().hex[:12]}", "c1"
    assert (await hv.call("Version", pb.VersionRequest(version="0.0.1"))).version
    shim = RuntimeShim(hv.socket)
    try:
        agent_sock = shim.create_vm(sid, vcpus=2, memory_mb=640)
        assert agent_sock == hv.state_dir / sid / "agent.sock"
        await hv.call("StartVM", pb.StartVMRequest(id=sid), timeout=300)
        state = json.loads((hv.state_dir / sid / "vm.json").read_text())

        # The rootfs appears in the share only inside the shim's mount namespace.
        staging = tmp_path / "rootfs"
        make_busybox_rootfs(staging)
        target = hv.shared_root / sid / "mounts" / cid / "rootfs"
        target.mkdir(parents=True)
        shim.bind(staging, target)
        assert list(target.iterdir()) == []

        a = await TtrpcClient.connect(f"unix://{agent_sock}", timeout=10)
        b = await TtrpcClient.connect(f"unix://{agent_sock}", timeout=10)
        try:
            checks = await asyncio.gather(
                a.health.Check(health_pb2.CheckRequest(), timeout=60),
                b.health.Check(health_pb2.CheckRequest(), timeout=60),
            )
            assert {c.status for c in checks} == {health_pb2.HealthCheckResponse.SERVING}
            # As the Go runtime calls it for a remote hypervisor: no shared-directory storage.
            await a.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(hostname="hvtest", sandbox_id=sid), timeout=300
            )
            script = "echo hello from $(hostname); nproc; grep MemTotal /proc/meminfo; exit 5"
            spec = container_spec(f"{GUEST_SHARED}{cid}/rootfs", ["sh", "-c", script])
            await a.agent.CreateContainer(
                agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec),
                timeout=300,
            )
            await a.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
            out, waited = await asyncio.gather(
                _read_to_eof(b, cid),
                a.agent.WaitProcess(
                    agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid), timeout=300
                ),
            )
            await a.agent.RemoveContainer(
                agent_pb2.RemoveContainerRequest(container_id=cid, timeout=0), timeout=120
            )
            try:
                await a.agent.DestroySandbox(agent_pb2.DestroySandboxRequest(), timeout=120)
            except RpcError as err:  # the reply races with the guest powering off
                if err.code not in (Code.UNAVAILABLE, Code.CANCELLED):
                    raise
        finally:
            await a.close()
            await b.close()
        await hv.call("StopVM", pb.StopVMRequest(id=sid))
    finally:
        shim.close()

    lines = out.splitlines()
    assert lines[0] == "hello from hvtest", out
    assert lines[1] == "2", f"default_vcpus=2 not honoured: {out}"
    mem_kb = int(lines[2].split()[1])
    assert 512 * 1024 < mem_kb <= 640 * 1024, f"default_memory=640 not honoured: {out}"
    assert waited.status == 5
    for key in ("qemu_pid", "virtiofsd_pid"):
        assert running_pid(state[key]) is None, f"{key} {state[key]} still runs"
    assert _processes_mentioning(hv.state_dir / sid) == []
    # One --log-rpc line per call, from both connections.
    calls = [r for r in hv.logs() if r.get("msg") == "rpc" and r.get("sandbox") == sid]
    methods = {r["method"] for r in calls}
    assert {"/grpc.AgentService/CreateContainer", "/grpc.AgentService/ReadStdout"} <= methods
    assert len({r["connection"] for r in calls}) == 2
    assert all(r["status"] in ("OK", "NOT_FOUND", "UNAVAILABLE") for r in calls), calls
    started = next(r for r in hv.logs() if r.get("msg") == "VM started" and r["sandbox"] == sid)
    assert started["caller_mount_ns"] is True


async def test_a_kernel_qemu_cannot_boot_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"not a kernel")
    (tmp_path / "image.json").write_text(json.dumps({"kernel": "vmlinux", "initrd": None}))
    service = start_hv(tmp_path)
    try:
        await service.call("CreateVM", pb.CreateVMRequest(id="bad-kernel"))
        with pytest.raises(RpcError) as err:
            await service.call("StartVM", pb.StartVMRequest(id="bad-kernel"))
        assert err.value.code == Code.INTERNAL
        assert "QEMU exited" in err.value.message
        assert "qemu.log" in err.value.message
        assert _processes_mentioning(service.workdir) == []
        await service.call("StopVM", pb.StopVMRequest(id="bad-kernel"))  # as the runtime does
    finally:
        assert service.stop() == 0
        service.remove()


async def test_a_guest_that_never_answers_and_a_stop_during_the_boot(
    guest_image: dict[str, Any],
) -> None:
    service = start_hv(
        BUILD,
        "--boot-timeout",
        "15",
        # The agent listens on a port the VM does not have: it boots but never answers.
        "--append",
        "agent.server_addr=serial:///dev/virtio-ports/no.such.port",
        "--keep-logs",
    )
    try:
        await service.call("CreateVM", pb.CreateVMRequest(id="mute"))
        with pytest.raises(RpcError) as err:
            await service.call("StartVM", pb.StartVMRequest(id="mute"))
        assert err.value.code == Code.DEADLINE_EXCEEDED
        assert "did not answer within 15 s" in err.value.message
        assert "console.log" in err.value.message
        assert _processes_mentioning(service.workdir) == []

        await service.call("CreateVM", pb.CreateVMRequest(id="stopped-early"))
        start = asyncio.ensure_future(
            service.call("StartVM", pb.StartVMRequest(id="stopped-early"))
        )
        await asyncio.sleep(3)
        await service.call("StopVM", pb.StopVMRequest(id="stopped-early"))
        with pytest.raises(RpcError) as err:
            await start
        assert err.value.code == Code.FAILED_PRECONDITION
        assert "stopped while the VM was starting (StopVM" in err.value.message
        assert _processes_mentioning(service.workdir) == []
    finally:
        assert service.stop() == 0
        service.remove()
