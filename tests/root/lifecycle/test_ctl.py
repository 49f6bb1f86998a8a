"""kata-agent-ctl run / exec / kill / ps against a real agent (as a user types them)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.root.lifecycle.conftest import Pod

REPO = Path(__file__).resolve().parents[3]


async def ctl(pod: Pod, *argv: str, stdin: bytes | Path = b"") -> tuple[int, bytes, bytes]:
    """Run kata-agent-ctl; ``stdin`` is piped bytes, or a path opened as its stdin."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if isinstance(stdin, Path):
        with stdin.open("rb") as f:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.ctl",
                "--addr",
                pod.agent.address,
                *argv,
                stdin=f,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out, err
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.ctl",
        "--addr",
        pod.agent.address,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_run_prints_output_and_exits_with_status(pod: Pod) -> None:
    code, out, err = await ctl(
        pod,
        "run",
        "--rootfs",
        str(pod.rootfs),
        "--id",
        "r1",
        "--",
        "sh",
        "-c",
        "echo hi; echo warn >&2; exit 3",
    )
    assert (code, out, err) == (3, b"hi\n", b"warn\n")
    # cleaned up: the id can be used again
    code, out, _ = await ctl(
        pod, "run", "--rootfs", str(pod.rootfs), "--id", "r1", "--", "cat", stdin=b"from stdin\n"
    )
    assert (code, out) == (0, b"from stdin\n")


async def test_run_with_stdin_from_dev_null_or_a_file(pod: Pod, tmp_path: Path) -> None:
    """Non-interactive use: epoll refuses /dev/null and regular files; they still work."""
    code, out, err = await ctl(
        pod, "run", "--rootfs", str(pod.rootfs), "--", "cat", stdin=Path("/dev/null")
    )
    assert (code, out) == (0, b""), err
    data = tmp_path / "input.txt"
    data.write_bytes(b"line 1\nline 2\n")
    code, out, err = await ctl(pod, "run", "--rootfs", str(pod.rootfs), "--", "cat", stdin=data)
    assert (code, out) == (0, b"line 1\nline 2\n"), err


async def test_run_with_tty(pod: Pod) -> None:
    code, out, _ = await ctl(
        pod, "run", "-t", "--rootfs", str(pod.rootfs), "--", "sh", "-c", "test -t 0 && echo tty"
    )
    assert code == 0
    assert out == b"tty\r\n"


async def test_exec_kill_ps(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "1000"])
    code, out, _ = await ctl(pod, "exec", "c1", "--", "sh", "-c", "echo in-c1; exit 5")
    assert (code, out) == (5, b"in-c1\n")
    code, out, _ = await ctl(pod, "ps", "c1", "nope")
    assert code == 1
    lines = out.decode().splitlines()
    assert lines[0].split()[0] == "CONTAINER"
    assert lines[1].split()[0] == "c1"
    assert "not found" in lines[2]
    code, _, err = await ctl(pod, "kill", "-s", "TERM", "c1")
    assert code == 0, err
    assert await pod.wait("c1", "c1") == 137  # sleep as PID 1 has no TERM handler: upgraded
    code, _, err = await ctl(pod, "kill", "c1", "nope")
    assert code == 1
    assert b"not found" in err


async def test_run_destroy_sandbox_ends_the_agent(pod: Pod) -> None:
    """--destroy-sandbox destroys the sandbox even when an earlier run created it."""
    code, _, err = await ctl(pod, "run", "--rootfs", str(pod.rootfs), "--", "true")
    assert code == 0, err
    code, _, err = await ctl(
        pod, "run", "--destroy-sandbox", "--rootfs", str(pod.rootfs), "--", "true"
    )
    assert code == 0, err
    await asyncio.to_thread(pod.agent.proc.wait, 30)  # DestroySandbox stops the agent
    assert not pod.agent.alive()
