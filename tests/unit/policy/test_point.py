"""agent.policy.point and agent.policy.guard: decisions in the dispatch path, the state lock,
commits after the handler, the default policy file."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("regopy")

from google.protobuf import empty_pb2

from agent.config import defaults
from agent.errors import Internal, PermissionDenied
from agent.policy import start
from agent.policy.engine import CompiledPolicy
from agent.policy.point import INITIAL_DATA, PolicyPoint
from agent.rpc.dispatch import AGENT_SERVICE, Dispatcher
from agent.rpc.pb import agent_pb2
from agent.services import Services
from tests.support.policy import policy_text

PSTATE = policy_text("pstate")


def point_with(text: str) -> PolicyPoint:
    p = PolicyPoint()
    p.install(CompiledPolicy(text, INITIAL_DATA, p.entrypoints()), source="test")
    return p


def create(cid: str, args: list[str]) -> agent_pb2.CreateContainerRequest:
    req = agent_pb2.CreateContainerRequest(container_id=cid)
    req.OCI.Process.Args.extend(args)
    return req


def exec_(cid: str, args: list[str]) -> agent_pb2.ExecProcessRequest:
    req = agent_pb2.ExecProcessRequest(container_id=cid, exec_id="e")
    req.process.Args.extend(args)
    return req


class Servicer:
    """Records the calls that got through; CreateContainer fails for ids starting with 'bad'."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def CreateContainer(self, req: Any) -> empty_pb2.Empty:
        self.calls.append(f"create {req.container_id}")
        if self.gate is not None:
            await self.gate.wait()
        if req.container_id.startswith("bad"):
            raise Internal("create failed")
        return empty_pb2.Empty()

    async def ExecProcess(self, req: Any) -> empty_pb2.Empty:
        self.calls.append(f"exec {req.container_id}")
        return empty_pb2.Empty()

    async def ReadStdout(self, req: Any) -> agent_pb2.ReadStreamResponse:
        return agent_pb2.ReadStreamResponse(data=b"async")

    def try_ReadStdout(self, req: Any) -> agent_pb2.ReadStreamResponse:
        return agent_pb2.ReadStreamResponse(data=b"now")

    async def SetPolicy(self, req: Any) -> empty_pb2.Empty:
        self.calls.append("set")
        return empty_pb2.Empty()


async def started(dispatcher: Dispatcher, policy_file: Path) -> PolicyPoint:
    services = Services(config=defaults())
    await start(services, dispatcher, policy_file)
    return services.policy


async def guarded_dispatcher(text: str) -> tuple[Dispatcher, Servicer, PolicyPoint]:
    servicer = Servicer()
    dispatcher = Dispatcher({}, deferred=[AGENT_SERVICE])
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "default-policy.rego"
        policy.write_text(text)
        point = await started(dispatcher, policy)
    dispatcher.add(AGENT_SERVICE, servicer)  # guarded when it is bound
    return dispatcher, servicer, point


async def test_no_policy_binds_the_handlers_as_they_are(tmp_path: Path) -> None:
    dispatcher = Dispatcher({AGENT_SERVICE: Servicer()})
    services = Services(config=defaults())
    await start(services, dispatcher, tmp_path / "none.rego")
    assert not services.built("policy")  # nothing imported or built without a policy
    point = services.policy
    assert not point.active
    bound = dispatcher.lookup(AGENT_SERVICE, "CreateContainer")
    assert bound.handler is not None
    assert bound.handler.__self__.__class__ is Servicer  # type: ignore[attr-defined]


async def test_handlers_decide_first() -> None:
    dispatcher, servicer, _ = await guarded_dispatcher(policy_text("allow-all-except-exec-process"))
    create_bound = dispatcher.lookup(AGENT_SERVICE, "CreateContainer")
    assert create_bound.handler is not None
    await create_bound.handler(create("c1", ["true"]))
    exec_bound = dispatcher.lookup(AGENT_SERVICE, "ExecProcess")
    assert exec_bound.handler is not None
    with pytest.raises(PermissionDenied, match=r"^ExecProcessRequest is blocked by policy: $"):
        await exec_bound.handler(exec_("c1", ["sh"]))
    assert servicer.calls == ["create c1"]
    set_bound = dispatcher.lookup(AGENT_SERVICE, "SetPolicy")
    assert set_bound.handler == servicer.SetPolicy  # decides about itself


async def test_policy_set_later_guards_the_bound_methods(tmp_path: Path) -> None:
    servicer = Servicer()
    dispatcher = Dispatcher({AGENT_SERVICE: servicer})
    point = await started(dispatcher, tmp_path / "none.rego")
    await point.set_policy(policy_text("allow-all-except-exec-process"))
    bound = dispatcher.lookup(AGENT_SERVICE, "ExecProcess")
    assert bound.handler is not None
    with pytest.raises(PermissionDenied):
        await bound.handler(exec_("c1", ["sh"]))


async def test_the_synchronous_variant_decides_too() -> None:
    dispatcher, _, _ = await guarded_dispatcher(policy_text("read-stream"))
    bound = dispatcher.now_bound(AGENT_SERVICE, "ReadStdout")
    assert bound is not None
    assert bound.now is not None
    ok = agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=100)
    reply: Any = bound.now(ok)
    assert reply.data == b"now"
    with pytest.raises(PermissionDenied, match="ReadStreamRequest is blocked by policy"):
        bound.now(agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=1 << 20))


async def test_state_commits_after_the_handler_and_only_if_it_succeeded() -> None:
    dispatcher, servicer, point = await guarded_dispatcher(PSTATE)
    create_c = dispatcher.lookup(AGENT_SERVICE, "CreateContainer").handler
    exec_c = dispatcher.lookup(AGENT_SERVICE, "ExecProcess").handler
    assert create_c is not None
    assert exec_c is not None
    with pytest.raises(PermissionDenied):
        await exec_c(exec_("c1", ["echo"]))
    with pytest.raises(Internal):
        await create_c(create("bad1", ["true"]))
    with pytest.raises(PermissionDenied):  # not recorded: the create failed
        await exec_c(exec_("bad1", ["echo"]))
    await create_c(create("c1", ["true"]))
    await exec_c(exec_("c1", ["echo"]))
    assert point.policy is not None
    assert point.policy.data == {"pstate": {"containers": {"c1": ["true"]}}}
    assert servicer.calls == ["create bad1", "create c1", "exec c1"]


async def test_stateful_requests_wait_for_the_commit_before() -> None:
    dispatcher, servicer, point = await guarded_dispatcher(PSTATE)
    create_c = dispatcher.lookup(AGENT_SERVICE, "CreateContainer").handler
    assert create_c is not None
    servicer.gate = asyncio.Event()
    first = asyncio.ensure_future(create_c(create("c1", ["true"])))
    second = asyncio.ensure_future(create_c(create("c2", ["true"])))
    await asyncio.sleep(0.05)
    assert servicer.calls == ["create c1"]  # c2 is decided only once c1 has committed
    servicer.gate.set()
    await asyncio.gather(first, second)
    assert point.policy is not None
    assert point.policy.data["pstate"]["containers"] == {"c1": ["true"], "c2": ["true"]}


async def test_a_cancelled_request_releases_the_state_lock() -> None:
    dispatcher, servicer, point = await guarded_dispatcher(PSTATE)
    create_c = dispatcher.lookup(AGENT_SERVICE, "CreateContainer").handler
    assert create_c is not None
    servicer.gate = asyncio.Event()
    task = asyncio.ensure_future(create_c(create("c1", ["true"])))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    servicer.gate.set()
    await asyncio.wait_for(create_c(create("c2", ["true"])), 10)
    assert point.policy is not None
    assert point.policy.data["pstate"]["containers"] == {"c2": ["true"]}


async def test_ops_that_do_not_apply_deny_before_the_handler() -> None:
    text = PSTATE.replace(
        '{"op": "add", "path": "/pstate/containers", "value": {}},',
        '{"op": "remove", "path": "/pstate/nothing"},',
    )
    dispatcher, servicer, _ = await guarded_dispatcher(text)
    create_c = dispatcher.lookup(AGENT_SERVICE, "CreateContainer").handler
    assert create_c is not None
    with pytest.raises(PermissionDenied, match="its ops do not apply to the policy data"):
        await create_c(create("c1", ["true"]))
    assert servicer.calls == []


async def test_set_policy_checks_itself_against_the_current_one() -> None:
    point = point_with(policy_text("no-set-policy"))
    with pytest.raises(PermissionDenied, match=r"^SetPolicyRequest is blocked by policy"):
        await point.set_policy(policy_text("allow-all"))
    assert point.policy is not None
    assert "default SetPolicyRequest := false" in point.policy.text


async def test_a_missing_default_policy_file_means_no_policy(tmp_path: Path) -> None:
    point = PolicyPoint()
    await point.load_default(tmp_path / "absent.rego")
    assert not point.active


async def test_an_unreadable_default_policy_closes(tmp_path: Path) -> None:
    activated = []
    point = PolicyPoint(on_active=lambda: activated.append(1))
    await point.load_default(tmp_path)  # a directory
    assert point.active
    assert activated == [1]
    decision = point.decide("GuestDetailsRequest", agent_pb2.GuestDetailsRequest())
    assert not decision.allowed
    assert decision.message.startswith(
        f"GuestDetailsRequest is blocked by policy: the default policy {tmp_path} could not be "
        "loaded: [Errno 21] Is a directory"
    )
