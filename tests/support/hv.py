"""Start kata-agent-hv (``python -m hv``) in a test and talk to it as the Kata runtime does.

::

    hv = start_hv(build_dir)                # its own short temp dir: socket, state, shared root
    resp = await hv.call("CreateVM", hypervisor_pb2.CreateVMRequest(id="s1"))
    hv.stop()                               # SIGTERM (every VM stops), then its exit status

Each call is made on a fresh connection, as the runtime's remote hypervisor does
(virtcontainers/remote.go). The service runs in its own session; ``stop`` kills the whole process
group if SIGTERM did not end it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.rpc.dispatch import HYPERVISOR_SERVICE
from tests.support.agent import stop_session

REPO = Path(__file__).resolve().parents[2]


@dataclass
class HvProcess:
    proc: subprocess.Popen[bytes]
    workdir: Path
    socket: Path
    state_dir: Path
    shared_root: Path
    log_path: Path

    async def call(self, method: str, request: Any, *, timeout: float = 300) -> Any:  # noqa: ASYNC109
        from agent.rpc.client import TtrpcClient

        async with await TtrpcClient.connect(f"unix://{self.socket}", timeout=10) as client:
            return await client.call(HYPERVISOR_SERVICE, method, request, timeout=timeout)

    def logs(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"raw": line})
        return records

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (every VM stops), then SIGKILL its process group; its exit status."""
        return stop_session(self.proc, timeout)

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_hv(
    build: Path, *args: str, prefix: tuple[str, ...] = (), workdir: Path | None = None
) -> HvProcess:
    """Start the service on a fresh socket and wait until it accepts connections (``workdir``:
    the directories of an earlier service, to start it again on them)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="khv-", dir="/tmp"))
    sock, state, shared = workdir / "hv.sock", workdir / "st", workdir / "shared"
    log_path = workdir / "hv.log"
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "hv",
        "--socket",
        str(sock),
        "--build",
        str(build),
        "--state-dir",
        str(state),
        "--shared-root",
        str(shared),
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
    hv = HvProcess(proc, workdir, sock, state, shared, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"kata-agent-hv exited ({proc.returncode}):\n{log_path.read_text()}")
        with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
            s.connect(str(sock))
            return hv
        if time.monotonic() > deadline:
            hv.stop()
            raise RuntimeError(f"kata-agent-hv did not listen in 30 s:\n{log_path.read_text()}")
        time.sleep(0.02)
