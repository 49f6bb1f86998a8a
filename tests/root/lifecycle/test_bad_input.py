"""Every bad input of the lifecycle issue against a real agent: the status code and a message that
names the object, nothing leaked, and the sandbox keeps working afterwards."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2, oci_pb2
from agent.rpc.status import Code, RpcError
from tests.root.lifecycle.conftest import Pod, agent_fds, agent_mounts, live_descendants


async def expect(code: Code, text: str, call: Awaitable[Any]) -> None:
    with pytest.raises(RpcError) as info:
        await call
    assert info.value.code == code, info.value
    assert text in info.value.message, info.value.message


async def still_works(pod: Pod, cid: str = "after") -> None:
    status, out, _ = await pod.run(cid, ["echo", "still working"])
    assert (status, out) == (0, b"still working\n")


async def test_unknown_container_ids(pod: Pod) -> None:
    a = pod.a
    cases: list[tuple[Code, str, Callable[[], Awaitable[Any]]]] = [
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.StartContainer(agent_pb2.StartContainerRequest(container_id="nope")),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="nope")),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.SignalProcess(
                agent_pb2.SignalProcessRequest(container_id="nope", exec_id="", signal=9)
            ),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.WaitProcess(agent_pb2.WaitProcessRequest(container_id="nope", exec_id="x")),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.ReadStdout(
                agent_pb2.ReadStreamRequest(container_id="nope", exec_id="x", len=10)
            ),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.StatsContainer(agent_pb2.StatsContainerRequest(container_id="nope")),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.PauseContainer(agent_pb2.PauseContainerRequest(container_id="nope")),
        ),
        (
            Code.NOT_FOUND,
            "container nope not found",
            lambda: a.ExecProcess(
                agent_pb2.ExecProcessRequest(
                    container_id="nope", exec_id="e", process=oci_pb2.Process(Args=["true"])
                )
            ),
        ),
        (
            Code.INVALID_ARGUMENT,
            "container id is empty",
            lambda: a.StartContainer(agent_pb2.StartContainerRequest(container_id="")),
        ),
    ]
    for code, text, call in cases:
        await expect(code, text, call())
    await still_works(pod)


async def test_unknown_exec_ids(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    for call in (
        pod.a.WaitProcess(agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e9")),
        pod.a.ReadStdout(agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e9", len=9)),
        pod.a.WriteStdin(agent_pb2.WriteStreamRequest(container_id="c1", exec_id="e9", data=b"x")),
        pod.a.CloseStdin(agent_pb2.CloseStdinRequest(container_id="c1", exec_id="e9")),
        pod.a.SignalProcess(
            agent_pb2.SignalProcessRequest(container_id="c1", exec_id="e9", signal=15)
        ),
    ):
        await expect(Code.NOT_FOUND, "container c1: process e9 not found", call)
    await still_works(pod)


async def test_bad_ids_and_duplicates(pod: Pod) -> None:
    await expect(
        Code.INVALID_ARGUMENT,
        "invalid container id '../etc'",
        pod.create("../etc", ["true"]),
    )
    await pod.create("c1", ["sleep", "1000"])
    await expect(Code.ALREADY_EXISTS, "container c1 already exists", pod.create("c1", ["true"]))
    await pod.exec("c1", "e1", ["sleep", "1000"])
    await expect(Code.ALREADY_EXISTS, "exec id e1 already exists", pod.exec("c1", "e1", ["true"]))
    await expect(Code.INVALID_ARGUMENT, "exec id is empty", pod.exec("c1", "", ["true"]))
    await expect(
        Code.INVALID_ARGUMENT,
        "invalid signal number 99",
        pod.signal("c1", "", 99),
    )
    await still_works(pod)


async def test_start_twice_and_exec_before_start(pod: Pod) -> None:
    await pod.create("c1", ["echo", "hi"], start=False)
    await expect(
        Code.FAILED_PRECONDITION,
        "container c1: cannot exec e1: the container is created, not running",
        pod.exec("c1", "e1", ["true"]),
    )
    await pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id="c1"))
    await expect(
        Code.FAILED_PRECONDITION,
        "container c1: cannot start: it is",
        pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id="c1")),
    )
    assert await pod.read("c1", "c1") == b"hi\n"
    assert await pod.wait("c1", "c1") == 0
    await expect(
        Code.FAILED_PRECONDITION,
        "cannot resume: it is stopped, not paused",
        pod.a.ResumeContainer(agent_pb2.ResumeContainerRequest(container_id="c1")),
    )
    await pod.remove("c1")
    await still_works(pod)


async def test_remove_of_running_container_kills_and_cleans(pod: Pod) -> None:
    """As Kata: RemoveContainer of a running container kills every process and cleans up."""
    fds = agent_fds(pod.agent)
    await pod.create("c1", ["sleep", "1000"])
    await pod.exec("c1", "e1", ["sleep", "1000"])
    waiter = asyncio.create_task(pod.wait("c1", "e1"))
    await pod.remove("c1")
    assert await waiter == 128 + signal.SIGKILL
    # a created, never started container too
    await pod.create("c2", ["sleep", "1000"], start=False)
    await pod.remove("c2")
    assert agent_mounts(pod.agent, pod.agent.run_dir) == []
    assert len(live_descendants(pod.agent.pid)) == 1
    assert agent_fds(pod.agent) == fds
    await still_works(pod)


async def test_client_disconnect_during_read_stdout(pod: Pod) -> None:
    """A client that goes away mid-ReadStdout loses nothing: the next reader gets the data."""
    await pod.create("c1", ["sh", "-c", "read line; echo got:$line"])
    async with await pod.agent.client() as other:
        pending = asyncio.create_task(
            other.agent.ReadStdout(
                agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=100)
            )
        )
        await asyncio.sleep(0.2)
    with pytest.raises(RpcError):
        await pending
    await pod.write("c1", "c1", b"x\n")
    assert await pod.read("c1", "c1") == b"got:x\n"
    assert await pod.wait("c1", "c1") == 0
    await pod.remove("c1")
    await still_works(pod)


async def test_spec_the_engine_rejects(pod: Pod) -> None:
    fds = agent_fds(pod.agent)
    spec = pod.spec("bad", ["true"])
    spec.Linux.Namespaces.append(oci_pb2.LinuxNamespace(Type="foo"))
    with pytest.raises(RpcError) as info:
        await pod.a.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="bad", exec_id="bad", OCI=spec)
        )
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "foo" in info.value.message
    missing = pod.spec("bad2", ["true"])
    missing.Root.Path = "/nonexistent/rootfs"
    with pytest.raises(RpcError) as info:
        await pod.a.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="bad2", exec_id="bad2", OCI=missing)
        )
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "/nonexistent/rootfs" in info.value.message
    no_cmd = pod.spec("bad3", ["/bin/does-not-exist"])
    with pytest.raises(RpcError) as info:
        await pod.a.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="bad3", exec_id="bad3", OCI=no_cmd)
        )
    assert "does-not-exist" in info.value.message
    await expect(
        Code.INVALID_ARGUMENT,
        "the request has no OCI spec",
        pod.a.CreateContainer(agent_pb2.CreateContainerRequest(container_id="bad4")),
    )
    assert agent_mounts(pod.agent, pod.agent.run_dir) == []
    assert agent_fds(pod.agent) == fds
    assert len(live_descendants(pod.agent.pid)) == 1
    # The ids are free again and the sandbox works.
    await still_works(pod, "bad")


async def test_create_container_without_sandbox(agent_mnt: Any, rootfs: Any) -> None:
    from agent.ctl.container_spec import container_spec

    async with await agent_mnt.client() as c:
        with pytest.raises(RpcError) as info:
            await c.agent.CreateContainer(
                agent_pb2.CreateContainerRequest(
                    container_id="c1", OCI=container_spec(str(rootfs), ["true"])
                )
            )
        assert info.value.code == Code.FAILED_PRECONDITION
        assert "CreateSandbox must be called first" in info.value.message
        await c.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h"))
        with pytest.raises(RpcError) as info:
            await c.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h"))
        assert info.value.code == Code.ALREADY_EXISTS


async def test_get_oom_event_fails_after_destroy(pod: Pod) -> None:
    pending = asyncio.create_task(pod.a.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    await asyncio.sleep(0.1)
    await pod.a.DestroySandbox(agent_pb2.DestroySandboxRequest())
    with pytest.raises(RpcError):
        await pending


async def test_create_sandbox_with_a_missing_kernel_module(agent_mnt: Any) -> None:
    async with await agent_mnt.client() as c:
        bad = agent_pb2.CreateSandboxRequest(
            hostname="h",
            kernel_modules=[agent_pb2.KernelModule(name="kag-no-such-module")],
        )
        with pytest.raises(RpcError) as info:
            await c.agent.CreateSandbox(bad)
        assert info.value.code == Code.INTERNAL
        assert "load kernel module kag-no-such-module: modprobe exited with status" in (
            info.value.message
        )
        with pytest.raises(RpcError) as info:
            await c.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(kernel_modules=[agent_pb2.KernelModule(name="")])
            )
        assert info.value.code == Code.INVALID_ARGUMENT
        # a storage that fails after the namespaces were pinned: they are unpinned again
        with pytest.raises(RpcError) as info:
            await c.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(
                    storages=[agent_pb2.Storage(driver="nope", mount_point="/x")]
                )
            )
        assert "Failed to find the storage handler nope" in info.value.message
        assert agent_mounts(agent_mnt, agent_mnt.sandbox_ns_dir) == []
        # nothing half-done: the sandbox can be created afterwards
        await c.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="h"))
        assert len(agent_mounts(agent_mnt, agent_mnt.sandbox_ns_dir)) == 2
