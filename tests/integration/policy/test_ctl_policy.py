"""kata-agent-ctl policy set / policy eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("regopy")

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.integration.rpc.test_ctl import ctl
from tests.support.agent import AgentProcess
from tests.support.policy import GENPOLICY_STYLE, POLICIES

EXCEPT_EXEC = str(POLICIES / "allow-all-except-exec-process.rego")
RESOLV = (
    "/run/kata-containers/shared/containers/"
    "81e5f43bc8599c5661e66f959ac28df5bfb30da23c5d583f2dcc6f9e0c5186dc-ce23cfeb91e75aaa-resolv.conf"
)


async def test_policy_set(agent: AgentProcess) -> None:
    done = ctl(agent.address, "policy", "set", EXCEPT_EXEC)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"policy set: {EXCEPT_EXEC}\n"
    async with await agent.client() as client:
        with pytest.raises(RpcError) as info:
            await client.agent.ExecProcess(agent_pb2.ExecProcessRequest(container_id="c"))
    assert info.value.code == Code.PERMISSION_DENIED
    done = ctl(agent.address, "policy", "set", EXCEPT_EXEC)  # allowed by it: replaces itself
    assert done.returncode == 0, done.stderr


def evaluate(*args: str) -> tuple[int, dict[str, object]]:
    done = ctl("unix:///nonexistent", "policy", "eval", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_eval_allowed_and_denied() -> None:
    status, result = evaluate(EXCEPT_EXEC, "ExecProcess", "--json", '{"container_id": "c"}')
    assert status == 1
    assert result == {
        "request": "ExecProcessRequest",
        "allowed": False,
        "defined": True,
        "ops": [],
        "prints": "",
        "message": "ExecProcessRequest is blocked by policy: ",
    }
    status, result = evaluate(EXCEPT_EXEC, "ReadStdout")
    assert (status, result["request"], result["allowed"]) == (0, "ReadStreamRequest", True)


def test_eval_with_the_agents_input() -> None:
    request = json.dumps({"path": RESOLV, "file_type": "Regular", "stale": 1})
    status, result = evaluate(str(GENPOLICY_STYLE), "CopyFile", "--json", request, "--show-input")
    assert status == 0
    assert result["ignored_keys"] == ["stale"]
    assert result["input"] == {
        "path": RESOLV,
        "file_type": "Regular",
        "symlink_target": None,
        "file_size": 0,
        "file_mode": 0o100000,
        "dir_mode": 0,
        "uid": 0,
        "gid": 0,
        "offset": 0,
    }
    assert result["prints"] == f"CopyFileRequest: path {RESOLV} type Regular"
    proto = json.dumps({"path": "/etc/ssl/cert.pem", "file_mode": 0o100644})
    status, result = evaluate(
        str(GENPOLICY_STYLE), "CopyFileRequest", "--json", proto, "--proto-json"
    )
    assert status == 1
    assert str(result["message"]).startswith("CopyFileRequest is blocked by policy: ")


def test_eval_with_policy_state() -> None:
    pstate = str(POLICIES / "pstate.rego")
    request = json.dumps({"container_id": "c1", "process": {"Args": ["echo", "x"]}})
    status, result = evaluate(pstate, "ExecProcess", "--json", request)
    assert status == 1
    state = json.dumps({"containers": {"c1": ["sleep", "1"]}})
    status, result = evaluate(pstate, "ExecProcess", "--json", request, "--state", state)
    assert status == 0
    status, result = evaluate(
        pstate, "RemoveContainer", "--json", '{"container_id": "c1"}', "--state", state
    )
    assert result["ops"] == [{"op": "remove", "path": "/pstate/containers/c1"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nonexistent.rego", "ExecProcess"], "nonexistent.rego: [Errno 2]"),
        ([EXCEPT_EXEC, "Nope"], "unknown method 'Nope'"),
        ([EXCEPT_EXEC, "ExecProcess", "--json", "{"], "--json is not valid JSON"),
        (
            [EXCEPT_EXEC, "ExecProcess", "--json", '{"container_id": 1}'],
            "--json is not a valid ExecProcessRequest: container_id: expected a string",
        ),
    ],
)
def test_eval_bad_input(args: list[str], message: str) -> None:
    done = ctl("unix:///nonexistent", "policy", "eval", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_eval_bad_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text("package agent_policy\nf(a) := true\nf(a, b) := true\nX if { f(1, 2) }\n")
    done = ctl("unix:///nonexistent", "policy", "eval", str(bad), "ExecProcess")
    assert done.returncode == 2
    assert "the policy engine crashed compiling it" in done.stderr
