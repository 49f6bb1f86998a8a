"""Sandbox-wide behaviour through a real agent: the pinned UTS/IPC namespaces and hostname, the
shared PID namespace, guest hooks, the sandbox resolv.conf, storages, and the output drain when a
grandchild keeps the pipe open."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from agent.rpc.pb import agent_pb2, oci_pb2
from tests.root.lifecycle.conftest import Pod, agent_mounts
from tests.support.agent import AgentProcess
from tests.support.rootfs import make_busybox_rootfs


async def test_containers_share_sandbox_uts_and_ipc(pod: Pod) -> None:
    status, out, _ = await pod.run("c1", ["hostname"])
    assert (status, out) == (0, b"pod\n")
    await pod.create("c2", ["sleep", "1000"])
    await pod.create("c3", ["sleep", "1000"])
    _, ipc2, _ = await pod.run_exec("c2", "e", ["readlink", "/proc/self/ns/ipc"])
    _, ipc3, _ = await pod.run_exec("c3", "e", ["readlink", "/proc/self/ns/ipc"])
    _, uts2, _ = await pod.run_exec("c2", "u", ["readlink", "/proc/self/ns/uts"])
    assert ipc2 == ipc3
    assert ipc2.startswith(b"ipc:[")
    # The pinned files as the agent's mount namespace sees them (nsfs bind mounts).
    seen = f"/proc/{pod.agent.pid}/root{pod.agent.sandbox_ns_dir}"
    assert ipc2.strip() == f"ipc:[{os.stat(seen + '/ipc').st_ino}]".encode()
    assert uts2.strip() == f"uts:[{os.stat(seen + '/uts').st_ino}]".encode()


async def test_shared_pid_namespace(pod: Pod) -> None:
    await pod.create("pause", ["sleep", "1000"])
    await pod.a.CreateContainer(
        agent_pb2.CreateContainerRequest(
            container_id="app",
            exec_id="app",
            OCI=pod.spec("app", ["sh", "-c", "ps -o comm | sort | tr '\\n' ' '"]),
            sandbox_pidns=True,
        )
    )
    pod.created.append("app")
    await pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id="app"))
    out = await pod.read("app", "app")
    assert b"sleep" in out  # the pause container's init is visible
    assert await pod.wait("app", "app") == 0
    # Without sandbox_pidns: a PID namespace of its own.
    _, out, _ = await pod.run("own", ["sh", "-c", "ps -o comm | grep -c sleep"])
    assert out == b"0\n"


async def test_guest_hooks_and_dns(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path, cgroup_parent: str
) -> None:
    hooks = tmp_path / "hooks"
    record = tmp_path / "hook-ran.json"
    # poststart and poststop hooks are child processes: with them the container is started
    # and deleted by the engine's spawner, not in the agent (agent.sandbox.oci_runtime)
    for kind in ("prestart", "poststart", "poststop"):
        (hooks / kind).mkdir(parents=True)
        script = hooks / kind / "record.sh"
        script.write_text(f"#!/bin/sh\ncat > {record}.{kind}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (hooks / "prestart" / "not-executable").write_text("#!/bin/sh\nexit 1\n")
    agent = agent_factory(prefix=["unshare", "--mount", "--propagation", "private"])
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    async with await agent.client() as client:
        await client.agent.CreateSandbox(
            agent_pb2.CreateSandboxRequest(
                hostname="hooked",
                sandbox_id="sb",
                guest_hook_path=str(hooks),
                dns=["nameserver 10.0.0.10", "search example.test", ""],
            )
        )
        resolv = agent.run_dir / "sandbox" / "resolv.conf"
        assert resolv.read_text() == "nameserver 10.0.0.10\nsearch example.test\n"
        pod = Pod(agent, client, rootfs, cgroup_parent)
        status, out, _ = await pod.run("c1", ["echo", "ok"])
        assert (status, out) == (0, b"ok\n")
    state = json.loads(read(f"{record}.prestart"))
    assert state["id"] == "c1"
    assert state["pid"] > 0
    poststart = json.loads(read(f"{record}.poststart"))
    assert (poststart["id"], poststart["status"]) == ("c1", "running")
    assert json.loads(read(f"{record}.poststop"))["id"] == "c1"


def read(path: str) -> str:
    return Path(path).read_text()


async def test_container_storages_are_mounted_and_released(pod: Pod) -> None:
    agent = pod.agent
    mount_point = agent.run_dir / "sandbox" / "ephemeral" / "scratch"
    storage = agent_pb2.Storage(
        driver="ephemeral", source="tmpfs", fstype="tmpfs", mount_point=str(mount_point)
    )
    for cid in ("c1", "c2"):
        spec = pod.spec(cid, ["sh", "-c", "echo data > /scratch/f; cat /scratch/f"])
        spec.Mounts.append(
            oci_pb2.Mount(
                destination="/scratch", source=str(mount_point), type="bind", options=["rbind"]
            )
        )
        await pod.a.CreateContainer(
            agent_pb2.CreateContainerRequest(
                container_id=cid, exec_id=cid, OCI=spec, storages=[storage]
            )
        )
        pod.created.append(cid)
        await pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
        assert await pod.read(cid, cid) == b"data\n"
        assert await pod.wait(cid, cid) == 0
    assert str(mount_point) in agent_mounts(agent, mount_point)
    await pod.remove("c1")
    assert str(mount_point) in agent_mounts(agent, mount_point)  # c2 still holds a reference
    await pod.remove("c2")
    assert agent_mounts(agent, mount_point) == []


async def test_grandchild_holding_the_pipe_does_not_block_eof(pod: Pod) -> None:
    """The exec'd shell exits at once, its background child keeps stdout open: the output is
    returned, then EOF comes (after Kata's 500 ms drain), and WaitProcess reports the shell."""
    await pod.create("c1", ["sleep", "1000"])
    await pod.exec("c1", "e1", ["sh", "-c", "sleep 1000 & echo started"])
    out = await asyncio.wait_for(pod.read("c1", "e1"), 60)
    assert out == b"started\n"
    assert await pod.wait("c1", "e1") == 0


async def test_container_pipe_size(
    agent_factory: Callable[..., AgentProcess], tmp_path: Path, cgroup_parent: str
) -> None:
    """agent.container_pipe_size: with a 1 MiB pipe a process can write ~1 MB nobody reads yet
    and carry on (it reports on stderr); with the 64 KiB default it would block."""
    agent = agent_factory(
        prefix=["unshare", "--mount", "--propagation", "private"],
        args=["--container-pipe-size", str(1 << 20)],
    )
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    async with await agent.client() as client:
        await client.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="p"))
        pod = Pod(agent, client, rootfs, cgroup_parent)
        await pod.create(
            "c1", ["sh", "-c", "dd if=/dev/zero bs=1000 count=1000 2>/dev/null; echo written >&2"]
        )
        assert await asyncio.wait_for(pod.read("c1", "c1", stderr=True), 60) == b"written\n"
        assert len(await pod.read("c1", "c1")) == 1_000_000
        assert await pod.wait("c1", "c1") == 0
        await pod.remove("c1")
