"""rootfs/ and image-build/ helpers: modules closure, cpio, vmlinux extraction, step errors."""

from __future__ import annotations

import errno
import lzma
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from rootfs import modules as kmods
from rootfs.steps import BuildError, Logs, run, step
from tests.vm.guest import load_image_build


def fake_ko(depends: str, extra: bytes = b"") -> bytes:
    """A minimal ELF64 file with a .modinfo section (what rootfs/modules.py reads)."""
    modinfo = b"license=GPL\0" + f"depends={depends}\0".encode() + b"vermagic=6.1\0" + extra
    shstr = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    shstr_off = data_off + len(modinfo)
    sh_off = (shstr_off + len(shstr) + 7) & ~7
    header = bytearray(64)
    header[0:4] = b"\x7fELF"
    header[4] = 2  # ELFCLASS64
    header[5] = 1
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    body = bytes(header) + modinfo + shstr
    body += b"\0" * (sh_off - len(body))

    def sh(name: int, typ: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, 0, 0, off, size, 0, 0, 1, 0)

    return (
        body + sh(0, 0, 0, 0) + sh(1, 1, data_off, len(modinfo)) + sh(10, 3, shstr_off, len(shstr))
    )


def write_tree(root: Path, mods: dict[str, str], builtin: tuple[str, ...] = ()) -> Path:
    mdir = root / "lib" / "modules" / "6.1.0-test"
    for name, deps in mods.items():
        path = mdir / "kernel" / "drivers" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fake_ko(deps))
    (mdir / "modules.builtin").write_text("".join(f"kernel/x/{b}.ko\n" for b in builtin))
    return mdir


def test_closure_loads_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    mdir = write_tree(
        tmp_path,
        {"virtio_ring": "", "virtio": "virtio_ring", "virtio_pci": "virtio,virtio_ring,crc16"},
        builtin=("crc16",),
    )
    order = [m.name for m in kmods.closure(mdir, ("virtio_pci",))]
    assert order == ["virtio_ring", "virtio", "virtio_pci"]


def test_closure_names_the_missing_module_and_who_needs_it(tmp_path: Path) -> None:
    mdir = write_tree(tmp_path, {"ext4": "jbd2"})
    with pytest.raises(
        kmods.ModuleError, match=r"'jbd2' \(needed by ext4\) is neither in .* nor built in"
    ):
        kmods.closure(mdir, ("ext4",))


def test_install_writes_modules_dep_and_the_agents_load_list(tmp_path: Path) -> None:
    mdir = write_tree(tmp_path / "src", {"a": "", "b_mod": "a"})
    root = tmp_path / "root"
    load = kmods.install(kmods.closure(mdir, ("b_mod",)), mdir, root, "6.1.0-test")
    assert load == [
        "/lib/modules/6.1.0-test/kernel/drivers/a.ko",
        "/lib/modules/6.1.0-test/kernel/drivers/b_mod.ko",
    ]
    assert (root / "etc/kata-agent/modules.load").read_text().split() == load
    dep = (root / "lib/modules/6.1.0-test/modules.dep").read_text()
    assert "kernel/drivers/b_mod.ko: kernel/drivers/a.ko" in dep


def test_initrd_is_a_reproducible_newc_cpio_with_device_nodes(tmp_path: Path) -> None:
    initrd = load_image_build("initrd")
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    os.symlink("usr/bin", root / "bin")
    (root / "init").write_text("x")
    out1, out2 = tmp_path / "a.cpio", tmp_path / "b.cpio"
    with open(out1, "wb") as fh:
        initrd.write_cpio(root, fh, 1234)
    with open(out2, "wb") as fh:
        initrd.write_cpio(root, fh, 1234)
    assert out1.read_bytes() == out2.read_bytes()
    with open(out1, "rb") as fh:
        listing = subprocess.run(
            ["cpio", "-itv", "--quiet"], stdin=fh, capture_output=True, text=True, check=True
        ).stdout
    assert "dev/urandom" in listing
    assert "dev/console" in listing
    assert "bin -> usr/bin" in listing
    assert all(" root " in line for line in listing.splitlines() if line)


def test_vmlinux_is_extracted_from_an_xz_payload() -> None:
    kernel = load_image_build("kernel")
    elf = b"\x7fELF" + b"\2" + b"\0" * 200
    image = b"MZ" + b"\0" * 500 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0" * 64
    assert kernel.extract_vmlinux(image) == elf
    assert kernel.extract_vmlinux(elf) == elf


def test_a_kernel_without_a_payload_is_a_clear_error() -> None:
    kernel = load_image_build("kernel")
    with pytest.raises(BuildError, match="step kernel-vmlinux: no xz or gzip payload"):
        kernel.extract_vmlinux(b"MZ" + b"\0" * 1000)


def test_a_failing_step_names_itself_and_its_log(tmp_path: Path) -> None:
    logs = Logs(tmp_path / "logs")
    with pytest.raises(BuildError, match=r"step demo failed \(exit 3\): see .*demo.log"):
        run("demo", ["sh", "-c", "echo boom >&2; exit 3"], logs)
    assert "boom" in (tmp_path / "logs" / "demo.log").read_text()
    with pytest.raises(BuildError, match="command 'no-such-tool-xyz' not found"):
        run("demo", ["no-such-tool-xyz"], logs)


def test_a_full_disk_names_the_step_and_the_path(tmp_path: Path) -> None:
    logs = Logs(tmp_path / "logs")
    with (
        pytest.raises(BuildError, match="step initrd: disk full writing /x/initrd"),
        step("initrd", logs),
    ):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/initrd")


def test_rootfs_device_nodes_are_character_devices() -> None:
    from rootfs.build import DEVICE_NODES

    assert ("dev/urandom", "c", 1, 9, 0o666) in DEVICE_NODES
    assert all(kind == "c" and stat.S_IMODE(mode) == mode for _, kind, _, _, mode in DEVICE_NODES)


def test_disk_image_has_kata_layout_and_a_clean_ext4_partition(tmp_path: Path) -> None:
    disk = load_image_build("disk")
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "init").write_text("#!/bin/sh\n")
    os.symlink("../../init", root / "usr/sbin/init")
    out = disk.pack(root, tmp_path / "disk.img", Logs(tmp_path / "logs"))
    data = out.read_bytes()[:512]
    assert data[510:] == b"\x55\xaa"
    assert data[446 + 4] == 0x83
    start, sectors = struct.unpack("<II", data[454:462])
    assert start * 512 == 1 << 20
    assert out.stat().st_size % (128 << 20) == 0
    assert (start + sectors) * 512 == out.stat().st_size
    fsck = subprocess.run(
        ["e2fsck", "-fn", f"{out}?offset={1 << 20}"], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
