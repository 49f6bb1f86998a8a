#!/usr/bin/env python3
"""`make image`: kernel, rootfs, initrd and disk image into build/, each step cached by its inputs.

Outputs (paths usable unchanged in Kata's configuration.toml, see image-build/README.md)::

    build/kernel/vmlinux                 kernel = ... (PVH ELF; build/kernel/vmlinuz is the bzImage)
    build/kata-agent-py-initrd.img       initrd = ...
    build/kata-agent-py-rootfs.img       image = ...
    build/image.json                     what was built, from which inputs, sizes and step times

A failing step stops the build with a message naming the step and its log (build/logs/STEP.log).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import disk  # noqa: E402
import initrd  # noqa: E402
import kernel  # noqa: E402

from rootfs import build as rootfs_build  # noqa: E402
from rootfs import modules as kmods  # noqa: E402
from rootfs.steps import BuildError, Logs, cached, mark, say  # noqa: E402


def build(
    out: Path,
    *,
    user_kernel: Path | None,
    user_modules: Path | None,
    force: bool,
    disk_image: bool,
    uvloop: bool = False,
    policy: Path | None = None,
) -> dict[str, object]:
    logs = Logs(out / "logs")
    times: dict[str, float] = {}
    t0 = time.monotonic()
    if user_kernel is not None:
        k = kernel.prepare_user(user_kernel, user_modules, out / "kernel", logs)
    else:
        k = kernel.prepare_debian(out / "kernel", out / "cache" / "kernel", logs)
    times["kernel"] = time.monotonic() - t0
    t = time.monotonic()
    try:
        root = rootfs_build.build(
            out / "rootfs",
            out / "kernel",
            out / "cache",
            logs,
            force=force,
            uvloop=uvloop,
            policy=policy,
        )
    except kmods.ModuleError as err:
        raise BuildError(f"step modules: {err}") from err
    times["rootfs"] = time.monotonic() - t
    rootfs_key = json.loads((out / "rootfs.json").read_text())["key"]
    initrd_path = out / "kata-agent-py-initrd.img"
    t = time.monotonic()
    if force or not cached(out / "initrd.json", rootfs_key) or not initrd_path.exists():
        # The policy engine's native libraries would take the initrd over its size target at
        # -10; -19 (an 8 MiB window, within what the kernel's initramfs decompressor takes)
        # keeps it under, for more build time once per policy image (image-build/README.md).
        initrd.pack(root, initrd_path, logs, level=19 if policy else 10)
        mark(out / "initrd.json", rootfs_key)
    else:
        say(f"initrd: cached {initrd_path}")
    times["initrd"] = time.monotonic() - t
    disk_path = out / "kata-agent-py-rootfs.img"
    t = time.monotonic()
    if disk_image:
        if force or not cached(out / "disk.json", rootfs_key) or not disk_path.exists():
            disk.pack(root, disk_path, logs)
            mark(out / "disk.json", rootfs_key)
        else:
            say(f"disk: cached {disk_path}")
    times["disk"] = time.monotonic() - t
    times["total"] = time.monotonic() - t0
    manifest: dict[str, object] = {
        "kernel": os.fspath(k.vmlinux),
        "kernel_bzimage": os.fspath(k.vmlinuz) if k.vmlinuz else None,
        "kernel_release": k.release,
        "initrd": os.fspath(initrd_path),
        "initrd_bytes": initrd_path.stat().st_size,
        "image": os.fspath(disk_path) if disk_image else None,
        "rootfs_key": rootfs_key,
        "policy": os.fspath(policy) if policy else None,
        "seconds": {name: round(v, 2) for name, v in times.items()},
    }
    (out / "image.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=REPO / "build")
    p.add_argument("--kernel", type=Path, default=None, help="use this kernel instead of Debian's")
    p.add_argument(
        "--modules", type=Path, default=None, help="the user kernel's lib/modules/<release>"
    )
    p.add_argument("--force", action="store_true", help="rebuild the rootfs even if cached")
    p.add_argument("--no-disk", action="store_true", help="skip the ext4 disk image")
    p.add_argument(
        "--with-uvloop",
        action="store_true",
        default=os.environ.get("GUEST_UVLOOP", "") == "1",
        help="ship uvloop in the guest (default: off, or GUEST_UVLOOP=1)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="ship the agent policy engine with this default policy (make image POLICY=1)",
    )
    args = p.parse_args(argv)
    # image.json lists absolute paths, whatever directory `make image BUILD=...` ran from.
    for name in ("out", "kernel", "modules", "policy"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).absolute())
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        # One build at a time per output directory (tests and people may start one together).
        with open(args.out / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = build(
                args.out,
                user_kernel=args.kernel,
                user_modules=args.modules,
                force=args.force,
                disk_image=not args.no_disk,
                uvloop=args.with_uvloop,
                policy=args.policy,
            )
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    mb = int(manifest["initrd_bytes"]) / 1e6  # type: ignore[call-overload]
    say(f"kernel {manifest['kernel']}")
    say(f"initrd {manifest['initrd']} ({mb:.1f} MB)")
    if manifest["image"]:
        say(f"image  {manifest['image']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
