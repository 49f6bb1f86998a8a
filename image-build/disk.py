#!/usr/bin/env python3
"""Pack a rootfs tree as a raw disk image the way Kata's image builder lays it out, without root
or loop devices: an MBR with one Linux partition starting at 1 MiB that holds an ext4 filesystem
(``mkfs.ext4 -d`` writing at that offset), the whole image a multiple of 128 MiB. Kata boots it
with ``root=/dev/pmem0p1`` (nvdimm) or ``root=/dev/vda1`` (``disable_image_nvdimm``), which needs
a kernel with virtio, nvdimm and ext4 built in (Debian's builds them as modules: use the initrd
with Debian's kernel). No DAX metadata is written (the guest mounts without DAX).
Reproducible: fixed disk signature, filesystem UUID, hash seed and timestamps.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rootfs.steps import BuildError, Logs, run, source_date_epoch, step  # noqa: E402

FS_UUID = "6b617461-6167-656e-7470-790000000001"
PART_START = 1 << 20  # 1 MiB, as Kata's image_builder.sh
ALIGN = 128 << 20  # Kata aligns images to 128 MiB (memory hotplug boundary for nvdimm)
DISK_SIGNATURE = 0x6B617461
SECTOR = 512


def mbr(part_start: int, part_size: int) -> bytes:
    """A DOS partition table with one bootable-less Linux (0x83) partition, LBA addressed."""
    entry = bytes([0x00, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF]) + struct.pack(
        "<II", part_start // SECTOR, part_size // SECTOR
    )
    table = entry + b"\0" * 48
    return b"\0" * 440 + struct.pack("<IH", DISK_SIGNATURE, 0) + table + b"\x55\xaa"


HASH_SEED = "6b617461-6167-656e-7470-790000000002"


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += (st.st_size + 4095) // 4096 * 4096
        total += 4096
    return total


def pack(root: Path, out: Path, logs: Logs, *, size_mb: int | None = None) -> Path:
    if not (root / "init").exists():
        raise BuildError(f"step disk: {root} has no /init (build the rootfs first)")
    with step("disk", logs):
        need = tree_size(root)
        # Room for metadata, the journal and what the guest writes (at least 64 MiB).
        total = size_mb << 20 if size_mb else max(64 << 20, int(need * 1.4) + (32 << 20))
        total = -(-(total + PART_START) // ALIGN) * ALIGN
        part_size = total - PART_START
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        env = dict(os.environ)
        env["E2FSPROGS_FAKE_TIME"] = str(source_date_epoch(os.environ))
        run(
            "disk",
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "kata-rootfs",
                "-U",
                FS_UUID,
                "-E",
                f"hash_seed={HASH_SEED},root_owner=0:0,lazy_itable_init=0,offset={PART_START}",
                "-d",
                root,
                tmp,
                f"{part_size // 1024}k",
            ],
            logs,
            env=env,
        )
        with open(tmp, "r+b") as fh:
            fh.write(mbr(PART_START, part_size))
            fh.truncate(total)
        tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rootfs", type=Path, default=REPO / "build" / "rootfs")
    p.add_argument("--out", type=Path, default=REPO / "build" / "kata-agent-py-rootfs.img")
    p.add_argument("--size-mb", type=int, default=None)
    p.add_argument("--logs", type=Path, default=REPO / "build" / "logs")
    args = p.parse_args(argv)
    try:
        pack(args.rootfs, args.out, Logs(args.logs), size_mb=args.size_mb)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
