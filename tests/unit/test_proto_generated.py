"""The committed agent/rpc/pb is exactly what `python -m proto.generate` produces from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PB = REPO / "agent" / "rpc" / "pb"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    out = tmp_path / "pb"
    done = subprocess.run(
        [sys.executable, "-m", "proto.generate", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh, committed = _tree(out), _tree(PB)
    stale = sorted(
        name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name]
    )
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    hint = "agent/rpc/pb is stale; run `python -m proto.generate`"
    assert not stale, f"{hint}: these differ: {stale}"
    assert not missing, f"{hint}: generated but not committed: {missing}"
    assert not extra, f"{hint}: committed but not generated: {extra}"
