"""Mount option strings → mount(2) flags + filesystem data (pure; no I/O).

`parse(["ro", "nosuid", "size=64m", "mode=1777,uid=0"])` gives the flags to set, the flags a
"no"-form clears, the propagation flags (applied by a separate mount call, as the kernel wants) and
the data string for the filesystem. Options may hold several comma-separated items, as the Kata
runtime sends them (`"pagesize=2097152,size=4194304"`). Kata's private options
(`io.katacontainers.*`, `X-kata.*`) never reach the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import InvalidArgument

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_DETACH = 0x2

# option → (clear?, flag). clear=True means the option removes the flag.
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID),
    "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV),
    "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC),
    "exec": (True, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "atime": (True, MS_NOATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "diratime": (True, MS_NODIRATIME),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME),
    "nolazytime": (True, MS_LAZYTIME),
    "silent": (False, MS_SILENT),
    "loud": (True, MS_SILENT),
    "iversion": (False, MS_I_VERSION),
    "noiversion": (True, MS_I_VERSION),
    "defaults": (False, 0),
}

_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

KATA_OPTION_PREFIXES = ("io.katacontainers.", "X-kata.")


@dataclass(frozen=True, slots=True)
class MountOptions:
    flags: int = 0
    clear: int = 0
    propagation: tuple[int, ...] = ()
    data: tuple[str, ...] = ()

    @property
    def data_str(self) -> str:
        return ",".join(self.data)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY)


def split(options: Iterable[str]) -> list[str]:
    """Flatten option entries that carry several comma-separated options; drop empties."""
    out: list[str] = []
    for entry in options:
        out.extend(item.strip() for item in entry.split(",") if item.strip())
    return out


def parse(options: Iterable[str]) -> MountOptions:
    flags = 0
    clear = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in split(options):
        if opt.startswith(KATA_OPTION_PREFIXES):
            continue
        if opt in _FLAGS:
            is_clear, flag = _FLAGS[opt]
            if is_clear:
                flags &= ~flag
                clear |= flag
            else:
                flags |= flag
                clear &= ~flag
        elif opt in _PROPAGATION:
            propagation.append(_PROPAGATION[opt])
        else:
            data.append(opt)
    return MountOptions(flags=flags, clear=clear, propagation=tuple(propagation), data=tuple(data))


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
