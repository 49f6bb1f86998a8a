#!/usr/bin/env python3
"""Pack a rootfs tree as an initrd: a newc cpio, compressed with zstd.

The archive is written here (not by cpio(1)) so that it is reproducible and needs no root: entries
sorted, uid/gid 0, fixed mtimes (SOURCE_DATE_EPOCH), inode numbers assigned in order, and the
static device nodes Python needs before /dev is mounted (``rootfs.build.DEVICE_NODES``) added as
entries even when the tree has none. Kata: ``initrd = "<out>"`` in configuration.toml.
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rootfs.build import DEVICE_NODES  # noqa: E402
from rootfs.steps import BuildError, Logs, source_date_epoch, step  # noqa: E402

_TRAILER = "TRAILER!!!"


def _header(
    ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int], name: bytes
) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, Path(dirpath) / name


def write_cpio(root: Path, out: BinaryIO, mtime: int) -> int:
    entries = sorted(_walk(root), key=lambda e: e[0])
    names = {rel for rel, _ in entries}
    ino = 1
    count = 0

    def emit(
        name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0), nlink: int = 1
    ) -> None:
        nonlocal ino, count
        bname = name.encode()
        hdr = _header(ino, mode, nlink, mtime, len(data), rdev, bname)
        out.write(hdr + bname + b"\0" + _pad(len(hdr) + len(bname) + 1))
        out.write(data + _pad(len(data)))
        ino += 1
        count += 1

    for rel, path in entries:
        st = path.lstat()
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            emit(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            emit(rel, stat.S_IFDIR | perm, b"", nlink=2)
        elif stat.S_ISREG(st.st_mode):
            emit(rel, stat.S_IFREG | perm, path.read_bytes())
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = stat.S_IFCHR if stat.S_ISCHR(st.st_mode) else stat.S_IFBLK
            emit(rel, kind | perm, b"", (os.major(st.st_rdev), os.minor(st.st_rdev)))
        else:
            continue
    for rel, node_type, major, minor, mode in DEVICE_NODES:
        if rel not in names:
            ifmt = stat.S_IFCHR if node_type == "c" else stat.S_IFBLK
            emit(rel, ifmt | mode, b"", (major, minor))
    emit(_TRAILER, 0, b"")
    return count


def pack(root: Path, out: Path, logs: Logs, *, level: int = 10) -> Path:
    if not (root / "init").exists():
        raise BuildError(f"step initrd: {root} has no /init (build the rootfs first)")
    mtime = source_date_epoch(os.environ)
    tmp = out.with_name(out.name + ".tmp")
    log = logs.path("initrd")
    with step("initrd", logs):
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh, open(log, "ab") as logfh:
            try:
                zstd = subprocess.Popen(
                    ["zstd", f"-{level}", "-T0", "-q", "-c"],
                    stdin=subprocess.PIPE,
                    stdout=fh,
                    stderr=logfh,
                )
            except FileNotFoundError as err:
                raise BuildError("step initrd: zstd not found (apt-get install zstd)") from err
            assert zstd.stdin is not None
            try:
                write_cpio(root, zstd.stdin, mtime)  # type: ignore[arg-type]
            finally:
                zstd.stdin.close()
                rc = zstd.wait()
            if rc != 0:
                raise BuildError(f"step initrd: zstd failed (exit {rc}): see {log}")
        tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rootfs", type=Path, default=REPO / "build" / "rootfs")
    p.add_argument("--out", type=Path, default=REPO / "build" / "kata-agent-py-initrd.img")
    p.add_argument("--logs", type=Path, default=REPO / "build" / "logs")
    args = p.parse_args(argv)
    try:
        pack(args.rootfs, args.out, Logs(args.logs))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
