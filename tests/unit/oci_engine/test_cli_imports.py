"""kata-oci's import diet, checked in a fresh interpreter as the command line runs: create,
run and exec never load ``inspect`` (deferred by the CLI: ~8 ms) nor typing, start/kill/delete load
neither json, re, enum nor contextlib; a deferred module still works when something uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _run(body: str) -> str:
    code = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{body}"
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_create_path_never_loads_inspect() -> None:
    out = _run(
        "from oci import cli\n"
        "cli._defer('inspect')\n"
        "cli._defer('ipaddress')\n"
        "from oci import spec as ocispec\n"
        "from oci.engine import Engine, init, rootfs\n"
        "from oci.engine.process import plan_process\n"
        "import oci.cgroups, oci.syscalls.linux\n"
        "s = ocispec.loads(ocispec.default_spec().to_json())\n"
        "plan_process(s.process, None)\n"
        "ocispec.decode(ocispec.Process, s.process.to_dict())\n"
        "print(type(sys.modules['inspect']).__name__, type(sys.modules['ipaddress']).__name__,"
        " sorted(m for m in ('typing', 'contextlib', 'importlib', 'socket') if m in sys.modules))\n"
    )
    assert out == "_Deferred _Deferred []"


def test_deferred_module_loads_on_use() -> None:
    out = _run(
        "from oci import cli\n"
        "cli._defer('inspect')\n"
        "import inspect, dataclasses\n"
        "@dataclasses.dataclass\n"
        "class NoDoc:\n"
        "    x: int\n"
        "kind = type(sys.modules['inspect']).__name__\n"
        "print(NoDoc.__doc__, inspect.isfunction(cli.main), kind)\n"
    )
    assert out == "NoDoc(x: int) True module"


def test_short_commands_import_little() -> None:
    out = _run(
        "from oci import cli\n"
        "from oci.engine import Engine\n"
        "heavy = ('json', 're', 'enum', 'contextlib', 'signal', 'typing', 'dataclasses')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    assert out == "[]"


def test_deferred_ipaddress_behind_urllib_parse() -> None:
    out = _run(
        "from oci import cli\n"
        "cli._defer('ipaddress')\n"
        "import pathlib, urllib.parse\n"
        "print(urllib.parse.urlsplit('http://[::1]:80/x').hostname,"
        " pathlib.PurePosixPath('/a b').as_uri(), type(sys.modules['ipaddress']).__name__)\n"
    )
    assert out == "::1 file:///a%20b module"
