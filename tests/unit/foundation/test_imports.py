"""agent.imports: asyncio and uvloop without ssl; the loop still serves; ssl stays importable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_uvloop_serves_a_unix_socket_without_ssl_loaded(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    got = run(
        f"""
        import sys
        from agent.imports import import_uvloop
        uvloop = import_uvloop()
        assert uvloop is not None and "ssl" not in sys.modules, sorted(sys.modules)
        import asyncio

        async def main():
            async def echo(r, w):
                w.write(await r.read(5)); await w.drain(); w.close()
            server = await asyncio.start_unix_server(echo, {str(tmp_path / "s")!r})
            r, w = await asyncio.open_unix_connection({str(tmp_path / "s")!r})
            w.write(b"hello")
            data = await r.read(5)
            w.close(); server.close()
            try:
                await asyncio.open_unix_connection(
                    {str(tmp_path / "s")!r}, ssl=True, server_hostname="agent"
                )
            except Exception as err:
                tls = type(err).__name__
            return data, tls, type(asyncio.get_running_loop()).__module__

        print(uvloop.run(main()))
        assert "ssl" not in sys.modules
        import ssl
        print(ssl.OPENSSL_VERSION.split()[0])
        """
    )
    assert got.splitlines() == ["(b'hello', 'TLSUnavailable', 'uvloop')", "OpenSSL"]


def test_a_uvloop_needing_more_of_ssl_gets_the_real_one() -> None:
    pytest.importorskip("uvloop")
    got = run(
        """
        import sys, types
        from agent import imports as aio
        aio._placeholder_ssl = lambda: aio._Placeholder("ssl")  # names missing
        uvloop = aio.import_uvloop()
        print(uvloop.new_event_loop().__class__.__module__, type(sys.modules["ssl"]).__name__)
        import ssl
        print(hasattr(ssl, "OPENSSL_VERSION"))
        """
    )
    assert got.splitlines() == ["uvloop module", "True"]


def test_asyncio_without_ssl_and_ssl_importable_after() -> None:
    got = run(
        """
        import sys
        from agent.imports import import_asyncio
        import_asyncio()
        import asyncio
        print("ssl" in sys.modules, asyncio.sslproto.ssl)
        import ssl
        print(hasattr(ssl, "SSLContext"))
        """
    )
    assert got.splitlines() == ["False None", "True"]
