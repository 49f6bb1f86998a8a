"""Kernel modules the guest needs, and their dependency closure in load order.

Debian's kernel builds every virtio driver, 9p, virtio-fs, overlay, loop, vsock and ext4 as modules,
so an initrd booted with it must carry them and load them itself (there is no udev in the guest).
Dependencies come from each module's own ``.modinfo`` section (``depends=``), read here with a small
ELF reader, so no depmod/kmod is needed on the build host. The result is written to the rootfs as

* ``/lib/modules/<release>/kernel/...``       the ``.ko`` files (uncompressed, for finit_module)
* ``/lib/modules/<release>/modules.dep``      for busybox ``modprobe`` in the debug shell
* ``/etc/kata-agent/modules.load``            absolute paths in load order; ``agent/boot`` loads
                                              exactly this list with ``finit_module``

A module that is built into the kernel (listed in ``modules.builtin``) is simply not needed.
"""

from __future__ import annotations

import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

#: What the guest needs, most urgent first: the agent's channel (virtio-serial over virtio-pci)
#: comes before storage and network drivers. Names use underscores, as the kernel does.
NEEDED: tuple[str, ...] = (
    # transport to the host
    "virtio_pci",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "vsock_loopback",
    # shared filesystems (Kata: virtio-fs tag kataShared; 9p as the fallback)
    "virtiofs",
    "9pnet_virtio",
    "9p",
    # container root filesystems and block devices
    "overlay",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ext4",
    "crc32c_generic",
    "loop",
    # guest network interfaces
    "virtio_net",
    # entropy
    "virtio_rng",
)

_ELF_MAGIC = b"\x7fELF"


class ModuleError(Exception):
    """A needed module is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path  # inside the source modules tree
    depends: tuple[str, ...]


def modname(filename: str) -> str:
    base = filename.split("/")[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_ko(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith((".zst", ".gz")):
        raise ModuleError(f"{path}: only uncompressed or .xz modules are supported")
    return data


def modinfo(data: bytes) -> dict[str, str]:
    """The key=value pairs of an ELF64 module's .modinfo section (first value per key wins)."""
    if data[:4] != _ELF_MAGIC or data[4] != 2:
        raise ModuleError("not an ELF64 kernel module")
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        name, _typ, _flags, _addr, s_off, s_size = struct.unpack_from("<IIQQQQ", data, off)
        sections.append((name, s_off, s_size))
    _, str_off, str_size = sections[e_shstrndx]
    strtab = data[str_off : str_off + str_size]
    info: dict[str, str] = {}
    for name, s_off, s_size in sections:
        end = strtab.index(b"\0", name)
        if strtab[name:end] != b".modinfo":
            continue
        for item in data[s_off : s_off + s_size].split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                info.setdefault(key.decode(), value.decode(errors="replace"))
    return info


def index(modules_dir: Path) -> dict[str, Path]:
    """Module name → .ko path below `modules_dir` (a lib/modules/<release> directory)."""
    found: dict[str, Path] = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        if path.is_file():
            found.setdefault(modname(path.name), path)
    return found


def builtin(modules_dir: Path) -> set[str]:
    try:
        text = (modules_dir / "modules.builtin").read_text()
    except FileNotFoundError:
        return set()
    return {modname(line.strip()) for line in text.splitlines() if line.strip()}


def closure(modules_dir: Path, needed: tuple[str, ...] = NEEDED) -> list[Module]:
    """The needed modules plus everything they depend on, each after its dependencies."""
    idx = index(modules_dir)
    built_in = builtin(modules_dir)
    order: list[Module] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in built_in:
            return
        if name in chain:
            raise ModuleError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = idx.get(name)
        if path is None:
            if not idx and not built_in:
                raise ModuleError(f"no modules found in {modules_dir}")
            raise ModuleError(
                f"kernel module {name!r} (needed by {chain[-1] if chain else 'the guest'}) "
                f"is neither in {modules_dir} nor built in"
            )
        info = modinfo(read_ko(path))
        deps = tuple(d for d in info.get("depends", "").split(",") if d)
        for dep in deps:
            visit(modname(dep), (*chain, name))
        done.add(name)
        order.append(Module(name, path, deps))

    for name in needed:
        visit(name, ())
    return order


def install(modules: list[Module], modules_dir: Path, root: Path, release: str) -> list[str]:
    """Copy `modules` into `root` (uncompressed), write modules.dep and the agent's load list."""
    dest_base = root / "lib" / "modules" / release
    guest_paths: dict[str, str] = {}
    for mod in modules:
        rel = mod.path.relative_to(modules_dir)
        rel_name = str(rel)
        for suffix in (".xz",):
            if rel_name.endswith(suffix):
                rel_name = rel_name[: -len(suffix)]
        dest = dest_base / rel_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(read_ko(mod.path))
        guest_paths[mod.name] = rel_name
    lines = []
    for mod in modules:
        deps = " ".join(guest_paths[modname(d)] for d in mod.depends if modname(d) in guest_paths)
        lines.append(f"{guest_paths[mod.name]}: {deps}".rstrip())
    (dest_base / "modules.dep").write_text("\n".join(lines) + "\n")
    for extra in ("modules.builtin", "modules.order"):
        src = modules_dir / extra
        if src.is_file():
            (dest_base / extra).write_bytes(src.read_bytes())
    load = [f"/lib/modules/{release}/{guest_paths[m.name]}" for m in modules]
    etc = root / "etc" / "kata-agent"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "modules.load").write_text("\n".join(load) + "\n")
    return load
