"""Root filesystem set-up inside the container's mount namespace (runs in the init process).

Order (``oci.engine.init`` calls these as named steps): propagation of ``/``, bind of the rootfs
onto itself, the spec's mounts in order (each destination resolved inside the rootfs with
``oci.safepath`` and mounted through its fd, so a symlink cannot lead a mount out of the rootfs),
/dev (default devices, links, spec devices), then — after the prestart hooks — ``pivot_root``
(or MS_MOVE + chroot when the root is an initramfs), read-only root, masked and read-only paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from oci import safepath
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


def _dest_dir(root: int, path: str) -> int:
    """``O_PATH`` fd of the directory ``path`` inside the rootfs ``root`` (made if missing),
    resolved as the container sees it: symlinks, absolute ones included, and ``..`` stay in."""
    try:
        return safepath.mkdirs(root, path, 0o755, how=safepath.IN_ROOT)
    except OSError as err:
        raise OSError(err.errno, f"mount point: {os.strerror(err.errno or 0)}", path) from None


def _dest_file(root: int, path: str) -> int:
    """``O_PATH`` fd of the file ``path`` inside the rootfs (created empty if missing, also
    where a dangling symlink in the image points); never opened for I/O if it exists."""
    try:
        return safepath.resolve(root, path, os.O_PATH, how=safepath.IN_ROOT)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise OSError(err.errno, f"mount point: {os.strerror(err.errno or 0)}", path) from None
    try:
        os.close(_dest_dir(root, os.path.dirname(path.rstrip("/")) or "/"))
        flags = os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY
        os.close(safepath.resolve(root, path, flags, 0o644, how=safepath.IN_ROOT))
        return safepath.resolve(root, path, os.O_PATH, how=safepath.IN_ROOT)
    except OSError as err:
        raise OSError(
            err.errno, f"create mount point: {os.strerror(err.errno or 0)}", path
        ) from None


def _top(fd: int, root: int = -1) -> int:
    """``O_PATH`` fd of the mount just made on ``fd``: a lookup by name from its parent steps
    into the mount (``fd`` itself stays below it). A directory's parent is reached through
    ``fd`` itself; a file's (``root`` given) by its real path inside the rootfs."""
    real = safepath.real_path(fd)
    name = os.path.basename(real)
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    if root < 0:
        return os.open(f"{safepath.proc_path(fd)}/../{name}", flags)
    parent_rel = os.path.relpath(os.path.dirname(real), safepath.real_path(root))
    parent = safepath.resolve(root, parent_rel, os.O_PATH | os.O_DIRECTORY, how=safepath.IN_ROOT)
    try:
        top = os.open(name, flags, dir_fd=parent)
    finally:
        os.close(parent)
    if safepath.mount_id(top) == safepath.mount_id(fd):
        os.close(top)
        raise OSError(errno.EBUSY, "the bind mount moved while it was made", real)
    return top


def _mkdir_p(path: str) -> None:
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as err:
        raise OSError(err.errno, f"mkdir: {os.strerror(err.errno or 0)}", path) from None


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


def mount_cgroup(sys: Syscalls, op: MountOp, dest_fd: int, has_cgroupns: bool) -> None:
    """A ``cgroup`` mount: cgroup2 on a unified host; per-controller cgroupfs on v1/hybrid."""
    ro = op.flags & c.MS_RDONLY
    base = op.flags & (c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC | c.MS_RELATIME)
    dest = safepath.proc_path(dest_fd)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        sys.mount("cgroup2", dest, "cgroup2", op.flags & ~c.MS_BIND, None)
        return
    if not has_cgroupns:
        # Without a cgroup namespace the container sees the host's hierarchies (read-only).
        sys.mount("/sys/fs/cgroup", dest, None, c.MS_BIND | c.MS_REC, None)
        if ro:
            top = _top(dest_fd)
            try:
                remount_bind(sys, safepath.proc_path(top), c.MS_RDONLY | base)
            finally:
                os.close(top)
        return
    sys.mount("tmpfs", dest, "tmpfs", base, "mode=755")
    top = _top(dest_fd)  # the new tmpfs: the controllers' directories go there
    try:
        tmpfs = safepath.proc_path(top)
        for name, opts in _cgroup_v1_hierarchies():
            sub = os.path.join(tmpfs, name)
            _mkdir_p(sub)
            sys.mount("cgroup", sub, "cgroup", base | ro, opts)
        if os.path.isdir("/sys/fs/cgroup/unified"):
            sub = os.path.join(tmpfs, "unified")
            _mkdir_p(sub)
            sys.mount("cgroup2", sub, "cgroup2", base | ro, None)
        if ro:
            sys.mount(None, tmpfs, None, c.MS_REMOUNT | c.MS_RDONLY | base, "mode=755")
    finally:
        os.close(top)


def mount_one(sys: Syscalls, rootfs: str, op: MountOp, *, has_cgroupns: bool) -> None:
    """One spec mount. The destination is resolved inside the rootfs (``oci.safepath``,
    ``IN_ROOT``: a symlink in the image cannot lead it out) and the mount made on the
    directory found, through its fd (``/proc/self/fd/N``); later steps (remount flags,
    propagation) act on the new mount's own fd."""
    root = safepath.open_root(rootfs)
    try:
        _mount_one(sys, root, op, has_cgroupns)
    finally:
        os.close(root)


def _mount_one(sys: Syscalls, root: int, op: MountOp, has_cgroupns: bool) -> None:
    if op.fstype == "cgroup" and not op.is_bind:
        dest_fd = _dest_dir(root, op.destination)
        try:
            mount_cgroup(sys, op, dest_fd, has_cgroupns)
        finally:
            os.close(dest_fd)
        return
    if op.is_bind:
        src = op.source or ""
        try:
            is_dir = os.path.isdir(src)
            os.stat(src)
        except OSError as err:
            raise OSError(err.errno, f"bind source: {os.strerror(err.errno or 0)}", src) from None
        dest_fd = _dest_dir(root, op.destination) if is_dir else _dest_file(root, op.destination)
        try:
            sys.mount(src, safepath.proc_path(dest_fd), "bind", op.flags & (c.MS_BIND | c.MS_REC))
            top = _top(dest_fd) if is_dir else _top(dest_fd, root)
        finally:
            os.close(dest_fd)
        try:
            extra = op.flags & ~(c.MS_BIND | c.MS_REC | c.MS_REMOUNT)
            if extra:
                remount_bind(sys, safepath.proc_path(top), extra, op.clear)
            _propagate(sys, op, top)
        finally:
            os.close(top)
        return
    if op.fstype in ("proc", "sysfs"):
        _check_pseudo_fs_destination(root, op)
    dest_fd = _dest_dir(root, op.destination)
    try:
        dest = safepath.proc_path(dest_fd)
        try:
            sys.mount(op.source or op.fstype, dest, op.fstype, op.flags, op.data)
        except OSError as err:
            if op.fstype == "sysfs" and err.errno == errno.EPERM:
                # sysfs cannot be mounted without owning the network namespace: runc falls
                # back to a read-only recursive bind of the host's /sys.
                sys.mount("/sys", dest, None, c.MS_BIND | c.MS_REC, None)
                top = _top(dest_fd)
                try:
                    remount_bind(
                        sys, safepath.proc_path(top), c.MS_RDONLY | (op.flags & ~c.MS_RDONLY)
                    )
                finally:
                    os.close(top)
            elif op.fstype == "mqueue" and err.errno in (errno.EPERM, errno.EINVAL):
                sys.mount("/dev/mqueue", dest, None, c.MS_BIND | c.MS_REC, None)
            else:
                raise
        if op.propagation:
            top = _top(dest_fd)
            try:
                _propagate(sys, op, top)
            finally:
                os.close(top)
    finally:
        os.close(dest_fd)


def _propagate(sys: Syscalls, op: MountOp, top: int) -> None:
    for p in op.propagation:
        sys.mount(None, safepath.proc_path(top), None, p, None)


def _check_pseudo_fs_destination(root: int, op: MountOp) -> None:
    """proc and sysfs only on a real directory (runc's rule: never through a symlink)."""
    try:
        fd = safepath.resolve(root, op.destination, os.O_PATH | os.O_NOFOLLOW, how=safepath.IN_ROOT)
    except FileNotFoundError:
        return
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISLNK(mode):
        raise OSError(errno.ENOTDIR, f"{op.fstype} mount destination is a symlink", op.destination)
    if not stat.S_ISDIR(mode):
        raise OSError(
            errno.ENOTDIR, f"{op.fstype} mount destination is not a directory", op.destination
        )


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
    """A device node (or a bind of the host's, in a user namespace) at ``path`` in the rootfs;
    its directory is resolved inside the rootfs and everything happens relative to its fd."""
    root = safepath.open_root(rootfs)
    try:
        parent = _dest_dir(root, os.path.dirname(path) or "/")
    finally:
        os.close(root)
    name = os.path.basename(path)
    at = f"{safepath.proc_path(parent)}/{name}"
    try:
        if bind:
            try:
                node = safepath.open_at(parent, name, os.O_PATH, kinds=_ANY_KIND)
            except FileNotFoundError:
                os.close(safepath.open_at(parent, name, os.O_RDONLY, 0o644, create=True))
                node = safepath.open_at(parent, name, os.O_PATH, kinds=_ANY_KIND)
            try:
                sys.mount(path, safepath.proc_path(node), "bind", c.MS_BIND, None)
            finally:
                os.close(node)
            return
        if kind in ("c", "u"):
            fmt = stat.S_IFCHR
        elif kind == "b":
            fmt = stat.S_IFBLK
        elif kind == "p":
            fmt = stat.S_IFIFO
        else:
            raise OSError(errno.EINVAL, f'unknown device type "{kind}"', path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        sys.mknod(at, fmt | (mode & 0o7777), os.makedev(major, minor))
        node = safepath.open_at(parent, name, os.O_PATH, kinds=_ANY_KIND)
        try:
            sys.chown(safepath.proc_path(node), uid, gid)  # the node made, not a swapped name
        finally:
            os.close(node)
    finally:
        os.close(parent)


_ANY_KIND = (
    stat.S_IFREG,
    stat.S_IFDIR,
    stat.S_IFCHR,
    stat.S_IFBLK,
    stat.S_IFIFO,
    stat.S_IFSOCK,
)


def setup_dev_links(rootfs: str) -> None:
    root = safepath.open_root(rootfs)
    try:
        dev = _dest_dir(root, "/dev")
    finally:
        os.close(root)
    try:
        for target, link in DEV_LINKS:
            name = os.path.basename(link)
            if link == "/dev/ptmx":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dev)
            with contextlib.suppress(FileExistsError):
                os.symlink(target, name, dir_fd=dev)
    finally:
        os.close(dev)


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
