"""The agent policy on real containers: CreateContainer pinned by the policy, policy state across
requests (committed only when the request succeeded, one stateful request at a time), and the
ReadStdout decision on the ttrpc server's answer-at-once path."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("regopy")

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.root.lifecycle.conftest import Pod
from tests.support.policy import policy_text


async def set_policy(pod: Pod, name: str) -> None:
    await pod.a.SetPolicy(agent_pb2.SetPolicyRequest(policy=policy_text(name)), timeout=120)


async def test_create_container_with_pinned_args(pod: Pod) -> None:
    await set_policy(pod, "pinned-args")
    status, out, _ = await pod.run("ok", ["sh", "-c", "echo pinned"])
    assert (status, out) == (0, b"pinned\n")
    with pytest.raises(RpcError) as info:
        await pod.create("other", ["sh", "-c", "echo other"])
    assert info.value.code == Code.PERMISSION_DENIED
    assert info.value.message == "CreateContainerRequest is blocked by policy: "
    with pytest.raises(RpcError) as info:  # nothing was created
        await pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id="other"))
    assert info.value.code != Code.PERMISSION_DENIED
    assert not (pod.agent.run_dir / "other").exists()
    with pytest.raises(RpcError) as info:  # the same command, another environment
        await pod.create("env", ["true"], env=["EXTRA=1"])
    assert info.value.code == Code.PERMISSION_DENIED


async def exec_code(pod: Pod, cid: str, args: list[str]) -> Code | int:
    try:
        await pod.exec(cid, "e-" + cid, args)
    except RpcError as err:
        return err.code
    await pod.read(cid, "e-" + cid)
    await pod.wait(cid, "e-" + cid)
    return Code.OK


async def test_policy_state_across_requests(pod: Pod) -> None:
    await set_policy(pod, "pstate")
    assert await exec_code(pod, "box", ["echo", "x"]) == Code.PERMISSION_DENIED
    await pod.create("box", ["sleep", "1000"])
    await pod.exec("box", "e1", ["echo", "x"])
    assert await pod.read("box", "e1") == b"x\n"
    assert await pod.wait("box", "e1") == 0
    assert await exec_code(pod, "box", ["sh", "-c", "id"]) == Code.PERMISSION_DENIED
    await pod.signal("box", "", 9)
    await pod.wait("box", "box")
    await pod.remove("box")
    # forgotten by RemoveContainer: denied by the policy, not "no such container"
    assert await exec_code(pod, "box", ["echo", "x"]) == Code.PERMISSION_DENIED


async def test_state_is_not_committed_when_the_request_fails(pod: Pod) -> None:
    await set_policy(pod, "pstate")
    spec = pod.spec("broken", ["true"])
    spec.Root.Path = str(pod.rootfs.parent / "no-such-rootfs")
    with pytest.raises(RpcError) as info:
        await pod.a.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="broken", exec_id="broken", OCI=spec),
            timeout=60,
        )
    assert info.value.code != Code.PERMISSION_DENIED  # allowed, then the handler failed
    assert await exec_code(pod, "broken", ["echo", "x"]) == Code.PERMISSION_DENIED
    # the state was left as it was: the same id can be created (recorded only now)
    await pod.create("broken", ["sleep", "1000"])
    assert await exec_code(pod, "broken", ["echo", "x"]) == Code.OK


async def test_concurrent_stateful_requests_all_commit(pod: Pod) -> None:
    """Each CreateContainer's ops apply to the state the previous one committed: none is lost."""
    await set_policy(pod, "pstate")
    ids = [f"c{i}" for i in range(6)]
    await asyncio.gather(*(pod.create(cid, ["sleep", "1000"]) for cid in ids))
    codes = await asyncio.gather(*(exec_code(pod, cid, ["echo", "x"]) for cid in ids))
    assert codes == [Code.OK] * len(ids)


async def test_read_stdout_is_decided_when_answered_at_once(pod: Pod) -> None:
    await set_policy(pod, "read-stream")  # reads of more than 64 KiB are denied
    await pod.create("box", ["sleep", "1000"])
    await pod.exec("box", "e", ["sh", "-c", "echo out; echo err >&2; read x; exit 0"])
    err = await pod.a.ReadStderr(
        agent_pb2.ReadStreamRequest(container_id="box", exec_id="e", len=64), timeout=60
    )
    assert err.data == b"err\n"  # so "out" is in the stdout pipe: a read is answered at once
    with pytest.raises(RpcError) as info:  # malformed input is refused before the policy
        await pod.a.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id="box", exec_id="e\0", len=1 << 20)
        )
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == "ReadStreamRequest.exec_id: contains a NUL byte"
    with pytest.raises(RpcError) as info:
        await pod.a.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id="box", exec_id="e", len=1 << 20)
        )
    assert info.value.code == Code.PERMISSION_DENIED
    assert info.value.message == "ReadStreamRequest is blocked by policy: "
    out = await pod.a.ReadStdout(
        agent_pb2.ReadStreamRequest(container_id="box", exec_id="e", len=1 << 16)
    )
    assert out.data == b"out\n"
    await pod.close_stdin("box", "e")
    assert await pod.wait("box", "e") == 0
