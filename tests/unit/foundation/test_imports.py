"""agent.imports: asyncio and uvloop without ssl (the loop still serves, ssl stays importable),
pyroute2 without its package __init__; outside the checked versions, the plain imports."""

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


def test_an_unchecked_uvloop_version_gets_the_plain_import() -> None:
    pytest.importorskip("uvloop")
    got = run(
        """
        import sys
        from agent import imports
        imports.UVLOOP_CHECKED = ((9, 0), (9, 0))
        print(imports.import_uvloop() is not None, "ssl" in sys.modules)
        """
    )
    assert got.splitlines() == ["True True"]


def test_an_unchecked_python_gets_the_plain_asyncio() -> None:
    got = run(
        """
        import sys
        from agent import imports
        imports.PYTHON_CHECKED = ((9, 0), (9, 0))
        imports.import_asyncio()
        print("asyncio" in sys.modules, "ssl" in sys.modules)
        """
    )
    assert got.splitlines() == ["True True"]


def test_pyroute2_without_its_package_init_unless_unchecked() -> None:
    code = """
        import sys
        from agent import imports
        {setup}
        ipr = imports.import_async_iproute()
        package = sys.modules["pyroute2"]
        print(ipr.__name__, hasattr(package, "IPRoute"), "pyroute2.ndb.main" in sys.modules)
        """
    assert run(code.format(setup="")).splitlines() == ["AsyncIPRoute False False"]
    unchecked = code.format(setup="imports.PYROUTE2_CHECKED = ((9, 0), (9, 0))")
    assert run(unchecked).splitlines() == ["AsyncIPRoute True True"]


def test_versions_are_read_without_importing_the_package() -> None:
    got = run(
        """
        import sys
        from agent import imports
        print(imports._version("pyroute2", "config/version.py"), "pyroute2" in sys.modules)
        print(imports._version("no_such_package_here", "_version.py"))
        """
    )
    version, loaded = got.splitlines()[0].rsplit(" ", 1)
    assert version.startswith("(0, ")
    assert loaded == "False"
    assert got.splitlines()[1] == "None"
