"""The agent policy with the real agent over ttrpc: Kata-style policies, SetPolicy, the default
policy file, bad policies and an agent without the engine."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("regopy")

from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import REPO, AgentProcess
from tests.support.policy import ALLOW_ALL, POLICIES, policy_text

Factory = Callable[..., AgentProcess]
SANDBOX = "81e5f43bc8599c5661e66f959ac28df5bfb30da23c5d583f2dcc6f9e0c5186dc"
HASH = "ce23cfeb91e75aaa"
NO_CONTAINER = agent_pb2.ExecProcessRequest(container_id="none", exec_id="e")


async def call(agent: AgentProcess, method: str, req: Any) -> Any:
    async with await agent.client() as client:
        return await getattr(client.agent, method)(req, timeout=60)


async def code_of(agent: AgentProcess, method: str, req: Any) -> tuple[Code | int, str]:
    try:
        await call(agent, method, req)
    except RpcError as err:
        return err.code, err.message
    return Code.OK, ""


async def set_policy(agent: AgentProcess, text: str) -> None:
    await call(agent, "SetPolicy", agent_pb2.SetPolicyRequest(policy=text))


def decisions(agent: AgentProcess) -> list[dict[str, Any]]:
    return [r for r in agent.logs() if r.get("msg") == "policy decision"]


async def test_allow_all_from_the_default_policy_file(agent_factory: Factory) -> None:
    agent = agent_factory(args=["--policy-file", str(ALLOW_ALL)])
    details = await call(agent, "GetGuestDetails", agent_pb2.GuestDetailsRequest())
    assert details.agent_details.version
    # allowed, so the handler answers: no such container
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND
    loaded = [r for r in agent.logs() if r.get("msg") == "policy loaded"]
    assert loaded[0]["origin"] == str(ALLOW_ALL)
    assert loaded[0]["evaluated"] == 0  # every answer decided once, at load
    assert {"GuestDetailsRequest", "ExecProcessRequest"} <= {r["request"] for r in decisions(agent)}


async def test_allow_all_except_exec_process(agent: AgentProcess) -> None:
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND  # no policy
    await set_policy(agent, policy_text("allow-all-except-exec-process"))
    code, message = await code_of(agent, "ExecProcess", NO_CONTAINER)
    assert code == Code.PERMISSION_DENIED
    assert message == "ExecProcessRequest is blocked by policy: "
    await call(agent, "GetGuestDetails", agent_pb2.GuestDetailsRequest())
    async with await agent.client() as client:  # Health is never checked
        assert (await client.health.Check(health_pb2.CheckRequest())).status == 1


async def test_a_policy_that_keeps_set_policy_from_replacing_it(agent: AgentProcess) -> None:
    await set_policy(agent, policy_text("no-set-policy"))
    code, message = await code_of(
        agent,
        "SetPolicy",
        agent_pb2.SetPolicyRequest(policy=policy_text("allow-all-except-exec-process")),
    )
    assert code == Code.PERMISSION_DENIED
    assert message.startswith("SetPolicyRequest is blocked by policy")
    # the policy in force is still no-set-policy: ExecProcess is allowed
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND


def _shared(agent: AgentProcess) -> Path:
    return agent.run_dir / "shared" / "containers"


async def test_copy_file_policy(agent: AgentProcess) -> None:
    await set_policy(agent, policy_text("genpolicy-style", run_dir=agent.run_dir))
    base = _shared(agent)
    resolv = base / f"{SANDBOX}-{HASH}-resolv.conf"
    await call(
        agent,
        "CopyFile",
        agent_pb2.CopyFileRequest(
            path=str(resolv), file_mode=stat.S_IFREG | 0o644, file_size=12, data=b"nameserver 1"
        ),
    )
    assert resolv.read_bytes() == b"nameserver 1"
    dots = base / f"{SANDBOX}-{HASH}-foo.."
    await call(
        agent,
        "CopyFile",
        agent_pb2.CopyFileRequest(path=str(dots), file_mode=stat.S_IFDIR | 0o755),
    )
    await call(
        agent,
        "CopyFile",
        agent_pb2.CopyFileRequest(
            path=str(dots / "bar"), file_mode=stat.S_IFREG | 0o600, file_size=1, data=b"b"
        ),
    )
    assert (dots / "bar").read_bytes() == b"b"

    denied = [
        "/etc/ssl/cert.pem",
        f"{base}/{SANDBOX}/rootfs/bin/sh",
        f"{agent.run_dir}/{SANDBOX}/rootfs/bin/sh",
        f"{base}/{SANDBOX}-{HASH}-foo/../../../../../etc/ssl/cert.pem",
        "etc/ssl/cert.pem",
    ]
    for path in denied:
        req = agent_pb2.CopyFileRequest(
            path=path, file_mode=stat.S_IFREG | 0o644, file_size=1, data=b"x"
        )
        code, message = await code_of(agent, "CopyFile", req)
        assert code == Code.PERMISSION_DENIED, path
        assert message.startswith("CopyFileRequest is blocked by policy: CopyFileRequest: path")
    assert not (base / SANDBOX).exists()

    bad_link = agent_pb2.CopyFileRequest(
        path=str(dots / "lnk"), file_mode=stat.S_IFLNK, data=b"\xff\xfe"
    )
    code, message = await code_of(agent, "CopyFile", bad_link)
    assert code == Code.INVALID_ARGUMENT
    assert "symlink target is not valid UTF-8" in message


async def test_input_checks_come_before_the_policy(agent: AgentProcess) -> None:
    """The order on every request (docs/security.md): malformed input (a NUL byte) is
    INVALID_ARGUMENT before the policy is asked; a well-formed request the policy denies is
    PERMISSION_DENIED before its handler runs, even when the handler would refuse it too."""
    await set_policy(agent, policy_text("allow-all-except-exec-process"))
    bad_id = agent_pb2.ExecProcessRequest(container_id="c\0", exec_id="e")
    assert await code_of(agent, "ExecProcess", bad_id) == (
        Code.INVALID_ARGUMENT,
        "ExecProcessRequest.container_id: contains a NUL byte",
    )
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.PERMISSION_DENIED

    await set_policy(agent, policy_text("genpolicy-style", run_dir=agent.run_dir))
    base = _shared(agent)
    asked = len([r for r in decisions(agent) if r["request"] == "CopyFileRequest"])
    nul = agent_pb2.CopyFileRequest(
        path=f"{base}/{SANDBOX}\0/rootfs/bin/sh", file_mode=stat.S_IFREG | 0o644, data=b"x"
    )
    assert await code_of(agent, "CopyFile", nul) == (
        Code.INVALID_ARGUMENT,
        "CopyFileRequest.path: contains a NUL byte",
    )
    # the policy was not asked about it (a decision is logged per asked request)
    assert len([r for r in decisions(agent) if r["request"] == "CopyFileRequest"]) == asked
    denied = agent_pb2.CopyFileRequest(
        path=f"{base}/{SANDBOX}/rootfs/bin/sh",
        file_mode=stat.S_IFREG | 0o644,
        file_size=1,
        data=b"x",
        uid=-2,  # the handler would answer INVALID_ARGUMENT naming uid: it never runs
    )
    code, message = await code_of(agent, "CopyFile", denied)
    assert code == Code.PERMISSION_DENIED
    assert message.startswith("CopyFileRequest is blocked by policy")
    assert len([r for r in decisions(agent) if r["request"] == "CopyFileRequest"]) == asked + 1
    assert not (base / SANDBOX).exists()


async def test_a_policy_that_raises(agent: AgentProcess) -> None:
    await set_policy(agent, policy_text("raises"))
    code, message = await code_of(agent, "GetGuestDetails", agent_pb2.GuestDetailsRequest())
    assert code == Code.PERMISSION_DENIED
    assert message == (
        "GuestDetailsRequest is blocked by policy: policy evaluation failed: "
        "complete rules must not produce multiple outputs"
    )
    errors = [r for r in agent.logs() if r.get("msg") == "policy evaluation failed"]
    assert errors[0]["request"] == "GuestDetailsRequest"
    assert errors[0]["level"] == "ERRO"
    await call(agent, "GetMetrics", agent_pb2.GetMetricsRequest())  # the rest still works


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("package agent_policy\nX := {", "invalid policy: this is unclosed"),
        (
            "package agent_policy\nf(a) := true\nf(a, b) := true\nX if { f(1, 2) }\n",
            "invalid policy: the policy engine crashed compiling it",
        ),
        ("package agent_policy\n#" + "x" * 70000, "policy line 2 has 70001 characters"),
        (
            "package agent_policy\nimport future.keywords.every\n"
            "X if { every d in input.a { not d } }\n",
            "'not' inside the 'every' of line 3",
        ),
    ],
)
async def test_bad_policies_are_refused_and_the_previous_stays(
    agent: AgentProcess, text: str, message: str
) -> None:
    await set_policy(agent, policy_text("allow-all-except-exec-process"))
    code, got = await code_of(agent, "SetPolicy", agent_pb2.SetPolicyRequest(policy=text))
    assert code == Code.INVALID_ARGUMENT
    assert message in got
    assert agent.alive()
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.PERMISSION_DENIED


async def test_allow_requests_failing_policy(agent: AgentProcess) -> None:
    text = policy_text("allow-all-except-exec-process") + (
        "\ndefault AllowRequestsFailingPolicy := true\n"
    )
    await set_policy(agent, text)
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND
    warned = [r for r in agent.logs() if "AllowRequestsFailingPolicy" in r.get("msg", "")]
    assert any(r.get("request") == "ExecProcessRequest" for r in warned)


async def test_a_policy_without_rules_denies_all_but_health(agent: AgentProcess) -> None:
    await set_policy(agent, "package agent_policy\n")
    # not asked about, as in the Rust agent: the mem-agent settings
    code, message = await code_of(agent, "MemAgentMemcgSet", agent_pb2.MemAgentMemcgConfig())
    assert (code, message) == (Code.INTERNAL, "mem-agent is disabled")
    for method, req in [
        ("GetGuestDetails", agent_pb2.GuestDetailsRequest()),
        ("SetPolicy", agent_pb2.SetPolicyRequest(policy="package agent_policy\n")),
        ("ListInterfaces", agent_pb2.ListInterfacesRequest()),
    ]:
        code, message = await code_of(agent, method, req)
        assert code == Code.PERMISSION_DENIED, method
        assert message == f"{type(req).__name__} is blocked by policy: "
    async with await agent.client() as client:
        assert (await client.health.Check(health_pb2.CheckRequest())).status == 1


async def test_a_default_policy_that_does_not_load_closes_the_agent(
    agent_factory: Factory, tmp_path: Path
) -> None:
    bad = tmp_path / "default-policy.rego"
    bad.write_text("package agent_policy\nX := {")
    agent = agent_factory(args=["--policy-file", str(bad)])
    for method, req in [
        ("GetGuestDetails", agent_pb2.GuestDetailsRequest()),
        ("SetPolicy", agent_pb2.SetPolicyRequest(policy=policy_text("allow-all"))),
    ]:
        code, message = await code_of(agent, method, req)
        assert code == Code.PERMISSION_DENIED
        assert f"the default policy {bad} could not be loaded: invalid policy" in message
    async with await agent.client() as client:
        assert (await client.health.Check(health_pb2.CheckRequest())).status == 1


@pytest.fixture
def no_engine(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import regopy`` fails, as on an image built without it."""
    fake = tmp_path / "no-engine" / "regopy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("regopy is not installed")\n')
    return {"PYTHONPATH": f"{fake.parent}:{REPO}"}


async def test_without_the_engine_set_policy_is_unimplemented(
    agent_factory: Factory, no_engine: dict[str, str]
) -> None:
    agent = agent_factory(env=no_engine)
    code, message = await code_of(
        agent, "SetPolicy", agent_pb2.SetPolicyRequest(policy=policy_text("allow-all"))
    )
    assert code == Code.UNIMPLEMENTED
    assert "this agent has no policy engine: install kata-agent-py[policy]" in message
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND


async def test_without_the_engine_a_default_policy_closes_the_agent(
    agent_factory: Factory, no_engine: dict[str, str]
) -> None:
    agent = agent_factory(env=no_engine, args=["--policy-file", str(ALLOW_ALL)])
    code, message = await code_of(agent, "GetGuestDetails", agent_pb2.GuestDetailsRequest())
    assert code == Code.PERMISSION_DENIED
    assert "this agent has no policy engine" in message


def test_grpc_requests_are_decided_too(agent_factory: Factory, tmp_path: Path) -> None:
    import grpc

    gpath = tmp_path / "grpc.sock"
    agent_factory(
        args=[
            "--grpc-addr",
            f"unix://{gpath}",
            "--policy-file",
            str(POLICIES / "allow-all-except-exec-process.rego"),
        ]
    )
    with grpc.insecure_channel(f"unix://{gpath}") as channel:
        exec_process = channel.unary_unary(
            "/grpc.AgentService/ExecProcess",
            request_serializer=agent_pb2.ExecProcessRequest.SerializeToString,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as info:
            exec_process(NO_CONTAINER, timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "ExecProcessRequest is blocked by policy: "
        with pytest.raises(grpc.RpcError) as info:  # malformed input: checked first
            exec_process(agent_pb2.ExecProcessRequest(container_id="c\0"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "ExecProcessRequest.container_id: contains a NUL byte"


def _engine_mapped(agent: AgentProcess) -> bool:
    return "librego_shared.so" in Path(f"/proc/{agent.pid}/maps").read_text()


async def test_without_a_policy_the_engine_is_not_even_loaded(agent: AgentProcess) -> None:
    await call(agent, "GetGuestDetails", agent_pb2.GuestDetailsRequest())
    assert (await code_of(agent, "ExecProcess", NO_CONTAINER))[0] == Code.NOT_FOUND
    assert not _engine_mapped(agent)
    assert decisions(agent) == []
    await set_policy(agent, policy_text("allow-all"))
    assert _engine_mapped(agent)
