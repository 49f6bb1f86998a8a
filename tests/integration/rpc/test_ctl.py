"""kata-agent-ctl against a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.agent import REPO, AgentProcess


def ctl(addr: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.ctl", "--addr", addr, "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        input=stdin,
        check=False,
    )


def test_check_version_guest_details(agent: AgentProcess) -> None:
    done = ctl(agent.address, "check")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "SERVING"}
    done = ctl(agent.address, "version")
    assert json.loads(done.stdout) == {"grpc_version": "0.0.1", "agent_version": "0.1.0"}
    done = ctl(agent.address, "guest-details")
    assert done.returncode == 0, done.stderr
    details = json.loads(done.stdout)
    assert details["agent_details"]["version"] == "0.1.0"
    assert "mem_block_size_bytes" in details


def test_call_any_method_with_json(agent: AgentProcess) -> None:
    done = ctl(agent.address, "call", "GetGuestDetails", "--json", '{"mem_block_size": true}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agent_details"]["version"] == "0.1.0"
    for name in ("Health.Check", "grpc.Health/Check", "/grpc.Health/Check", "Check"):
        done = ctl(agent.address, "call", name)
        assert json.loads(done.stdout) == {"status": "SERVING"}, name
    path = agent.run_dir / "shared" / "containers" / "hello"
    request = json.dumps({"path": str(path), "file_size": 3, "file_mode": 0o100644, "data": "aGkK"})
    done = ctl(agent.address, "call", "CopyFile", "--json", "-", stdin=request)
    assert done.returncode == 0, done.stderr
    assert Path(path).read_bytes() == b"hi\n"


def test_call_errors(agent_factory: Callable[..., AgentProcess]) -> None:
    agent = agent_factory(test_servicer=True)
    done = ctl(agent.address, "call", "SetPolicy", "--json", '{"policy": "x"}')
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "kata-agent-ctl: rpc error: code = Unimplemented "
        "desc = /grpc.AgentService/SetPolicy is not implemented by this agent"
    )
    done = ctl(agent.address, "call", "CopyFile", "--json", '{"path": "/etc/passwd"}')
    assert done.returncode == 1
    assert "code = PermissionDenied" in done.stderr
    done = ctl(agent.address, "call", "GetGuestDetails", "--json", '{"no_such_field": 1}')
    assert done.returncode == 2
    assert "not a valid grpc.GuestDetailsRequest" in done.stderr
    done = ctl(agent.address, "call", "Frobnicate")
    assert done.returncode == 2
    assert "unknown method 'Frobnicate'" in done.stderr
    done = ctl(agent.address, "call", "--list", "x")
    assert "/grpc.AgentService/CreateContainer grpc.CreateContainerRequest" in done.stdout
    assert len(done.stdout.splitlines()) == 44


def test_unreachable_agent(tmp_path: Path) -> None:
    done = ctl(f"unix://{tmp_path}/nothing.sock", "check")
    assert done.returncode == 1
    assert done.stderr.startswith(f"kata-agent-ctl: unix://{tmp_path}/nothing.sock: ")
    assert "No such file or directory" in done.stderr
