"""Small file helpers for cgroupfs: every OSError becomes a `CgroupError` naming the file."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from .errors import CgroupBusy, CgroupError, from_oserror


def read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise from_oserror(f"read {path}", e) from None


def read_int(path: Path, *, max_as: int = 0) -> int:
    """An integer file; "max" reads as `max_as`."""
    text = read_text(path).strip()
    if text == "max":
        return max_as
    try:
        return int(text)
    except ValueError:
        raise CgroupError(f"read {path}: unexpected content {text!r}") from None


def read_lines(path: Path) -> list[str]:
    return [line for line in read_text(path).splitlines() if line.strip()]


def read_flat_keyed(path: Path) -> dict[str, int]:
    """A "key value" per line file (memory.stat, cpu.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in read_lines(path):
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out


def write(path: Path, value: str | int) -> None:
    """Write one value to a cgroup interface file (a single write(2), as the kernel expects)."""
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise from_oserror(f"write {value} to {path}", e) from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise from_oserror(f"write {value} to {path}", e) from None
    finally:
        os.close(fd)


def mkdir_p(path: Path) -> list[Path]:
    """Create `path` and missing parents; return the directories created, top-down."""
    try:  # the usual case, a new leaf under an existing parent: one syscall
        os.mkdir(path)
        return [path]
    except FileExistsError:
        return []
    except FileNotFoundError:
        pass  # missing parents: below
    except OSError as e:
        raise from_oserror(f"mkdir {path}", e) from None
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue
        except OSError as e:
            raise from_oserror(f"mkdir {d}", e) from None
        created.append(d)
    return created


def rmdir_tree(path: Path, *, timeout: float = 5.0) -> None:
    """Remove a cgroup directory and its child cgroups (bottom-up), retrying while EBUSY.

    A cgroup stays busy for a moment after its last process exits (the kernel finishes
    the exit asynchronously); retry with a short back-off until `timeout`.
    """
    try:  # the usual case, an empty leaf: one syscall
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass  # children or processes: below
    deadline = time.monotonic() + timeout
    dirs = [Path(root) for root, _, _ in os.walk(path)]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        delay = 0.001
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.EAGAIN) or time.monotonic() >= deadline:
                    err = from_oserror(f"rmdir {d}", e)
                    if e.errno == errno.EBUSY:
                        procs = _procs(d)
                        detail = f"; still has processes {procs}" if procs else ""
                        raise CgroupBusy(err.message + detail, errno=e.errno) from None
                    raise err from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


def _procs(d: Path) -> list[str]:
    try:
        return (d / "cgroup.procs").read_text().split()
    except OSError:
        return []


def parse_flat_keyed(text: str) -> dict[str, int]:
    """ "key value" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out
