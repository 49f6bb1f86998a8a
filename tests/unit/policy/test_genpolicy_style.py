"""tests/support/policies/genpolicy-style.rego: the realistic policy the bench measures.

It is written to the effect of the policies genpolicy generates, so on the requests of Kata's own
policy test cases that do not depend on a pod's data (CopyFile, CreateSandbox, UpdateInterface,
UpdateRoutes, AddARPNeighbors) it must give Kata's verdicts, on the input the agent builds for
them. Its CreateContainer/ExecProcess/RemoveContainer rules are exercised on the bench's pod.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("regopy")

from agent.ctl.container_spec import container_spec, exec_process
from agent.errors import PermissionDenied
from agent.policy.engine import CompiledPolicy
from agent.policy.point import INITIAL_DATA, PolicyPoint
from agent.policy.serialize import request_from_input
from agent.rpc.pb import agent_pb2
from tests.support.policy import GENPOLICY_STYLE, pod_annotations
from tests.unit.policy.test_serialize import CASES

KINDS = {
    "AddARPNeighborsRequest",
    "CopyFileRequest",
    "CreateSandboxRequest",
    "UpdateInterfaceRequest",
    "UpdateRoutesRequest",
}
KATA_CASES = [(n, c) for n, c in CASES if c["kind"] in KINDS]
ROOTFS = "/tmp/kag-bench-abc123/rootfs"


@pytest.fixture(scope="module")
def point() -> PolicyPoint:
    p = PolicyPoint()
    text = GENPOLICY_STYLE.read_text()
    p.install(CompiledPolicy(text, INITIAL_DATA, p.entrypoints()), source="test")
    return p


def test_kata_cases_cover_every_kind() -> None:
    assert {c["kind"] for _, c in KATA_CASES} == KINDS
    assert len(KATA_CASES) == 41


@pytest.mark.parametrize(("name", "case"), KATA_CASES, ids=[n for n, _ in KATA_CASES])
def test_kata_verdicts(point: PolicyPoint, name: str, case: dict[str, Any]) -> None:
    req = request_from_input(getattr(agent_pb2, case["kind"]), case["request"])
    decision = point.decide(case["kind"], req)
    assert decision.allowed is case["allowed"], (case["description"], decision.message)


def create(cid: str, name: str, args: list[str], **kw: Any) -> agent_pb2.CreateContainerRequest:
    annotations = kw.pop("annotations", pod_annotations(name))
    spec = container_spec(ROOTFS, args, annotations=annotations, **kw)
    return agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)


def apply(point: PolicyPoint, name: str, req: Any) -> None:
    """Decide and, as the agent does after the handler succeeded, commit the ops."""
    answer = point._check(name, req)
    if answer.ops:
        assert point.policy is not None
        point.policy = point.policy.with_data(point._patched(name, answer))


def test_the_pod(point: PolicyPoint) -> None:
    pod = PolicyPoint()
    assert point.policy is not None
    pod.install(point.policy.with_data(INITIAL_DATA), source="test")

    apply(pod, "CreateContainerRequest", create("box", "box", ["sleep", "1000000"]))
    assert pod.policy is not None
    state = pod.policy.data["pstate"]
    assert state == {"sandbox_name": "bench", "namespace": "default", "containers": {"box": 1}}

    echo = agent_pb2.ExecProcessRequest(
        container_id="box", exec_id="e", process=exec_process(["echo", "x"])
    )
    assert pod.decide("ExecProcessRequest", echo).allowed
    other = agent_pb2.ExecProcessRequest(
        container_id="box", exec_id="e", process=exec_process(["sh"])
    )
    assert not pod.decide("ExecProcessRequest", other).allowed
    nowhere = agent_pb2.ExecProcessRequest(
        container_id="nope", exec_id="e", process=exec_process(["echo", "x"])
    )
    assert not pod.decide("ExecProcessRequest", nowhere).allowed

    # a second container: the sandbox is known now; a different sandbox name is refused
    apply(pod, "CreateContainerRequest", create("run1", "cycle", ["true"]))
    with pytest.raises(PermissionDenied, match="CreateContainerRequest is blocked by policy"):
        apply(
            pod,
            "CreateContainerRequest",
            create(
                "run2", "cycle", ["true"], annotations=pod_annotations("cycle", sandbox="other")
            ),
        )
    with pytest.raises(PermissionDenied):  # an id already admitted
        apply(pod, "CreateContainerRequest", create("run1", "cycle", ["true"]))

    apply(pod, "RemoveContainerRequest", agent_pb2.RemoveContainerRequest(container_id="box"))
    assert pod.policy.data["pstate"]["containers"] == {"run1": 0}
    assert not pod.decide("ExecProcessRequest", echo).allowed


@pytest.mark.parametrize(
    ("what", "kw", "args"),
    [
        ("args", {}, ["sh", "-c", "id"]),
        ("an unknown container name", {"annotations": pod_annotations("nope")}, ["true"]),
        ("an added env var", {"env": ["SECRET=1"]}, ["true"]),
        ("a terminal", {"terminal": True}, ["true"]),
        ("another cwd", {"cwd": "/tmp"}, ["true"]),
        ("a read-only root", {"readonly_root": True}, ["true"]),
        ("no annotations", {"annotations": {}}, ["true"]),
    ],
)
def test_create_container_denials(
    point: PolicyPoint, what: str, kw: dict[str, Any], args: list[str]
) -> None:
    decision = point.decide("CreateContainerRequest", create("c1", "cycle", args, **kw))
    assert not decision.allowed, what
    assert decision.message.startswith("CreateContainerRequest is blocked by policy: ")


def test_create_container_mounts_and_storages(point: PolicyPoint) -> None:
    req = create("c1", "cycle", ["true"])
    assert point.decide("CreateContainerRequest", req).allowed
    bad = agent_pb2.CreateContainerRequest()
    bad.CopyFrom(req)
    bad.OCI.Mounts[0].source = "/etc"
    assert not point.decide("CreateContainerRequest", bad).allowed
    bad.CopyFrom(req)
    bad.storages.add(driver="blk", source="00/00", mount_point="/x")
    assert not point.decide("CreateContainerRequest", bad).allowed


def test_constant_and_evaluated_answers(point: PolicyPoint) -> None:
    policy = point.policy
    assert policy is not None
    assert policy.constant("ReadStreamRequest") is not None  # reads only policy_data
    assert policy.constant("WaitProcessRequest") is not None
    assert policy.constant("GetIPTablesRequest") is not None  # undefined: denied
    for name in ("CreateContainerRequest", "ExecProcessRequest", "CopyFileRequest"):
        assert policy.constant(name) is None
    assert json.dumps(policy.info("CreateContainerRequest").prints)
