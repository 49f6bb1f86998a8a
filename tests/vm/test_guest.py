"""End to end in a real VM: the agent as the guest's init, driven over its wire API.

The tests share one booted guest and one agent connection and run in file order, like a
sandbox's life: health, guest details, the debug console, PID 1's work, CreateSandbox with the
virtio-fs share, a container and an exec, DestroySandbox, and the guest powering itself off.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError
from tests.vm.guest import GUEST_SHARED, GuestAgent, console_run, shared_storage

pytestmark = pytest.mark.vm

SANDBOX_ID = f"vm-{uuid.uuid4().hex[:12]}"


def test_check_answers_serving(agent: GuestAgent) -> None:
    assert agent.check().status == health_pb2.HealthCheckResponse.SERVING


def test_guest_details_report_an_init_daemon(agent: GuestAgent) -> None:
    resp = agent.call(
        "GetGuestDetails",
        agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True),
    )
    assert resp.agent_details.init_daemon is True
    assert resp.agent_details.version
    assert resp.mem_block_size_bytes > 0


def test_debug_console_runs_a_command(guest: Any) -> None:
    out = console_run(guest, "echo hello-from-$((6*7)); id -u")
    assert "hello-from-42" in out
    assert "\n0\n" in out


def test_debug_console_on_the_serial_console(guest: Any) -> None:
    """agent.debug_console with no vport: a root shell on /dev/console (ttyS0)."""
    out = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(guest.serial_sock))
        s.settimeout(1.0)
        s.sendall(b"\necho serial-$((20+3))\n")
        deadline = time.monotonic() + 60
        while b"serial-23" not in out and time.monotonic() < deadline:
            try:
                out += s.recv(65536)
            except TimeoutError:
                s.sendall(b"\n")
    assert b"serial-23" in out, out[-2000:]


def test_pid1_prepared_the_guest(guest: Any) -> None:
    out = console_run(
        guest,
        "grep -c '^cgroup2 /sys/fs/cgroup cgroup2' /proc/mounts;"
        " cat /sys/fs/cgroup/cgroup.subtree_control; readlink /dev/virtio-ports/agent.channel.0;"
        " cat /sys/class/net/lo/flags; hostname",
    )
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    assert "1" in lines, f"no cgroup2 on /sys/fs/cgroup: {out}"
    assert any("memory" in ln.split() and "pids" in ln.split() for ln in lines), out
    assert any(ln.startswith("../vport") for ln in lines), out
    flags = next(ln for ln in lines if ln.startswith("0x"))
    assert int(flags, 16) & 1, f"lo is not up: {flags}"
    assert "localhost" in lines, out


def test_pid1_opened_the_channel_first(guest: Any) -> None:
    """agent.boot.init opened the serial port and served Check before the agent was imported;
    the asyncio server adopted the port (it never opened it itself), and the mounts it made
    first are not mounted a second time by pid1's later steps."""
    records = []
    for line in guest.console_log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    ready = next(r for r in records if r.get("msg") == "pid1 ready")
    assert ready["channel_open_uptime"] is not None, ready
    assert ready["exec_uptime"] < ready["channel_open_uptime"] <= ready["uptime"], ready
    assert any(r.get("msg") == "ttrpc server listening" for r in records)
    assert not any(r.get("msg") == "serial port opened" for r in records), "port not adopted"
    out = console_run(
        guest,
        'for t in proc sysfs devtmpfs devpts; do echo $t=$(grep -c " $t " /proc/mounts); done',
    )
    for fstype in ("proc", "sysfs", "devtmpfs", "devpts"):
        assert f"{fstype}=1" in out, out


def test_pid1_reaps_orphans(guest: Any) -> None:
    # Each `( ... &)` leaves an orphan that the kernel hands to PID 1, the agent.
    out = console_run(
        guest,
        "for i in 1 2 3 4 5; do (sleep 0.3 &); done; sleep 3;"
        " echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)",
    )
    assert "zombies=0" in out, out


def test_containers_can_pivot_root_after_the_switch_root(guest: Any) -> None:
    # pivot_root fails with EINVAL while / is the initramfs; pid1 moved it onto a real mount.
    out = console_run(
        guest,
        "mkdir -p /tmp/pv/new && unshare -m sh -c 'mount --make-rprivate / &&"
        " mount -t tmpfs t /tmp/pv/new && mkdir /tmp/pv/new/old && cd /tmp/pv/new &&"
        " pivot_root . old && echo PIVOT=ok || echo PIVOT=failed'",
    )
    assert "PIVOT=ok" in out


@pytest.fixture(scope="module")
def sandbox(guest: Any, agent: GuestAgent) -> Path:
    """CreateSandbox with the shared directory, as the Go runtime sends it; the host side of the
    share (what appears at /run/kata-containers/shared/containers/ in the guest)."""
    agent.call(
        "CreateSandbox",
        agent_pb2.CreateSandboxRequest(
            hostname="vm-test", storages=[shared_storage(guest.share_mode)], sandbox_id=SANDBOX_ID
        ),
    )
    return Path(guest.describe()["shared_dir"])


def test_create_sandbox_mounts_the_shared_directory(guest: Any, sandbox: Path) -> None:
    (sandbox / "hello.txt").write_text("from the host\n")
    out = console_run(guest, f"cat {GUEST_SHARED}/hello.txt; grep kataShared /proc/mounts")
    assert "from the host" in out
    assert GUEST_SHARED in out


def test_busybox_container_runs_with_output_and_exit_code(
    guest: Any, agent: GuestAgent, sandbox: Path
) -> None:
    cid = f"c{uuid.uuid4().hex[:10]}"
    _make_container_rootfs(guest, cid)
    _create_and_start(agent, cid, ["sh", "-c", "echo hello from $(hostname); exit 7"])
    out = _read_all(agent, cid, cid)
    status = agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=cid, timeout=0))
    assert "hello from vm-test" in out
    assert status.status == 7


def test_exec_in_a_running_container(guest: Any, agent: GuestAgent, sandbox: Path) -> None:
    from agent.ctl.container_spec import exec_process

    cid = f"c{uuid.uuid4().hex[:10]}"
    _make_container_rootfs(guest, cid)
    _create_and_start(agent, cid, ["sleep", "600"])
    eid = uuid.uuid4().hex
    agent.call(
        "ExecProcess",
        agent_pb2.ExecProcessRequest(
            container_id=cid,
            exec_id=eid,
            process=exec_process(["sh", "-c", "echo exec-$((40+2)); exit 3"]),
        ),
    )
    out = _read_all(agent, cid, eid)
    status = agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=eid))
    agent.call(
        "SignalProcess", agent_pb2.SignalProcessRequest(container_id=cid, exec_id="", signal=9)
    )
    agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=cid, timeout=0))
    assert "exec-42" in out
    assert status.status == 3


def test_destroy_sandbox_powers_the_guest_off(guest: Any, agent: GuestAgent, sandbox: Path) -> None:
    try:
        agent.call("DestroySandbox", agent_pb2.DestroySandboxRequest())
    except RpcError as err:
        # The reply races with the agent shutting down (as in Kata); a closed channel is fine.
        if err.code not in (Code.UNAVAILABLE, Code.CANCELLED):
            raise
    rc = guest.wait_exit(120)
    assert rc == 0, f"QEMU did not exit after DestroySandbox; see {guest.console_log}"
    assert "powering off" in guest.console_log.read_text(errors="replace")


# -- helpers ---------------------------------------------------------------------------------


def _make_container_rootfs(guest: Any, cid: str) -> None:
    from tests.support.rootfs import make_busybox_rootfs

    make_busybox_rootfs(Path(guest.describe()["shared_dir"]) / cid / "rootfs")


def _create_and_start(agent: GuestAgent, cid: str, args: list[str]) -> None:
    from agent.ctl.container_spec import container_spec

    spec = container_spec(f"{GUEST_SHARED}/{cid}/rootfs", args)
    try:
        agent.call(
            "CreateContainer",
            agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec),
            timeout=180,
        )
    except RpcError as err:
        if err.code == Code.UNIMPLEMENTED:
            pytest.skip("CreateContainer is not implemented by the agent yet")
        raise
    agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid))


def _read_all(agent: GuestAgent, cid: str, eid: str) -> str:
    out = b""
    while True:
        try:
            chunk = agent.call(
                "ReadStdout",
                agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=32768),
            )
        except RpcError:
            break  # EOF: the process exited and its output is drained
        if not chunk.data:
            break
        out += chunk.data
    return out.decode(errors="replace")
