#!/usr/bin/env python3
"""Prepare the guest kernel: Debian's linux-image-amd64, or a kernel the user provides.

Output (``--out``, default ``build/kernel``)::

    vmlinux               uncompressed ELF with the PVH entry note: `qemu -kernel vmlinux` boots it
                          without firmware or in-guest decompression (faster under TCG)
    vmlinuz               the bzImage as shipped (for hypervisors without PVH boot)
    modules/<release>/    the kernel modules the guest needs (rootfs/modules.py NEEDED + deps)
    kernel.json           release, package, version, where it came from

Debian: ``apt-get download`` of the package linux-image-amd64 depends on, ``dpkg-deb -x`` into a
temporary tree (deleted afterwards), vmlinux decoded from the bzImage's xz payload with Python's
lzma. Cached by package version: a second run with the same version does nothing.

User kernel: ``--kernel PATH`` (a vmlinux ELF, or a bzImage whose payload is xz/gzip-compressed) and
optionally ``--modules DIR`` (its lib/modules/<release> directory). Without modules, everything the
guest needs must be built in.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rootfs import modules as kmods  # noqa: E402
from rootfs.steps import BuildError, Logs, cached, capture, mark, run, say, step  # noqa: E402

META_PACKAGE = "linux-image-amd64"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZ_MAGIC = b"\x1f\x8b\x08"
_ELF_MAGIC = b"\x7fELF"
_XEN_ELFNOTE_PHYS32_ENTRY = 18


@dataclass(frozen=True, slots=True)
class Kernel:
    release: str
    vmlinux: Path
    vmlinuz: Path | None
    modules: Path | None  # lib/modules/<release>-style directory, or None (all built in)

    @classmethod
    def load(cls, out: Path) -> Kernel:
        meta = json.loads((out / "kernel.json").read_text())
        mods = out / "modules" / meta["release"]
        vmlinuz = out / "vmlinuz"
        return cls(
            release=meta["release"],
            vmlinux=out / "vmlinux",
            vmlinuz=vmlinuz if vmlinuz.exists() else None,
            modules=mods if mods.is_dir() else None,
        )


def resolve_debian_package(logs: Logs) -> tuple[str, str]:
    """(package, version) that linux-image-amd64 currently points to."""
    out = capture("kernel-resolve", ["apt-cache", "depends", META_PACKAGE], logs)
    pkg = ""
    for line in out.splitlines():
        line = line.strip()
        if (
            line.startswith("Depends: linux-image-")
            and line[len("Depends: linux-image-")][:1].isdigit()
        ):
            pkg = line.split()[1]
            break
    if not pkg:
        raise BuildError(
            f"step kernel-resolve: apt-cache knows no {META_PACKAGE} "
            f"(run `apt-get update` first); log: {logs.path('kernel-resolve')}"
        )
    show = capture("kernel-resolve", ["apt-cache", "show", "--no-all-versions", pkg], logs)
    version = next(
        (ln.split(":", 1)[1].strip() for ln in show.splitlines() if ln.startswith("Version:")), ""
    )
    if not version:
        raise BuildError(
            f"step kernel-resolve: no version for {pkg}; log: {logs.path('kernel-resolve')}"
        )
    return pkg, version


def extract_vmlinux(image: bytes) -> bytes:
    """The uncompressed ELF inside a bzImage (xz or gzip payload), or `image` if already an ELF."""
    if image[:4] == _ELF_MAGIC:
        return image
    pos = image.find(_XZ_MAGIC)
    while pos != -1:
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[pos:])
        except lzma.LZMAError:
            data = b""
        if data[:4] == _ELF_MAGIC:
            return data
        pos = image.find(_XZ_MAGIC, pos + 1)
    pos = image.find(_GZ_MAGIC)
    while pos != -1:
        try:
            data = gzip.GzipFile(fileobj=_Reader(image[pos:])).read()
        except (OSError, EOFError):
            data = b""
        if data[:4] == _ELF_MAGIC:
            return data
        pos = image.find(_GZ_MAGIC, pos + 1)
    raise BuildError(
        "step kernel-vmlinux: no xz or gzip payload holding an ELF found in the kernel image "
        "(extract vmlinux yourself and pass it with KERNEL=path/to/vmlinux)"
    )


class _Reader:
    """Minimal file object for GzipFile that tolerates trailing data after the member."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = base + pos
        return self._pos

    def tell(self) -> int:
        return self._pos


def has_pvh_note(elf: bytes) -> bool:
    """True if the ELF carries XEN_ELFNOTE_PHYS32_ENTRY (QEMU's PVH boot entry)."""
    if elf[:4] != _ELF_MAGIC or elf[4] != 2:
        return False
    e_phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, e_phoff + i * e_phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _keep_modules(tree_modules: Path, out_modules: Path) -> int:
    """Copy the closure of NEEDED from a full modules tree into `out_modules`."""
    needed = kmods.closure(tree_modules)
    if out_modules.exists():
        shutil.rmtree(out_modules)
    for mod in needed:
        dest = out_modules / mod.path.relative_to(tree_modules)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(mod.path, dest)
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (tree_modules / extra).is_file():
            shutil.copy2(tree_modules / extra, out_modules / extra)
    return len(needed)


def prepare_debian(out: Path, cache: Path, logs: Logs) -> Kernel:
    with step("kernel-resolve", logs):
        pkg, version = resolve_debian_package(logs)
    key = f"debian:{pkg}:{version}:{'.'.join(kmods.NEEDED)}"
    stamp = out / "kernel.json"
    if cached(stamp, key) and (out / "vmlinux").exists():
        say(f"kernel {pkg} {version}: cached in {out}")
        return Kernel.load(out)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(iter(sorted(debs.glob(f"{pkg}_*.deb"))), None)
    if deb is None or version.split(":")[-1] not in deb.name:
        with step("kernel-download", logs):
            run("kernel-download", ["apt-get", "download", f"{pkg}={version}"], logs, cwd=debs)
        deb = next(iter(sorted(debs.glob(f"{pkg}_*.deb"))), None)
        if deb is None:
            raise BuildError(
                f"step kernel-download: no {pkg}_*.deb in {debs}; "
                f"log: {logs.path('kernel-download')}"
            )
    with (
        step("kernel-extract", logs),
        tempfile.TemporaryDirectory(dir=cache, prefix="tree.") as tmp,
    ):
        tree = Path(tmp)
        run("kernel-extract", ["dpkg-deb", "-x", deb, tree], logs)
        release = pkg.removeprefix("linux-image-")
        if release.endswith("-unsigned"):
            release = release.removesuffix("-unsigned")
        vmlinuz = tree / "boot" / f"vmlinuz-{release}"
        mods = tree / "lib" / "modules" / release
        if not vmlinuz.is_file() or not mods.is_dir():
            raise BuildError(
                f"step kernel-extract: {deb.name} has no boot/vmlinuz-{release} "
                f"or lib/modules/{release}"
            )
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(vmlinuz, out / "vmlinuz")
        count = _keep_modules(mods, out / "modules" / release)
    with step("kernel-vmlinux", logs):
        elf = extract_vmlinux((out / "vmlinuz").read_bytes())
        if not has_pvh_note(elf):
            say("warning: vmlinux has no PVH entry note; boot it as vmlinuz instead")
        tmp_out = out / "vmlinux.tmp"
        tmp_out.write_bytes(elf)
        tmp_out.replace(out / "vmlinux")
    mark(stamp, key, release=release, package=pkg, version=version, source="debian", modules=count)
    return Kernel.load(out)


def prepare_user(kernel: Path, modules: Path | None, out: Path, logs: Logs) -> Kernel:
    if not kernel.is_file():
        raise BuildError(f"step kernel-user: kernel {kernel} does not exist")
    st = kernel.stat()
    key = f"user:{kernel.resolve()}:{st.st_size}:{st.st_mtime_ns}:{modules}"
    stamp = out / "kernel.json"
    if cached(stamp, key):
        return Kernel.load(out)
    with step("kernel-user", logs):
        out.mkdir(parents=True, exist_ok=True)
        data = kernel.read_bytes()
        elf = extract_vmlinux(data)
        (out / "vmlinux").write_bytes(elf)
        if data[:4] != _ELF_MAGIC:
            shutil.copy2(kernel, out / "vmlinuz")
        elif (out / "vmlinuz").exists():
            (out / "vmlinuz").unlink()
        release = modules.name if modules is not None else "custom"
        if (out / "modules").exists():
            shutil.rmtree(out / "modules")
        count = 0
        if modules is not None:
            if not modules.is_dir():
                raise BuildError(f"step kernel-user: modules directory {modules} does not exist")
            count = _keep_modules(modules, out / "modules" / release)
    mark(stamp, key, release=release, source=str(kernel), modules=count)
    return Kernel.load(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=REPO / "build" / "kernel")
    p.add_argument("--cache", type=Path, default=REPO / "build" / "cache" / "kernel")
    p.add_argument("--logs", type=Path, default=REPO / "build" / "logs")
    p.add_argument("--kernel", type=Path, default=None, help="use this kernel (vmlinux or bzImage)")
    p.add_argument("--modules", type=Path, default=None, help="its lib/modules/<release> directory")
    args = p.parse_args(argv)
    logs = Logs(args.logs)
    try:
        if args.kernel is not None:
            k = prepare_user(args.kernel, args.modules, args.out, logs)
        else:
            k = prepare_debian(args.out, args.cache, logs)
    except (BuildError, kmods.ModuleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"release": k.release, "vmlinux": os.fspath(k.vmlinux)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
