"""What the agent's start-up imports (idle RSS, bench/rpc.py): the command-line parser does not pull
shutil (and bz2/lzma with it); the help text still follows $COLUMNS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def test_parsing_the_command_line_does_not_import_shutil() -> None:
    code = (
        "import sys\n"
        "from agent.boot import configure\n"
        "configure.build_parser().parse_args(['--server-addr', 'unix:///x.sock'])\n"
        "print(sorted(m for m in ('shutil', 'bz2', 'lzma') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("columns", ["50", "120", "0", "not-a-number"])
def test_help_is_what_argparse_would_print(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    import argparse

    from agent.boot import configure

    monkeypatch.setenv("COLUMNS", columns)
    parser = configure.build_parser()
    ours = parser.format_help()
    parser.formatter_class = argparse.HelpFormatter
    assert ours == parser.format_help()
