"""The import tricks that pay for themselves, in one place, each guarded by the versions it was
checked against (outside them, the plain import: correct, just bigger).

* ``import_asyncio`` / ``import_uvloop``: asyncio and uvloop without ``ssl``. The agent never
  speaks TLS through its event loop (ttrpc over vsock/unix/serial, gRPC through grpcio's own
  stack), but both import ``ssl`` at module level, which maps libssl/libcrypto and initialises
  OpenSSL (idle RSS, docs/performance.md). asyncio is shown ``ssl`` as missing (its own "no ssl
  support" path); uvloop is given a placeholder ``ssl`` module with the names it binds at import.
  Every TLS entry point of such a loop fails (``ssl=`` / ``start_tls`` raise TypeError, a default
  context raises ``TLSUnavailable``); nothing else in uvloop touches ``ssl``. If the installed
  uvloop needs more than the placeholder offers, it is imported with the real ``ssl``. Either way
  ``sys.modules`` is restored right after, so ``import ssl`` elsewhere (pyroute2, grpcio) still
  gets the real module. The entry points call these before anything imports asyncio
  (``agent.boot.phase0``).
* ``import_async_iproute``: pyroute2's ``AsyncIPRoute`` without the package's ``__init__``, which
  imports every pyroute2 API (IPDB, NDB, nftables, nl80211, ipvs, wireguard, ...). The package is
  registered as a bare namespace (its ``__path__`` only) and ``pyroute2.iproute.linux`` imported:
  about half the modules and the memory, in about half the time (docs/performance.md).
  Everything ``agent.network.netlink`` uses lives in those submodules.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from typing import Any

#: (first, last) major.minor checked: Python for asyncio's ssl=None path, uvloop for the names
#: its placeholder has, pyroute2 for the bare-namespace import.
PYTHON_CHECKED = ((3, 11), (3, 11))
UVLOOP_CHECKED = ((0, 23), (0, 23))
PYROUTE2_CHECKED = ((0, 9), (0, 9))


class TLSUnavailable(RuntimeError):
    """The agent's event loop was built without TLS support."""


def import_asyncio() -> None:
    """Import asyncio without letting it import ssl (nothing changes where ssl is already
    imported or not installed)."""
    if "asyncio" in sys.modules:
        return
    blocked = "ssl" not in sys.modules and _checked(sys.version_info[:2], PYTHON_CHECKED)
    if blocked:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio: "no ssl support"
    try:
        import asyncio  # noqa: F401
    finally:
        if blocked and "ssl" in sys.modules and sys.modules["ssl"] is None:
            del sys.modules["ssl"]


def import_uvloop() -> Any:
    """Import uvloop (after asyncio) with a placeholder ssl module; the module, or None where
    uvloop is not installed."""
    import_asyncio()
    if "uvloop" in sys.modules or "ssl" in sys.modules:
        return _plain_uvloop()
    if not _checked(_version("uvloop", "_version.py"), UVLOOP_CHECKED):
        return _plain_uvloop()
    sys.modules["ssl"] = _placeholder_ssl()
    try:
        import uvloop
    except Exception:  # not installed, or needs more of ssl: start over with the real ssl
        for name in [m for m in sys.modules if m == "uvloop" or m.startswith("uvloop.")]:
            del sys.modules[name]
        sys.modules.pop("ssl", None)
        return _plain_uvloop()
    finally:
        if isinstance(sys.modules.get("ssl"), _Placeholder):
            del sys.modules["ssl"]
    return uvloop


def _plain_uvloop() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


class _Placeholder(types.ModuleType):
    pass


def _placeholder_ssl() -> _Placeholder:
    """The names uvloop binds from ssl at import (uvloop/includes/stdlib.pxi)."""
    mod = _Placeholder("ssl", "placeholder: the agent's event loop has no TLS (agent.imports)")

    class SSLError(OSError):
        pass

    class SSLWantReadError(SSLError):
        pass

    class SSLSyscallError(SSLError):
        pass

    class SSLZeroReturnError(SSLError):
        pass

    class CertificateError(ValueError):
        pass

    class SSLContext:  # never instantiated: isinstance checks against it fail -> TypeError
        def __new__(cls, *args: object, **kwargs: object) -> SSLContext:
            raise TLSUnavailable("the agent's event loop has no TLS support")

    class MemoryBIO(SSLContext):
        pass

    def create_default_context(*args: object, **kwargs: object) -> SSLContext:
        raise TLSUnavailable("the agent's event loop has no TLS support")

    names: dict[str, object] = {
        "SSLError": SSLError,
        "SSLWantReadError": SSLWantReadError,
        "SSLSyscallError": SSLSyscallError,
        "SSLZeroReturnError": SSLZeroReturnError,
        "CertificateError": CertificateError,
        "SSLContext": SSLContext,
        "MemoryBIO": MemoryBIO,
        "create_default_context": create_default_context,
        "SSL_ERROR_WANT_READ": 2,
        "SSL_ERROR_WANT_WRITE": 3,
        "SSL_ERROR_SYSCALL": 5,
    }
    for key, value in names.items():
        setattr(mod, key, value)
    return mod


def import_async_iproute() -> Any:
    """pyroute2's AsyncIPRoute class, importing only what rtnetlink needs (module docstring). If
    pyroute2 was imported whole already, or is not a checked version, the plain import."""
    if "pyroute2" not in sys.modules and _checked(
        _version("pyroute2", "config/version.py"), PYROUTE2_CHECKED
    ):
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            package = types.ModuleType("pyroute2")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            package.__file__ = spec.origin
            sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import AsyncIPRoute

    return AsyncIPRoute


def _version(package: str, version_file: str) -> tuple[int, ...] | None:
    """A package's version from its version file, read without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), version_file)
    try:
        with open(path) as fh:
            found = re.search(r"__version__\s*=\s*['\"](\d+)\.(\d+)", fh.read())
    except OSError:
        return None
    return None if found is None else (int(found[1]), int(found[2]))


def _checked(
    version: tuple[int, ...] | None, checked: tuple[tuple[int, int], tuple[int, int]]
) -> bool:
    return version is not None and checked[0] <= version[:2] <= checked[1]
