"""asyncio and uvloop imported without ``ssl`` (idle memory).

The agent never speaks TLS through its event loop (ttrpc over vsock/unix/serial, gRPC through
grpcio's own stack), but both asyncio and uvloop import ``ssl`` at module level, which maps
libssl/libcrypto and initialises OpenSSL: ~4 MiB of RSS (measured with ``bench/rpc.py``: idle
VmRSS 35.5 -> 31.3 MiB on this machine). So:

* ``import_asyncio``: asyncio sees ``ssl`` as missing (its documented "no ssl support" path);
* ``import_uvloop``: uvloop is given a placeholder ``ssl`` module with the names it binds at
  import. Every TLS entry point of such a loop fails (``ssl=`` / ``start_tls`` raise TypeError,
  a default context raises ``TLSUnavailable``); nothing else in uvloop touches ``ssl``. If the
  installed uvloop needs more than the placeholder offers, uvloop is imported with the real
  ``ssl`` instead (correct, just bigger).

In both cases ``sys.modules`` is restored right after, so ``import ssl`` elsewhere (pyroute2,
grpcio) still gets the real module.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class TLSUnavailable(RuntimeError):
    """The agent's event loop was built without TLS support."""


def import_asyncio() -> None:
    """Import asyncio without letting it import ssl (nothing changes where ssl is already
    imported or not installed)."""
    if "asyncio" in sys.modules:
        return
    blocked = "ssl" not in sys.modules
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
    mod = _Placeholder("ssl", "placeholder: the agent's event loop has no TLS (agent.aio)")

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
