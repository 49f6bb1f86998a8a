"""Helpers for the VM tier: one ttrpc connection to the guest's agent, the debug console."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from hv.shared import shared_storage as shared_storage  # the tier's tests import it from here

GUEST_SHARED = "/run/kata-containers/shared/containers"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def build_image(out: Path, *args: str) -> dict[str, Any]:
    """``make initrd`` into ``out`` (kernel and initrd, cached by their inputs); the manifest.
    Fails the test with the build's own message."""
    import json
    import subprocess

    import pytest

    build = [sys.executable, str(REPO / "image-build" / "build.py"), "--out", str(out)]
    proc = subprocess.run(
        [*build, "--no-disk", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"make image failed:\n{proc.stderr[-3000:]}", pytrace=False)
    manifest: dict[str, Any] = json.loads((out / "image.json").read_text())
    return manifest


def load_image_build(name: str) -> ModuleType:
    """Import image-build/<name>.py (the directory name is not a package name)."""
    mod_name = f"kata_image_build_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "image-build" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


class GuestAgent:
    """One ttrpc connection for the whole tier, as the Kata shim keeps one for a sandbox's life
    (a virtio-serial channel carries one connection; the guest may not notice a quick host
    reconnect). Sync tests drive it through a private event loop thread."""

    def __init__(self, agent_sock: Path) -> None:
        from agent.rpc.client import TtrpcClient

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.client = self.run(TtrpcClient.connect(f"unix://{agent_sock}", timeout=30))
        self._hello()

    def _hello(self, attempts: int = 12) -> None:
        """Host speaks first: a Check until answered. A request sent while the guest is still
        closing the previous host connection's session can be dropped, so retry (new ids)."""
        from agent.rpc.status import Code, RpcError

        for _ in range(attempts - 1):
            try:
                self.check(timeout=5)
                return
            except RpcError as err:
                # DEADLINE_EXCEEDED: dropped in the hand-over; INVALID_ARGUMENT "stream id 1 is
                # already active": the guest still serves the previous host connection's session.
                if err.code not in (Code.DEADLINE_EXCEEDED, Code.INVALID_ARGUMENT):
                    raise
        self.check()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, method: str, request: Any, *, timeout: float = 120) -> Any:
        """Call grpc.AgentService/<method>; raises agent.rpc.status.RpcError on a status."""
        return self.run(getattr(self.client.agent, method)(request, timeout=timeout))

    def check(self, timeout: float = 60) -> Any:
        from agent.rpc.pb import health_pb2

        return self.run(
            self.client.call("grpc.Health", "Check", health_pb2.CheckRequest(), timeout=timeout)
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.client.close(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def console_run(vm: Any, command: str, *, timeout: float = 90.0) -> str:
    """Run `command` in the debug console (virtio-serial port agent.console.0); its output."""
    marker = f"END-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(vm.console_sock))
        s.settimeout(1.0)
        # `END-""123` on the command line prints as END-123: the echo of the line never matches.
        s.sendall(f'stty -echo; {command}; echo {marker[:4]}""{marker[4:]}\n'.encode())
        out = b""
        deadline = time.monotonic() + timeout
        while marker.encode() not in out:
            if time.monotonic() > deadline:
                raise AssertionError(f"debug console: no answer in {timeout}s; got {out[-2000:]!r}")
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"debug console closed; got {out[-2000:]!r}")
            out += chunk
        with contextlib.suppress(OSError):
            s.sendall(b"exit\n")
        # Wait for the shell to go, so the next session starts on a fresh shell.
        with contextlib.suppress(OSError):
            s.settimeout(10)
            while s.recv(65536):
                pass
    text = out.decode(errors="replace").replace("\r\n", "\n")
    return text[: text.index(marker)]
