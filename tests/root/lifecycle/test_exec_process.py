"""ExecProcess as the user sees it: the exec'd process is the program itself (already exec'd when
the call returns), in every namespace and cgroup of the container's init, with default signal
dispositions, adopted by the agent; no engine helper ever shows up in the container's cgroup; a
failed exec leaves nothing behind and the container keeps working."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from agent.rpc.status import Code, RpcError
from tests.root.lifecycle.conftest import Pod, cgroup_dirs

NAMESPACES = ("mnt", "pid", "ipc", "uts", "net", "cgroup", "user", "time")


def cgroup_procs(pod: Pod, cid: str) -> dict[Path, set[int]]:
    """The pids in the container's cgroup, per hierarchy directory."""
    out = {}
    for d in cgroup_dirs(f"{pod.cgroup_parent}/{cid}"):
        procs = d / "cgroup.procs"
        if procs.exists():
            out[d] = {int(p) for p in procs.read_text().split()}
    return out


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"/proc/{pid}/status has no {name}")


def parent_of(pid: int) -> int:
    return int(status_field(pid, "PPid"))


def wait_for_parent(pid: int, parent: int, timeout: float = 30.0) -> int:
    """The exec'd process is reparented to the agent when the engine's helper exits (no event
    to await from here: poll /proc with a generous deadline, in a thread)."""
    deadline = time.monotonic() + timeout
    while (ppid := parent_of(pid)) != parent and time.monotonic() < deadline:
        time.sleep(0.01)
    return ppid


def read(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_exec_runs_in_the_init_namespaces_and_cgroup(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "100000"])
    before = cgroup_procs(pod, "c1")
    assert before, "the container has no cgroup directory"
    (init,) = next(iter(before.values()))
    assert all(procs == {init} for procs in before.values()), before

    await pod.exec("c1", "e1", ["sleep", "99999"])
    after = cgroup_procs(pod, "c1")
    (pid,) = next(iter(after.values())) - {init}
    # Exactly the init and the exec'd process, in every hierarchy: no engine helper in there.
    assert all(procs == {init, pid} for procs in after.values()), after
    # Already the program when ExecProcess returns.
    assert read(f"/proc/{pid}/cmdline") == b"sleep\x0099999\x00"
    for ns in NAMESPACES:
        with_init = os.readlink(f"/proc/{init}/ns/{ns}")
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == with_init, ns
    assert read(f"/proc/{pid}/cgroup") == read(f"/proc/{init}/cgroup")
    # Signals the engine's Python ignores (SIGPIPE, SIGXFSZ) are not ignored by the program
    # (the init's, which are the default ones but for what busybox itself ignores).
    for field in ("SigIgn", "SigBlk"):
        assert status_field(pid, field) == status_field(init, field), field
    assert not int(status_field(pid, "SigIgn"), 16) & (1 << (signal.SIGPIPE - 1))
    assert not int(status_field(pid, "SigIgn"), 16) & (1 << (signal.SIGXFSZ - 1))
    agent = pod.agent.pid
    assert await asyncio.to_thread(wait_for_parent, pid, agent) == agent

    await pod.signal("c1", "e1", signal.SIGTERM)
    assert await pod.wait("c1", "e1") == 128 + signal.SIGTERM
    assert all(procs == {init} for procs in cgroup_procs(pod, "c1").values())


async def test_exec_that_exits_at_once_is_reaped_with_its_status(pod: Pod) -> None:
    """The process may exit before the engine's helper (its first parent) is gone."""
    await pod.create("c1", ["sleep", "100000"])
    for i in range(20):
        status, out, err = await pod.run_exec("c1", f"e{i}", ["sh", "-c", f"echo {i}; exit {i}"])
        assert (status, out, err) == (i, f"{i}\n".encode(), b"")


async def test_failed_exec_leaves_nothing_and_the_container_works(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "100000"])
    before = cgroup_procs(pod, "c1")
    with pytest.raises(RpcError) as info:
        await pod.exec("c1", "bad", ["/no/such/program"])
    assert info.value.code == Code.INVALID_ARGUMENT  # the request named a program that is not there
    assert "/no/such/program" in info.value.message
    assert "resolve executable" in info.value.message
    assert cgroup_procs(pod, "c1") == before
    with pytest.raises(RpcError) as info:
        await pod.wait("c1", "bad")
    assert info.value.code == Code.NOT_FOUND
    # The exec id was not taken, and the container still execs.
    assert await pod.run_exec("c1", "bad", ["echo", "ok"]) == (0, b"ok\n", b"")
