"""The import budget of the entry points that run cold: the modules each may load before the agent
answers its first Health.Check (module names, not times: what an import costs is measured by
bench/boot.py and bench/rpc.py, docs/performance.md).

* the guest's ``/init`` (``agent.boot.init``) before its serial channel is open: under TCG every
  module costs tens of milliseconds, so only ``os``-level modules and the ctypes syscall seam;
* ``kata-agent`` (``agent.cli``) before its listener answers: the phase-0 server and what it
  needs, nothing of the configuration, asyncio, logging or protobuf (a worker thread imports
  those while Check is answered).

A new import on either path fails here, naming it: move it behind the first answered Check, or
add it to the budget on purpose.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# The interpreter's own modules (C accelerators, frozen bootstrap parts) are not counted.
_C_OR_FROZEN = ("_",)

GUEST_INIT_BUDGET = {
    "agent",
    "agent.boot",
    "agent.boot.args",
    "agent.boot.init",
    "agent.boot.pid1_early",
    "agent.devices",
    "agent.devices.virtio_ports",
    "agent.rpc",
    "agent.rpc.early_serial",
    "agent.rpc.early_wire",
    "oci",
    "oci.syscalls",
    "oci.syscalls.boot",
    "oci.syscalls.consts",
    "oci.syscalls.libc",
    "ctypes",
    "ctypes._endian",
    "genericpath",
    "os",
    "os.path",
    "posixpath",
    "select",
    "stat",
    "struct",
    "types",
}

KATA_AGENT_BUDGET = {
    "agent",
    "agent.boot",
    "agent.boot.args",
    "agent.boot.phase0",
    "agent.cli",
    "agent.rpc",
    "agent.rpc.early",
    "agent.rpc.early_wire",
    # the phase-0 server: sockets, a selector, a thread, and the dataclasses it is written with
    "array",
    "ast",
    "collections",
    "collections.abc",
    "contextlib",
    "copy",
    "copyreg",
    "dataclasses",
    "dis",
    "enum",
    "errno",
    "functools",
    "genericpath",
    "importlib",
    "importlib._bootstrap",
    "importlib._bootstrap_external",
    "importlib.machinery",
    "inspect",
    "itertools",
    "keyword",
    "linecache",
    "math",
    "opcode",
    "operator",
    "os",
    "os.path",
    "posixpath",
    "re",
    "re._casefix",
    "re._compiler",
    "re._constants",
    "re._parser",
    "reprlib",
    "select",
    "selectors",
    "socket",
    "stat",
    "struct",
    "threading",
    "token",
    "tokenize",
    "types",
    "warnings",
    "weakref",
}


def loaded_by(module: str) -> set[str]:
    """The modules importing `module` adds, in a fresh interpreter started as the guest's /init
    starts it (``-I -S``)."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "print(*sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return {m for m in done.stdout.split() if not m.startswith(_C_OR_FROZEN)}


@pytest.mark.parametrize(
    ("entry", "budget"),
    [("agent.boot.init", GUEST_INIT_BUDGET), ("agent.cli", KATA_AGENT_BUDGET)],
)
def test_an_entry_point_loads_only_its_budget(entry: str, budget: set[str]) -> None:
    extra = loaded_by(entry) - budget
    assert not extra, f"{entry} now imports {sorted(extra)} before the first answered Check"


def test_the_budget_keeps_the_heavy_modules_out() -> None:
    heavy = {"typing", "logging", "asyncio", "json", "pathlib", "argparse", "agent.config"}
    assert not heavy & KATA_AGENT_BUDGET
    assert not (heavy | {"dataclasses", "threading", "contextlib", "collections"}) & (
        GUEST_INIT_BUDGET
    )
