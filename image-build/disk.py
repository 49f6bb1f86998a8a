#!/usr/bin/env python3
"""Pack a rootfs tree as a raw ext4 disk image (``mkfs.ext4 -d``; no root, no loop device).

The image has no partition table: the filesystem starts at sector 0, so it boots with
``root=/dev/vda`` (virtio-blk) or ``root=/dev/pmem0`` (nvdimm); Kata: ``image = "<out>"`` (with a
kernel that has virtio, ext4 and nvdimm built in — Debian's builds them as modules, so use the
initrd with Debian's kernel). Reproducible: fixed UUID, hash seed and timestamps.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rootfs.steps import BuildError, Logs, run, source_date_epoch, step  # noqa: E402

FS_UUID = "6b617461-6167-656e-7470-790000000001"
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
        mb = size_mb or max(64, int(need * 1.4) // (1 << 20) + 32)
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
                f"hash_seed={HASH_SEED},root_owner=0:0,lazy_itable_init=0",
                "-d",
                root,
                tmp,
                f"{mb}M",
            ],
            logs,
            env=env,
        )
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
