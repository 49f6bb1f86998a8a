"""A guest's agent loads the areas of every pod start in the background (``agent.preload_areas``,
auto as the guest's init): with no AgentService call at all, the containers area (and with it the
OCI engine's spawner) and the guest area are loaded, each once; the runtime's calls then find
them loaded."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2
from tests.vm.guest import GuestAgent, console_run

pytestmark = pytest.mark.vm


def _records(console_log: Path) -> list[dict[str, Any]]:
    records = []
    for line in console_log.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start >= 0:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line[start:]))
    return records


def _loaded(vm: Any) -> list[tuple[str, str]]:
    return [(r["area"], r["by"]) for r in _records(vm.console_log) if r.get("msg") == "area loaded"]


def test_pod_start_areas_load_without_a_call(boot_guest: Callable[..., Any]) -> None:
    vm = boot_guest()
    deadline = time.monotonic() + 240
    while not any(r.get("msg") == "areas preloaded" for r in _records(vm.console_log)):
        assert vm.qemu.poll() is None, f"the guest went away:\n{vm.tail_console(30)}"
        assert time.monotonic() < deadline, f"no preload:\n{vm.tail_console(30)}"
        time.sleep(0.2)
    done = next(r for r in _records(vm.console_log) if r.get("msg") == "areas preloaded")
    assert done["areas"] == ["containers", "guest"], done
    assert _loaded(vm) == [("containers", "preload"), ("guest", "preload")]
    # the lifecycle is built: the OCI engine's spawner runs as a child of the agent (PID 1)
    children = console_run(
        vm, "for p in $(cat /proc/1/task/1/children); do tr '\\0' ' ' </proc/$p/cmdline; echo; done"
    )
    assert "oci.engine.spawner" in children, children
    agent = GuestAgent(vm.agent_sock)
    try:
        details = agent.call("GetGuestDetails", agent_pb2.GuestDetailsRequest(mem_block_size=True))
        assert details.agent_details.version == "0.1.0"
    finally:
        agent.close()
    assert _loaded(vm) == [("containers", "preload"), ("guest", "preload")]  # nothing again
