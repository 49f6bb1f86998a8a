"""kata-oci's import budget: every command is a fresh interpreter, so its entry module
(``oci.cli``) names what each command may load. A module that joins the list is a decision made
here, not an accident of a new import somewhere below."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# The standard library an engine command may load (top-level names), on top of what the
# interpreter has loaded before ``oci.cli`` runs.
STDLIB = frozenset(
    {
        "__future__", "_ast", "_bz2", "_collections", "_compression", "_ctypes", "_functools",
        "_json", "_locale", "_lzma", "_opcode", "_operator", "_posixsubprocess", "_socket",
        "_sre", "_string", "_struct", "_typing", "_weakrefset", "array", "ast", "atexit",
        "bz2", "collections", "contextlib", "copy", "copyreg", "ctypes", "dataclasses", "dis",
        "enum", "errno", "fcntl", "fnmatch", "functools", "gc", "importlib", "inspect",
        "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "lzma",
        "math", "ntpath", "opcode", "operator", "pathlib", "re", "reprlib", "resource",
        "select", "selectors", "shutil", "signal", "socket", "string", "struct", "subprocess",
        "termios", "textwrap", "threading", "token", "tokenize", "traceback", "tty", "types",
        "typing", "urllib", "warnings", "weakref", "zlib",
    }
)  # fmt: skip
THIRD_PARTY = frozenset({"_prctl"})  # python-prctl's C module (oci.syscalls.linux)

# The engine a container command loads: everything below oci.engine.facade. The spawner, its
# asyncio client and its wire format are the agent's, never kata-oci's.
ENGINE = frozenset(
    {
        "oci", "oci.cli",
        "oci.cgroups", "oci.cgroups._base", "oci.cgroups.errors", "oci.cgroups.fs",
        "oci.cgroups.oom", "oci.cgroups.paths", "oci.cgroups.stats", "oci.cgroups.v1",
        "oci.cgroups.v2",
        "oci.engine", "oci.engine.cgroup", "oci.engine.errors", "oci.engine.facade",
        "oci.engine.hooks", "oci.engine.init", "oci.engine.inplace", "oci.engine.launch",
        "oci.engine.plan", "oci.engine.process", "oci.engine.rootfs", "oci.engine.state",
        "oci.engine.status", "oci.engine.sync",
        "oci.spec", "oci.spec._codec", "oci.spec.defaults", "oci.spec.features",
        "oci.spec.linux", "oci.spec.names", "oci.spec.runtime", "oci.spec.state",
        "oci.spec.validate",
        "oci.syscalls", "oci.syscalls.api", "oci.syscalls.consts", "oci.syscalls.libc",
        "oci.syscalls.libseccomp", "oci.syscalls.linux", "oci.syscalls.mountopts",
        "oci.safepath",  # rootfs.py: mount destinations and devices resolved inside the rootfs
    }
)  # fmt: skip
SPEC_ONLY = frozenset(m for m in ENGINE if m.startswith("oci.spec")) | {"oci", "oci.cli"}


def _loaded(argv: list[str], cwd: Path) -> tuple[set[str], set[str]]:
    """(oci modules, other top-level modules) that ``kata-oci <argv>`` loads."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); before = set(sys.modules)\n"
        "from oci import cli\n"
        f"cli._main({argv!r})\n"
        "new = set(sys.modules) - before\n"
        "print('\\n@@', ' '.join(sorted(new)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=cwd, check=True
    )
    new = set(done.stdout.rpartition("@@")[2].split())
    ours = {m for m in new if m == "oci" or m.startswith("oci.")}
    return ours, {m.split(".")[0] for m in new - ours}


@pytest.mark.parametrize(
    "argv",
    [["state", "nope"], ["list"], ["delete", "--force", "nope"], ["kill", "nope", "KILL"]],
)
def test_container_commands_load_the_engine_and_nothing_else(
    argv: list[str], tmp_path: Path
) -> None:
    ours, others = _loaded(["--root", str(tmp_path / "root"), *argv], tmp_path)
    assert ours == ENGINE
    assert others <= STDLIB | THIRD_PARTY, sorted(others - STDLIB - THIRD_PARTY)


@pytest.mark.parametrize("argv", [["spec", "--bundle", "."], ["features"]])
def test_spec_commands_load_no_engine(argv: list[str], tmp_path: Path) -> None:
    ours, others = _loaded(argv, tmp_path)
    assert ours == SPEC_ONLY
    assert others <= STDLIB, sorted(others - STDLIB)


def test_version_loads_only_the_command_line(tmp_path: Path) -> None:
    ours, others = _loaded(["--version"], tmp_path)
    assert ours == {"oci", "oci.cli"}
    assert others <= STDLIB, sorted(others - STDLIB)
