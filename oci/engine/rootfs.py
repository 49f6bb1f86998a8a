"""Root filesystem set-up inside the container's mount namespace (runs in the init process).

Order (``oci.engine.init`` calls these as named steps): propagation of ``/``, bind of the rootfs
onto itself, the spec's mounts in order (each destination resolved with ``secure_join`` so a
symlink cannot lead a mount out of the rootfs), /dev (default devices, links, spec devices),
then — after the prestart hooks — ``pivot_root`` (or MS_MOVE + chroot when the root is an
initramfs), read-only root, masked and read-only paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from oci.syscalls import consts as c
from oci.syscalls import mountopts
from oci.syscalls.api import Syscalls

# Options runc accepts that are not mount flags and are not passed to the kernel.
_IGNORED = frozenset({"tmpcopyup", "idmap", "ridmap", "nofail", "x-", "_netdev"})

# statvfs f_flag bits that a remount must keep (they may be locked in a user namespace).
_ST_KEEP = (
    (1, c.MS_RDONLY),
    (2, c.MS_NOSUID),
    (4, c.MS_NODEV),
    (8, c.MS_NOEXEC),
    (1024, c.MS_NOATIME),
    (2048, c.MS_NODIRATIME),
    (4096, c.MS_RELATIME),
)


@dataclass(frozen=True, slots=True)
class MountOp:
    """One spec mount, parsed: what ``mount_one`` does for it."""

    destination: str
    source: str | None
    fstype: str | None
    flags: int
    clear: int
    propagation: tuple[int, ...]
    data: str | None

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & c.MS_BIND) or self.fstype == "bind"

    def describe(self) -> str:
        return f"mount {self.source or self.fstype} on {self.destination} ({self.fstype})"


def plan_mount(
    destination: str, source: str | None, fstype: str | None, options: tuple[str, ...], bundle: str
) -> MountOp:
    """One spec mount → MountOp (pure). Options runc ignores never reach the kernel."""
    opts = mountopts.parse(o for o in options if o not in _IGNORED and not o.startswith("x-"))
    flags = opts.flags
    if fstype == "bind":
        flags |= c.MS_BIND
    if flags & c.MS_BIND and source and not os.path.isabs(source):
        source = os.path.join(bundle, source)
    return MountOp(
        destination, source, fstype, flags, opts.clear, opts.propagation, opts.data_str or None
    )


class EscapeError(OSError):
    pass


def secure_join(root: str, unsafe: str) -> str:
    """Resolve ``unsafe`` inside ``root`` following symlinks as if ``root`` were ``/``.

    Absolute symlink targets are taken relative to ``root`` (as the container will see them). A
    relative symlink that climbs above ``root`` is refused with ``EXDEV`` (runc would silently
    clamp it; a mount there is almost always an attack or a broken image)."""
    root = os.path.abspath(root)
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > 255:
            raise OSError(
                errno.ELOOP, "too many levels of symbolic links", "/" + "/".join(resolved)
            )
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        else:
            depth = len(resolved)
            for t in target.split("/"):
                if t == "..":
                    depth -= 1
                    if depth < 0:
                        link = "/" + "/".join([*resolved, part])
                        raise EscapeError(
                            errno.EXDEV,
                            f"symlink {link} -> {target} escapes the container rootfs",
                            os.path.join(root, link.lstrip("/")),
                        )
                elif t and t != ".":
                    depth += 1
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return os.path.join(root, *resolved)


def _mkdir_p(path: str) -> None:
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as err:
        raise OSError(err.errno, f"mkdir: {os.strerror(err.errno or 0)}", path) from None


def _touch(path: str) -> None:
    _mkdir_p(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    except OSError as err:
        raise OSError(
            err.errno, f"create mount point: {os.strerror(err.errno or 0)}", path
        ) from None


def _locked_flags(path: str) -> int:
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(ms for st, ms in _ST_KEEP if f & st)


def remount_bind(sys: Syscalls, path: str, flags: int, clear: int = 0) -> None:
    """Apply ``flags`` to an existing bind mount (keeping the flags the kernel may have locked)."""
    want = (flags & ~(c.MS_BIND | c.MS_REC | c.MS_REMOUNT)) | c.MS_BIND | c.MS_REMOUNT
    try:
        sys.mount(None, path, None, want, None)
    except PermissionError:
        locked = _locked_flags(path) & ~clear
        sys.mount(None, path, None, want | locked, None)


def _cgroup_v1_hierarchies() -> list[tuple[str, str]]:
    """[(mount dir name, options)] of the host's cgroup v1 hierarchies."""
    out: list[tuple[str, str]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if len(fields) >= 3 and fields[0] == "cgroup":
                mnt = left.split()[4]
                opts = [o for o in fields[2].split(",") if o not in ("rw", "ro")]
                out.append((os.path.basename(mnt), ",".join(opts)))
    return out


def mount_cgroup(sys: Syscalls, op: MountOp, dest: str, has_cgroupns: bool) -> None:
    """A ``cgroup`` mount: cgroup2 on a unified host; per-controller cgroupfs on v1/hybrid."""
    ro = op.flags & c.MS_RDONLY
    base = op.flags & (c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC | c.MS_RELATIME)
    _mkdir_p(dest)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        sys.mount("cgroup2", dest, "cgroup2", op.flags & ~c.MS_BIND, None)
        return
    if not has_cgroupns:
        # Without a cgroup namespace the container sees the host's hierarchies (read-only).
        sys.mount("/sys/fs/cgroup", dest, None, c.MS_BIND | c.MS_REC, None)
        if ro:
            remount_bind(sys, dest, c.MS_RDONLY | base)
        return
    sys.mount("tmpfs", dest, "tmpfs", base, "mode=755")
    for name, opts in _cgroup_v1_hierarchies():
        sub = os.path.join(dest, name)
        _mkdir_p(sub)
        sys.mount("cgroup", sub, "cgroup", base | ro, opts)
    if os.path.isdir("/sys/fs/cgroup/unified"):
        sub = os.path.join(dest, "unified")
        _mkdir_p(sub)
        sys.mount("cgroup2", sub, "cgroup2", base | ro, None)
    if ro:
        sys.mount(None, dest, None, c.MS_REMOUNT | c.MS_RDONLY | base, "mode=755")


def mount_one(sys: Syscalls, rootfs: str, op: MountOp, *, has_cgroupns: bool) -> None:
    dest = secure_join(rootfs, op.destination)
    if op.fstype in ("cgroup", "cgroup2") and not op.is_bind and op.fstype == "cgroup":
        mount_cgroup(sys, op, dest, has_cgroupns)
        return
    if op.is_bind:
        src = op.source or ""
        try:
            is_dir = os.path.isdir(src)
            os.stat(src)
        except OSError as err:
            raise OSError(err.errno, f"bind source: {os.strerror(err.errno or 0)}", src) from None
        if is_dir:
            _mkdir_p(dest)
        elif not os.path.lexists(dest):
            _touch(dest)
        sys.mount(src, dest, "bind", op.flags & (c.MS_BIND | c.MS_REC), None)
        extra = op.flags & ~(c.MS_BIND | c.MS_REC | c.MS_REMOUNT)
        if extra:
            remount_bind(sys, dest, extra, op.clear)
    else:
        if op.fstype in ("proc", "sysfs"):
            if os.path.islink(dest):
                raise OSError(errno.ENOTDIR, f"{op.fstype} mount destination is a symlink", dest)
            if os.path.exists(dest) and not os.path.isdir(dest):
                raise OSError(
                    errno.ENOTDIR, f"{op.fstype} mount destination is not a directory", dest
                )
        _mkdir_p(dest)
        try:
            sys.mount(op.source or op.fstype, dest, op.fstype, op.flags, op.data)
        except OSError as err:
            if op.fstype == "sysfs" and err.errno == errno.EPERM:
                # sysfs cannot be mounted without owning the network namespace: runc falls
                # back to a read-only recursive bind of the host's /sys.
                sys.mount("/sys", dest, None, c.MS_BIND | c.MS_REC, None)
                remount_bind(sys, dest, c.MS_RDONLY | (op.flags & ~c.MS_RDONLY))
            elif op.fstype == "mqueue" and err.errno in (errno.EPERM, errno.EINVAL):
                sys.mount("/dev/mqueue", dest, None, c.MS_BIND | c.MS_REC, None)
            else:
                raise
    for p in op.propagation:
        sys.mount(None, dest, None, p, None)


DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
)

DEV_LINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
)


def create_device(
    sys: Syscalls,
    rootfs: str,
    path: str,
    kind: str,
    major: int,
    minor: int,
    mode: int,
    uid: int,
    gid: int,
    bind: bool,
) -> None:
    dest = secure_join(rootfs, path)
    _mkdir_p(os.path.dirname(dest))
    if bind:
        if not os.path.lexists(dest):
            _touch(dest)
        sys.mount(path, dest, "bind", c.MS_BIND, None)
        return
    if kind in ("c", "u"):
        fmt = stat.S_IFCHR
    elif kind == "b":
        fmt = stat.S_IFBLK
    elif kind == "p":
        fmt = stat.S_IFIFO
    else:
        raise OSError(errno.EINVAL, f'unknown device type "{kind}"', path)
    if os.path.lexists(dest):
        os.unlink(dest)
    sys.mknod(dest, fmt | (mode & 0o7777), os.makedev(major, minor))
    sys.chown(dest, uid, gid)


def setup_dev_links(rootfs: str) -> None:
    for target, link in DEV_LINKS:
        dest = secure_join(rootfs, link)
        if link == "/dev/ptmx" and os.path.lexists(dest):
            os.unlink(dest)
        with contextlib.suppress(FileExistsError):
            os.symlink(target, dest)


def set_root_propagation(sys: Syscalls, propagation: str | None) -> None:
    flag = mountopts.PROPAGATION.get(propagation or "rslave", c.MS_SLAVE | c.MS_REC)
    sys.mount(None, "/", None, flag, None)


def make_parent_private(sys: Syscalls, rootfs: str) -> None:
    """pivot_root needs the parent mount of the new root not to be shared."""
    mp = _mount_point_of(rootfs)
    with contextlib.suppress(OSError):
        sys.mount(None, mp, None, c.MS_PRIVATE, None)


def _mount_point_of(path: str) -> str:
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
    return best


def pivot(sys: Syscalls, rootfs: str) -> None:
    """pivot_root into ``rootfs`` and detach the old root (runc's pivotRoot)."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sys.pivot_root(".", ".")
        os.fchdir(old)
        sys.mount(None, ".", None, c.MS_SLAVE | c.MS_REC, None)
        sys.umount2(".", c.MNT_DETACH)
        sys.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def move_root(sys: Syscalls, rootfs: str) -> None:
    """The initramfs path (no pivot_root possible): MS_MOVE the rootfs onto / and chroot."""
    sys.chdir(rootfs)
    sys.mount(rootfs, "/", None, c.MS_MOVE, None)
    sys.chroot(".")
    sys.chdir("/")


def mask_path(sys: Syscalls, path: str) -> None:
    """Files: bind /dev/null over them. Directories: a read-only empty tmpfs (as runc)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        sys.mount("tmpfs", path, "tmpfs", c.MS_RDONLY, None)
    else:
        sys.mount("/dev/null", path, None, c.MS_BIND, None)


def readonly_path(sys: Syscalls, path: str) -> None:
    if not os.path.lexists(path):
        return
    sys.mount(path, path, None, c.MS_BIND | c.MS_REC, None)
    remount_bind(sys, path, c.MS_RDONLY)


def readonly_root(sys: Syscalls) -> None:
    remount_bind(sys, "/", c.MS_RDONLY)
