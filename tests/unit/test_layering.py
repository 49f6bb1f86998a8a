"""The import rules of docs/style.md b.1, read from the source (AST): no module imports a layer
above its own, and the few modules that may touch ctypes/prctl, pyroute2 or the generated
protobuf code are the only ones that do."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Highest first: a module may import its own layer and those below it, never one above.
LAYERS = (
    ("agent.rpc",),
    ("agent.services",),
    ("agent.sandbox", "agent.network", "agent.storage", "agent.devices"),
    ("oci.engine",),
    ("oci.cgroups", "oci.syscalls"),
    ("oci.spec",),
)
ONLY = {  # an import → the modules allowed to make it
    ("ctypes", "prctl", "_prctl"): ("oci.syscalls",),
    ("pyroute2",): ("agent.network.netlink", "agent.imports"),  # imports: the guarded import
    # hv serves its own ttrpc protocol; agent.policy decides on the requests as they come in
    ("agent.rpc.pb",): ("agent.rpc", "agent.ctl", "agent.policy", "hv"),
    ("oci.cli",): (),  # the kata-oci entry point: nothing imports it
}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(name: str) -> int | None:
    return next((i for i, group in enumerate(LAYERS) if _under(name, group)), None)


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every import in the packages."""
    out = []
    for path in sorted(p for pkg in ("agent", "oci", "hv") for p in REPO.glob(f"{pkg}/**/*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        package = parts[:-1]
        module = ".".join(parts if parts[-1] != "__init__" else package)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(module, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                out += [(module, f"{target}.{a.name}") for a in node.names]
    return out


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        (src, dst)
        for src, dst in _imports()
        if (s := _layer(src)) is not None and (d := _layer(dst)) is not None and d < s
    ]
    assert upward == []


def test_restricted_imports_stay_where_they_belong() -> None:
    misplaced = [
        (src, dst)
        for src, dst in _imports()
        for targets, allowed in ONLY.items()
        if _under(dst, targets) and not _under(src, allowed)
    ]
    assert misplaced == []
