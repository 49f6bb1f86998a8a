"""A real agent over ttrpc runs busybox containers: output, exit codes, stdin, tty, exec, signals,
wait, pause/resume, stats, OOM events, and nothing left behind afterwards."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from agent.ctl.container_spec import exec_process
from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.root.lifecycle.conftest import (
    Pod,
    agent_fds,
    agent_mounts,
    cgroup_dirs,
    live_descendants,
)


async def test_output_and_exit_code(pod: Pod) -> None:
    status, out, err = await pod.run("c1", ["sh", "-c", "echo hello; echo oops >&2; exit 7"])
    assert status == 7
    assert out == b"hello\n"
    assert err == b"oops\n"


async def test_fast_exit_output_is_complete(pod: Pod) -> None:
    """A process that writes a lot and exits at once: every byte arrives, then EOF."""
    status, out, _ = await pod.run("c1", ["sh", "-c", "seq 1 20000"])
    assert status == 0
    assert out == b"".join(f"{i}\n".encode() for i in range(1, 20001))


async def test_stdin_echo_through_cat(pod: Pod) -> None:
    await pod.create("c1", ["cat"])
    reader = asyncio.create_task(pod.read("c1", "c1"))
    payload = b"".join(f"line {i}\n".encode() for i in range(5000))
    for i in range(0, len(payload), 32768):
        await pod.write("c1", "c1", payload[i : i + 32768])
    await pod.close_stdin("c1", "c1")
    assert await reader == payload
    assert await pod.wait("c1", "c1") == 0
    await pod.remove("c1")


async def test_tty_session_with_resize(pod: Pod) -> None:
    await pod.create("c1", ["sh"], terminal=True)
    await pod.a.TtyWinResize(
        agent_pb2.TtyWinResizeRequest(container_id="c1", exec_id="c1", row=33, column=121)
    )
    reader = asyncio.create_task(pod.read("c1", "c1"))
    await pod.write("c1", "c1", b"stty size; test -t 0 && echo is-a-tty; exit 3\n")
    out = await reader
    assert b"\r\n33 121\r\n" in out
    assert b"\r\nis-a-tty\r\n" in out
    assert await pod.wait("c1", "c1") == 3
    await pod.remove("c1")


async def test_tty_has_the_console_size_from_the_start(pod: Pod) -> None:
    await pod.create("c1", ["stty", "size"], terminal=True, console_size=(30, 91))
    assert await pod.read("c1", "c1") == b"30 91\r\n"
    assert await pod.wait("c1", "c1") == 0
    await pod.create("c2", ["sleep", "1000"])
    await pod.a.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id="c2",
            exec_id="t",
            process=exec_process(["stty", "size"], terminal=True, console_size=(12, 34)),
        )
    )
    assert await pod.read("c2", "t") == b"12 34\r\n"


async def test_resize_without_tty_is_unavailable(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    with pytest.raises(RpcError) as info:
        await pod.a.TtyWinResize(
            agent_pb2.TtyWinResizeRequest(container_id="c1", exec_id="c1", row=1, column=1)
        )
    assert info.value.code == Code.UNAVAILABLE
    assert "no tty" in info.value.message


async def test_exec_into_running_container(pod: Pod) -> None:
    await pod.create("c1", ["sh", "-c", "echo marker > /tmp/m; exec sleep 1000"])
    out = b""
    for i in range(200):
        _, out, _ = await pod.run_exec("c1", f"probe{i}", ["cat", "/tmp/m"])
        if out == b"marker\n":
            break
        await asyncio.sleep(0.05)
    assert out == b"marker\n"
    # Same pid namespace as the init: the init is PID 1 there.
    status, out, _ = await pod.run_exec(
        "c1", "e2", ["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]
    )
    assert status == 0
    assert out.startswith(b"sleep 1000")
    # A tty exec.
    await pod.exec("c1", "t1", ["sh", "-c", "test -t 1 && echo tty-out; exit 4"], terminal=True)
    out = await pod.read("c1", "t1")
    assert out == b"tty-out\r\n"
    assert await pod.wait("c1", "t1") == 4
    # The exec id is gone after the wait.
    with pytest.raises(RpcError) as info:
        await pod.wait("c1", "t1")
    assert info.value.code == Code.NOT_FOUND


async def test_sigterm_upgraded_for_init_without_handler(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    await pod.signal("c1", "", signal.SIGTERM)
    assert await pod.wait("c1", "c1") == 128 + signal.SIGKILL


async def test_sigterm_delivered_to_init_with_handler(pod: Pod) -> None:
    await pod.create(
        "c1",
        [
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    )
    first = await pod.a.ReadStdout(
        agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=100)
    )
    assert first.data == b"ready\n"
    await pod.signal("c1", "", signal.SIGTERM)
    assert await pod.read("c1", "c1") == b"got-term\n"
    assert await pod.wait("c1", "c1") == 42


async def test_kill_all(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    await pod.exec("c1", "e1", ["sleep", "1000"])
    await pod.signal("c1", "", signal.SIGKILL)  # empty exec id + SIGKILL: every process
    assert await pod.wait("c1", "e1") == 137
    assert await pod.wait("c1", "c1") == 137


async def test_signal_exited_process_is_esrch(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    await pod.exec("c1", "e1", ["true"])
    assert await pod.read("c1", "e1") == b""
    message = ""
    for _ in range(200):
        try:
            await pod.signal("c1", "e1", signal.SIGTERM)
        except RpcError as err:
            message = err.message
            break
        await asyncio.sleep(0.05)
    assert "ESRCH: No such process" in message
    assert await pod.wait("c1", "e1") == 0


async def test_pause_and_resume(pod: Pod) -> None:
    counter = pod.rootfs / "tmp" / "n"  # the container's /tmp/n, seen through its rootfs

    def value() -> int:
        try:
            return int(counter.read_text() or 0)
        except FileNotFoundError:
            return 0

    async def until_above(floor: int) -> int:
        for _ in range(600):
            if (v := value()) > floor:
                return v
            await asyncio.sleep(0.05)
        raise AssertionError(f"the counter never went above {floor}")

    await pod.create(
        "c1",
        ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/t; mv /tmp/t /tmp/n; done"],
    )
    await until_above(0)
    await pod.a.PauseContainer(agent_pb2.PauseContainerRequest(container_id="c1"))
    freezer = cgroup_dirs(f"{pod.cgroup_parent}/c1")
    states = [
        (d / "freezer.state").read_text().strip() for d in freezer if (d / "freezer.state").exists()
    ]
    assert states == ["FROZEN"] or any(
        (d / "cgroup.freeze").exists() and (d / "cgroup.freeze").read_text().strip() == "1"
        for d in freezer
    )
    frozen_at = value()
    await asyncio.sleep(0.3)
    assert value() == frozen_at  # nothing runs while paused
    with pytest.raises(RpcError) as info:
        await pod.a.PauseContainer(agent_pb2.PauseContainerRequest(container_id="c1"))
    assert info.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(RpcError) as info:
        await pod.exec("c1", "e1", ["true"])
    assert info.value.code == Code.FAILED_PRECONDITION
    await pod.a.ResumeContainer(agent_pb2.ResumeContainerRequest(container_id="c1"))
    await until_above(frozen_at)


async def test_stats_reflect_real_usage(pod: Pod) -> None:
    await pod.create(
        "c1",
        [
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/blob bs=1M count=48 2>/dev/null; "
            "echo done; exec sleep 1000",
        ],
    )
    first = await pod.a.ReadStdout(
        agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=100)
    )
    assert first.data == b"done\n"
    resp = await pod.a.StatsContainer(agent_pb2.StatsContainerRequest(container_id="c1"))
    stats = resp.cgroup_stats
    assert stats.memory_stats.usage.usage >= 48 << 20
    assert stats.pids_stats.current >= 1
    assert stats.cpu_stats.cpu_usage.total_usage > 0
    # the guest's interfaces (containers share the VM's network namespace), loopback excluded
    names = [n.name for n in resp.network_stats]
    assert names
    assert "lo" not in names


async def test_update_memory_limit(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    from agent.rpc.pb import oci_pb2

    await pod.a.UpdateContainer(
        agent_pb2.UpdateContainerRequest(
            container_id="c1",
            resources=oci_pb2.LinuxResources(Memory=oci_pb2.LinuxMemory(Limit=64 << 20)),
        )
    )
    resp = await pod.a.StatsContainer(agent_pb2.StatsContainerRequest(container_id="c1"))
    assert resp.cgroup_stats.memory_stats.usage.limit == 64 << 20


async def test_oom_kill_reported_by_get_oom_event(pod: Pod) -> None:
    oom = asyncio.create_task(pod.a.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    await pod.create(
        "c1",
        ["sh", "-c", "dd if=/dev/zero of=/dev/shm/blob bs=1M count=256"],
        memory_limit=32 << 20,
    )
    status = await pod.wait("c1", "c1")
    assert status == 128 + signal.SIGKILL
    event = await asyncio.wait_for(oom, 60)
    assert event.container_id == "c1"


async def test_nothing_left_after_remove_and_destroy(pod: Pod) -> None:
    agent = pod.agent
    fds_before = agent_fds(agent)
    for i in range(3):
        await pod.create(f"c{i}", ["sleep", "1000"])
        await pod.exec(f"c{i}", "e", ["sleep", "1000"])
    await pod.create("tty", ["sh"], terminal=True)
    assert len(agent_mounts(agent, agent.run_dir)) >= 4
    for cid in ("c0", "c1", "c2", "tty"):
        await pod.signal(cid, "", signal.SIGKILL)
        await pod.remove(cid)
    assert agent_mounts(agent, agent.run_dir) == []
    for cid in ("c0", "c1", "c2", "tty"):
        assert cgroup_dirs(f"{pod.cgroup_parent}/{cid}") == []
    assert agent_fds(agent) == fds_before
    # only the engine's spawner is left below the agent
    left = live_descendants(agent.pid)
    assert len(left) == 1, [(p, _comm(p)) for p in left]
    await pod.create("last", ["sleep", "1000"])
    await pod.a.DestroySandbox(agent_pb2.DestroySandboxRequest())
    pod.created.clear()
    assert agent_mounts(agent, agent.run_dir) == []
    assert agent_mounts(agent, agent.sandbox_ns_dir) == []
    assert cgroup_dirs(f"{pod.cgroup_parent}/last") == []
    assert list(os.listdir(agent.run_dir)) == []
    # DestroySandbox ends the agent.
    for _ in range(100):
        if not agent.alive():
            break
        await asyncio.sleep(0.05)
    assert not agent.alive()


async def test_agent_shutdown_removes_its_containers(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    await pod.exec("c1", "e1", ["sleep", "1000"])
    workload = await _sleepers(pod.agent.pid, 2)
    assert len(workload) == 2, [(p, _comm(p)) for p in workload]
    code = pod.agent.stop()  # SIGTERM: orderly shutdown
    pod.created.clear()
    assert code == 0, pod.agent.log_path.read_text()[-4000:]
    assert [(p, _comm(p)) for p in workload if _alive(p)] == []
    # the sandbox went too: pinned namespaces released, no state left in run_dir
    assert not (pod.agent.sandbox_ns_dir / "ipc").exists()
    assert not (pod.agent.sandbox_ns_dir / "uts").exists()
    assert list(pod.agent.run_dir.iterdir()) == []


async def _sleepers(agent_pid: int, count: int) -> list[int]:
    """The agent's descendants running sleep, once there are `count` of them: an exec'd
    process may still be between its fork and its execve when ExecProcess returns."""
    below: list[int] = []
    for _ in range(200):
        below = live_descendants(agent_pid)
        workload = [p for p in below if _comm(p) == "sleep"]
        if len(workload) >= count:
            return workload
        await asyncio.sleep(0.05)
    raise AssertionError([(p, _comm(p)) for p in below])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
