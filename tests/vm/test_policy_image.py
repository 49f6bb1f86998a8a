"""The image with the agent policy engine (``make image POLICY=1``) in a real VM: the default
policy at /etc/kata-opa/default-policy.rego is in force from boot, SetPolicy replaces it, the
guest's interpreter runs the engine (and its checking child process), containers are decided.

The image is built into build/policy (its own rootfs and initrd; the kernel and downloads are
taken from build/), and booted once for this module.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.support.policy import ALLOW_ALL, policy_text
from tests.vm.guest import GuestAgent, build_image, console_run, shared_storage
from tests.vm.test_guest import _create_and_start, _make_container_rootfs, _read_all

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
POLICY_BUILD = BUILD / "policy"


@pytest.fixture(scope="module")
def policy_image(guest_image: dict[str, Any]) -> dict[str, Any]:
    """guest_image first: the kernel and downloads it prepared are copied, not fetched again."""
    POLICY_BUILD.mkdir(parents=True, exist_ok=True)
    for part in ("kernel", "cache"):
        if not (POLICY_BUILD / part).exists():
            shutil.copytree(BUILD / part, POLICY_BUILD / part, symlinks=True)
    return build_image(POLICY_BUILD, "--policy", str(ALLOW_ALL))


@pytest.fixture(scope="module")
def policy_guest(policy_image: dict[str, Any], boot_guest: Callable[..., Any]) -> Any:
    return boot_guest(image=policy_image)


@pytest.fixture(scope="module")
def policy_agent(policy_guest: Any) -> Iterator[GuestAgent]:
    conn = GuestAgent(policy_guest.agent_sock)
    try:
        yield conn
    finally:
        conn.close()


def test_the_initrd_stays_under_25_mb(policy_image: dict[str, Any]) -> None:
    assert policy_image["initrd_bytes"] <= 25_000_000
    assert policy_image["policy"] == str(ALLOW_ALL)


def test_the_default_policy_is_in_force_from_boot(
    policy_guest: Any, policy_agent: GuestAgent
) -> None:
    out = console_run(policy_guest, "head -1 /etc/kata-opa/default-policy.rego")
    assert "The image's default policy" in out
    details = policy_agent.call("GetGuestDetails", agent_pb2.GuestDetailsRequest())
    assert details.agent_details.init_daemon
    policy_agent.call(
        "CreateSandbox",
        agent_pb2.CreateSandboxRequest(
            hostname="policy-vm",
            storages=[shared_storage(policy_guest.share_mode)],
            sandbox_id=f"vm-{uuid.uuid4().hex[:12]}",
        ),
    )


def test_a_policy_the_engine_crashes_on_leaves_the_guest_running(
    policy_agent: GuestAgent,
) -> None:
    crash = "package agent_policy\nf(a) := true\nf(a, b) := true\nX if { f(1, 2) }\n"
    with pytest.raises(RpcError) as info:
        policy_agent.call("SetPolicy", agent_pb2.SetPolicyRequest(policy=crash), timeout=300)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "the policy engine crashed compiling it" in info.value.message
    policy_agent.check()


def test_set_policy_and_decisions_on_containers(
    policy_guest: Any, policy_agent: GuestAgent
) -> None:
    policy_agent.call(
        "SetPolicy", agent_pb2.SetPolicyRequest(policy=policy_text("pinned-args")), timeout=300
    )
    cid = f"c{uuid.uuid4().hex[:10]}"
    _make_container_rootfs(policy_guest, cid)
    _create_and_start(policy_agent, cid, ["sh", "-c", "echo pinned"])
    assert "pinned" in _read_all(policy_agent, cid, cid)
    policy_agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    policy_agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=cid))
    other = f"c{uuid.uuid4().hex[:10]}"
    _make_container_rootfs(policy_guest, other)
    with pytest.raises(RpcError) as info:
        _create_and_start(policy_agent, other, ["sh", "-c", "echo other"])
    assert info.value.code == Code.PERMISSION_DENIED
    assert info.value.message == "CreateContainerRequest is blocked by policy: "
