"""Mount option strings as the Kata runtime sends them → mount(2) flags + filesystem data (pure;
no I/O), through the engine's table (``oci.syscalls.mountopts``).

`parse(["ro", "nosuid", "size=64m", "mode=1777,uid=0"])` gives the flags to set, the flags a
"no"-form clears, the propagation flags (applied by a separate mount call, as the kernel wants) and
the data string for the filesystem. Options may hold several comma-separated items, as the Kata
runtime sends them (`"pagesize=2097152,size=4194304"`). Kata's private options
(`io.katacontainers.*`, `X-kata.*`) never reach the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.errors import InvalidArgument
from oci.syscalls import mountopts
from oci.syscalls.mountopts import MountOptions

__all__ = [
    "KATA_OPTION_PREFIXES",
    "MountOptions",
    "parse",
    "parse_size",
    "split",
    "value",
    "without",
]

KATA_OPTION_PREFIXES = ("io.katacontainers.", "X-kata.")


def split(options: Iterable[str]) -> list[str]:
    """Flatten option entries that carry several comma-separated options; drop empties."""
    out: list[str] = []
    for entry in options:
        out.extend(item.strip() for item in entry.split(",") if item.strip())
    return out


def parse(options: Iterable[str]) -> MountOptions:
    """The options (comma-separated entries allowed) through the one mount-option table
    (``oci.syscalls.mountopts``); Kata's private options are dropped."""
    return mountopts.parse(o for o in split(options) if not o.startswith(KATA_OPTION_PREFIXES))


def value(options: Iterable[str], key: str) -> str | None:
    """The value of the last `key=value` among the options, or None."""
    found: str | None = None
    prefix = key + "="
    for opt in split(options):
        if opt.startswith(prefix):
            found = opt[len(prefix) :]
    return found


def without(options: Iterable[str], *keys: str) -> list[str]:
    """The options minus every `key` / `key=value` named."""
    out = []
    for opt in split(options):
        name = opt.split("=", 1)[0]
        if name not in keys:
            out.append(opt)
    return out


_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, *, what: str) -> int:
    """A kernel `memparse`-style size: bytes with an optional k/m/g/t/p suffix (also Ki/Mi/Gi)."""
    t = text.strip().lower()
    if t.endswith("i"):
        t = t[:-1]
    suffix = t[-1:] if t[-1:] in _SUFFIXES and t[-1:] != "" else ""
    number = t[: len(t) - len(suffix)]
    try:
        n = int(number, 0) if number.startswith("0x") else int(number)
    except ValueError:
        raise InvalidArgument(f"{what}: invalid size {text!r}") from None
    if n < 0:
        raise InvalidArgument(f"{what}: invalid size {text!r}")
    return n * _SUFFIXES[suffix]
