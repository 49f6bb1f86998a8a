"""Start a real agent process in a test and talk to it.

::

    def test_something(agent_factory):
        agent = agent_factory()                      # python -m agent on a fresh unix socket
        agent = agent_factory(test_servicer=True)    # with test-only behaviours (see _test_main)
        agent = agent_factory(prefix=["ip", "netns", "exec", ns])   # inside a network namespace
        agent = agent_factory(args=["--log-level", "debug"], env={...})

    async def test_call(agent):                      # the default agent, already answering Check
        async with await agent.client() as client:   # agent.rpc.client.TtrpcClient
            resp = await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest())

Each agent gets its own short temp directory (unix socket paths are limited to 107 bytes) with
``run/`` (``--run-dir``), ``sandbox-ns/`` (``--sandbox-ns-dir``), the socket ``agent.sock`` and its
log file ``agent.log`` (``AgentProcess.logs()`` parses the JSON lines). The agent never reads the
host's ``/proc/cmdline`` (``--cmdline-file none``). It runs in its own session, and the whole
process group is killed at teardown, whatever the test did.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK_FRAME = (
    # ttrpc Request{service: "grpc.Health", method: "Check"} on stream 1 (shared/ttrpc.md §7)
    struct.pack(">IIBB", 20, 1, 1, 0) + b"\x0a\x0bgrpc.Health\x12\x05Check"
)


# An unknown AgentService method: answered (UNIMPLEMENTED) only once the AgentService stack is
# loaded, so it tells "fully started" where Check only tells "listening" (two-phase start-up).
READY_FRAME = (
    struct.pack(">IIBB", 36, 1, 1, 0) + b"\x0a\x11grpc.AgentService\x12\x0f__ready_probe__"
)


class AgentStartError(RuntimeError):
    pass


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    workdir: Path
    address: str
    socket_path: Path | None
    run_dir: Path
    sandbox_ns_dir: Path
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def client(self, timeout: float = 10.0) -> Any:  # noqa: ASYNC109 - connect timeout
        from agent.rpc.client import TtrpcClient

        return await TtrpcClient.connect(self.address, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log records so far (non-JSON lines are returned as {"raw": line})."""
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"raw": line})
        return records

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL the whole process group; returns the agent's exit status."""
        return stop_session(self.proc, timeout)


def stop_session(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM to a process started in its own session, then SIGKILL to its whole process group
    (whatever it left); returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    return proc.returncode


def start_agent(
    *,
    prefix: Sequence[str] = (),
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    address: str | None = None,
    log_level: str = "debug",
    wait: bool = True,
    timeout: float = 30.0,
    test_servicer: bool = False,
    bare: bool = False,
) -> AgentProcess:
    """Start ``python -m agent`` (optionally under ``prefix``) and wait until Check answers.

    ``bare``: pass only ``--cmdline-file none`` and ``args`` (to test configuration sources);
    ``address`` must then match what the configuration says, for waiting and clients."""
    workdir = Path(tempfile.mkdtemp(prefix="kag-", dir="/tmp"))
    run_dir = workdir / "run"
    ns_dir = workdir / "sandbox-ns"
    run_dir.mkdir()
    ns_dir.mkdir()
    socket_path: Path | None = None
    if address is None or address == "unix-abstract":
        if address == "unix-abstract":
            address = f"unix://@{workdir.name}.sock"
        else:
            socket_path = workdir / "agent.sock"
            address = f"unix://{socket_path}"
    elif address.startswith("unix:///"):
        socket_path = Path(address[len("unix://") :])
    log_path = workdir / "agent.log"
    flags = [
        "--server-addr",
        address,
        "--run-dir",
        str(run_dir),
        "--sandbox-ns-dir",
        str(ns_dir),
        "--log-level",
        log_level,
    ]
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "tests.support.agent" if test_servicer else "agent",
        "--cmdline-file",
        "none",
        *([] if bare else flags),
        *args,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KATA_AGENT_")}
    child_env["PYTHONPATH"] = str(REPO)
    child_env.update(env or {})
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=child_env,
            start_new_session=True,
        )
    agent = AgentProcess(proc, workdir, address, socket_path, run_dir, ns_dir, log_path, argv)
    if wait:
        try:
            wait_ready(agent, timeout)
        except BaseException:
            agent.stop()
            raise
    return agent


def wait_ready(agent: AgentProcess, timeout: float = 30.0) -> None:
    """Poll until the agent is fully started: its AgentService answers (needs a unix address)."""
    deadline = time.monotonic() + timeout
    path = agent.address[len("unix://") :]
    target = "\0" + path[1:] if path.startswith("@") else path
    while True:
        if agent.proc.poll() is not None:
            raise AgentStartError(
                f"agent exited with status {agent.proc.returncode} before answering Check:\n"
                + agent.log_text()
            )
        if check_once(target, frame=READY_FRAME):
            return
        if time.monotonic() > deadline:
            raise AgentStartError(
                f"agent did not answer Check within {timeout}s:\n{agent.log_text()}"
            )
        time.sleep(0.01)


def check_once(target: str, timeout: float = 5.0, frame: bytes = CHECK_FRAME) -> bool:
    """One request frame (Health.Check by default) on a new connection; True when a Response
    frame comes back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            return False
        return check_on(sock, frame)


def check_on(sock: socket.socket, frame: bytes = CHECK_FRAME) -> bool:
    """One request frame (Health.Check by default) on ``sock``; True when a Response frame
    comes back (its 10-byte header and the Check reply's 6 bytes are read)."""
    try:
        sock.sendall(frame)
        reply = b""
        while len(reply) < 10 or len(reply) < 10 + struct.unpack_from(">I", reply)[0]:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            reply += chunk
    except OSError:
        return False
    return reply[8] == 2  # a Response frame


@pytest.fixture
def agent_factory() -> Iterator[Callable[..., AgentProcess]]:
    """Start agents with ``start_agent`` options; all are killed and cleaned up at teardown."""
    started: list[AgentProcess] = []

    def factory(**kwargs: Any) -> AgentProcess:
        agent = start_agent(**kwargs)
        started.append(agent)
        return agent

    yield factory
    for agent in started:
        agent.stop()
        remove_workdir(agent.workdir)


def remove_workdir(workdir: Path) -> None:
    """Remove an agent's temp dir, unless something is still mounted below it (never delete
    through a mount)."""
    prefix = str(workdir) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            mount_point = line.split()[4]
            if mount_point.startswith(prefix) or mount_point == str(workdir):
                return
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    """One agent on a unix socket, answering Check."""
    return agent_factory()


# -- the test agent ------------------------------------------------------------------------------
# ``start_agent(test_servicer=True)`` runs ``python -m tests.support.agent`` (not ``-m agent``):
# the real agent with a few test-only behaviours layered over the real servicer:
#   * GetOOMEvent parks until cancelled (a long-poll without containers), logging "parked call
#     cancelled" when the client goes away;
#   * GetDiagnosticData returns int(container_id) bytes of data (oversized responses);
#   * SetPolicy is removed (a contract method without a handler -> UNIMPLEMENTED);
#   * SetGuestDateTime's clock is a fake that logs "fake clock set" instead of touching the host;
#   * KATA_TEST_STDIO_GRACE in the environment: the grace period (seconds) after which the stdio
#     of an exited process nobody reads is released (agent.sandbox.process), instead of a minute;
#   * with KATA_TEST_FAKE_HW=<dir>: CPU/memory hot-plug act on <dir>/sys, reseeding on <dir>/random.
#   * KATA_TEST_AREA_FAILS=AREA:N in the environment: the first N imports of that AgentService
#     area (agent.rpc.lazy_servicer) raise ImportError, whoever loads it (a call, the preload).


def _test_main(argv: list[str]) -> int:
    import asyncio as aio
    import logging

    from agent import app, cli
    from agent.services.guest import GuestService

    log = logging.getLogger("agent.testing")
    real_build_servicers = app.build_servicers
    real_build_services = app.build_services

    fake_hw = os.environ.get("KATA_TEST_FAKE_HW")  # a directory: sysfs and /dev/random there

    def build_services(config: Any) -> Any:
        services = real_build_services(config)
        if fake_hw:  # the real builder, pointed at the fake sysfs
            from agent.services.hardware import HardwareService

            build = HardwareService.build.__func__  # type: ignore[attr-defined]
            HardwareService.build = classmethod(  # type: ignore[method-assign,assignment]
                lambda cls, **kw: build(cls, **{**kw, "sysfs": Path(fake_hw) / "sys"})
            )
        services.guest = GuestService(
            config,
            set_clock=lambda t: log.info("fake clock set", extra={"clock": t}),
            storage_handlers=services.guest.storage_handlers,
            random_device=Path(fake_hw) / "random" if fake_hw else GuestService.random_device,
        )
        return services

    def build_servicers(services: Any) -> dict[str, object]:
        servicers = real_build_servicers(services)
        base = type(servicers["grpc.AgentService"])

        class TestServicer(base):  # type: ignore[valid-type,misc]
            SetPolicy = None

            async def GetOOMEvent(self, req: Any) -> Any:
                try:
                    await aio.Event().wait()
                except aio.CancelledError:
                    log.info("parked call cancelled")
                    raise

            async def GetDiagnosticData(self, req: Any) -> Any:
                from agent.rpc.pb import agent_pb2

                return agent_pb2.GetDiagnosticDataResponse(data="x" * int(req.container_id))

        servicers["grpc.AgentService"] = TestServicer(services)
        return servicers

    app.build_services = build_services
    app.build_servicers = build_servicers
    fails = os.environ.get("KATA_TEST_AREA_FAILS")
    if fails:
        from agent.rpc import lazy_servicer

        area, _, count = fails.partition(":")
        left = [int(count)]
        real_import_all = lazy_servicer._import_all

        def import_all(modules: tuple[str, ...]) -> None:
            if modules[0] == lazy_servicer.AREAS[area].module and left[0] > 0:
                left[0] -= 1
                raise ImportError(f"test: the {area} area does not import")
            real_import_all(modules)

        lazy_servicer._import_all = import_all
    grace = os.environ.get("KATA_TEST_STDIO_GRACE")
    if grace is not None:
        import dataclasses

        from agent.services import sandbox as lifecycle

        real_settings = lifecycle.lifecycle_settings

        def settings(config: Any) -> Any:
            return dataclasses.replace(real_settings(config), stdio_grace=float(grace))

        lifecycle.lifecycle_settings = settings
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(_test_main(sys.argv[1:]))
