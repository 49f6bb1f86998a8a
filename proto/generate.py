"""Generate the Python protobuf modules in `agent/rpc/pb/` from the `.proto` files in `proto/`.

Usage: python -m proto.generate [--out DIR]

protoc writes absolute imports (`import oci_pb2`) that only work from its output directory;
we rewrite them into package-relative imports so `agent.rpc.pb` is importable from anywhere.
The output is committed; `tests/unit/test_proto_generated.py` regenerates into a temporary
directory and fails when the committed files are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "agent" / "rpc" / "pb"
SOURCES = (
    "types.proto",
    "oci.proto",
    "csi.proto",
    "agent.proto",
    "health.proto",
    "hypervisor.proto",
    "google/rpc/status.proto",
    "request.proto",
)
_IMPORT = re.compile(r"^(from (?P<pkg>[\w.]+) )?import (?P<mod>\w+_pb2)(?P<rest> as \w+)?$", re.M)
_LOCAL_MODULES = {Path(s).with_suffix("").name + "_pb2": Path(s).parent for s in SOURCES}


def _rewrite(text: str, depth: int) -> str:
    """Make imports of our own generated modules relative to the file at `depth` below pb/."""

    def fix(m: re.Match[str]) -> str:
        mod, pkg, rest = m["mod"], m["pkg"], m["rest"] or ""
        if mod not in _LOCAL_MODULES:
            return m[0]
        sub = _LOCAL_MODULES[mod]
        if pkg is not None and pkg.replace(".", "/") != str(sub):
            return m[0]  # e.g. google.protobuf: a well-known type from the runtime
        if pkg is None and str(sub) != ".":
            return m[0]
        prefix = "." * (depth + 1) + (str(sub).replace("/", ".") if str(sub) != "." else "")
        return f"from {prefix} import {mod}{rest}"

    return _IMPORT.sub(fix, text)


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        *[str(HERE / s) for s in SOURCES],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written: list[Path] = []
    for path in sorted(out.rglob("*_pb2.py*")):
        depth = len(path.relative_to(out).parts) - 1
        path.write_text(_rewrite(path.read_text(), depth))
        written.append(path)
    dirs = {p.parent for p in written}
    dirs |= {parent for d in dirs for parent in d.parents if out in parent.parents or parent == out}
    for directory in sorted(dirs):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text(
                '"""Generated protobuf modules; do not edit (see proto/generate.py)."""\n'
            )
            written.append(init)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
