"""Resolve a path below a directory that someone else can write, without ever leaving it.

Every path the agent or the engine takes from a request, or finds below a directory that a
less trusted party can write (the host-shared directory, storage mount points, a container's
rootfs or bundle), is resolved here, relative to an fd of a trusted root, and the work is then done
on the file descriptor (fchmod, fchown, fstat, write, mount through ``proc_path(fd)``), never on
the path again. A symlink planted or swapped in concurrently can then at worst make the call
fail; it cannot redirect it outside the root.

How a path is resolved (``how``):

* ``BENEATH``: symlinks are followed while they stay below the root; an absolute symlink, or a
  ``..`` that would climb above the root, fails with ``EXDEV``.
* ``NO_SYMLINKS``: as ``BENEATH``, and any symlink on the way fails with ``ELOOP``.
* ``IN_ROOT``: the root acts as ``/`` (how a container sees its rootfs): absolute symlinks and
  ``..`` are clamped to the root.

Magic links (``/proc/<pid>/fd/N``, ``/proc/<pid>/exe``, ...) are never followed. ``path`` is
always taken relative to the root; a leading ``/`` is ignored.

The kernel does the walk with ``openat2(2)`` (``RESOLVE_BENEATH`` / ``RESOLVE_IN_ROOT`` with
``RESOLVE_NO_MAGICLINKS``, Linux >= 5.6). Where it is missing, the same rules are applied by a
walk that opens one component at a time with ``O_PATH | O_NOFOLLOW`` relative to the previous
directory's fd and reads symlinks from their own fd (``set_openat2(False)`` forces that walk, for
tests).

API (all raise ``OSError`` with ``errno`` and ``filename`` set; the caller owns returned fds):

``open_root(path)``            an ``O_PATH`` fd of a trusted directory
``resolve(root, path, ...)``   an fd of ``path`` below ``root`` (``O_PATH`` unless ``flags`` say)
``mkdirs(root, path, ...)``    ``mkdir -p`` below ``root``; an ``O_PATH`` fd of the directory
``open_file(root, path, ...)`` open for I/O, non-blocking, only if the file type is one of
                               ``kinds`` (``WrongType`` otherwise): a FIFO or device planted
                               where a regular file was expected is never opened for I/O
``open_at(dir_fd, name, ...)`` the same for one name in a directory fd, optionally creating it
``proc_path(fd)``              ``/proc/self/fd/N``: a mount(2)/umount2(2) target that is the fd
``real_path(fd)``              where the fd is, as mountinfo spells it
``mount_id(fd)``               the id of the mount the fd is on (tells bind mounts apart)
"""

from __future__ import annotations

import errno
import os
import stat

from oci.syscalls import consts as _c

BENEATH = _c.RESOLVE_BENEATH | _c.RESOLVE_NO_MAGICLINKS
NO_SYMLINKS = BENEATH | _c.RESOLVE_NO_SYMLINKS
IN_ROOT = _c.RESOLVE_IN_ROOT | _c.RESOLVE_NO_MAGICLINKS

MAX_SYMLINKS = 40  # the kernel's limit for one lookup
_EAGAIN_TRIES = 64  # openat2 reports a concurrent rename/mount with EAGAIN: retry, then walk

_openat2: bool | None = None  # None: not probed yet


class WrongType(OSError):
    """The path exists but is not of the file type the caller can work with."""


def set_openat2(enabled: bool | None) -> None:
    """Tests: ``False`` forces the component walk, ``None`` probes the kernel again."""
    global _openat2
    _openat2 = enabled


def openat2_in_use() -> bool:
    if _openat2 is None:
        _probe()
    return bool(_openat2)


def _probe() -> None:
    global _openat2
    from oci.syscalls import libc

    try:
        os.close(libc.openat2(-100, "/", os.O_PATH, 0, BENEATH & ~_c.RESOLVE_BENEATH))
        _openat2 = True
    except OSError as err:
        _openat2 = err.errno not in (errno.ENOSYS, errno.EPERM)  # EPERM: a seccomp filter


def _parts(path: str) -> list[str]:
    if "\0" in path:
        raise OSError(errno.EINVAL, "path contains a NUL byte", path)
    return [p for p in path.split("/") if p and p != "."]


def open_root(path: str | os.PathLike[str]) -> int:
    """An ``O_PATH`` directory fd of ``path``, which the caller trusts (symlinks followed)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def resolve(
    root: int, path: str, flags: int = os.O_PATH, mode: int = 0, *, how: int = BENEATH
) -> int:
    """The fd of ``path`` below ``root``, opened with ``flags`` (a trailing symlink is followed
    by the rules of ``how`` unless ``flags`` has ``O_NOFOLLOW``)."""
    parts = _parts(path)
    rel = "/".join(parts) or "."
    if openat2_in_use():
        from oci.syscalls import libc

        for _ in range(_EAGAIN_TRIES):
            try:
                return libc.openat2(root, rel, flags, mode, how)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    continue
                if err.errno == errno.ENOSYS:
                    set_openat2(False)
                    break
                raise OSError(err.errno, os.strerror(err.errno or 0), path) from None
    return _walk(root, parts, flags, mode, how, path)


def _walk(
    root: int,
    parts: list[str],
    flags: int,
    mode: int,
    how: int,
    path: str,
    *,
    mkdir_mode: int | None = None,
    created: list[str] | None = None,
) -> int:
    """openat2's rules, one component at a time (see the module docstring). With ``mkdir_mode``
    missing directories are created on the way (also where a symlink points), the last one too
    when ``flags`` has ``O_DIRECTORY``."""
    todo = list(reversed(parts))
    stack = [os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)]
    names: list[str] = []  # the real path below the root, one name per stack entry after [0]
    links = 0
    retries = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                elif not how & _c.RESOLVE_IN_ROOT:
                    raise OSError(errno.EXDEV, "'..' leaves the root", path)
                continue
            last = not todo
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except FileNotFoundError:
                if last and flags & os.O_CREAT:
                    return _create(stack[-1], name, flags, mode, path)
                if mkdir_mode is None or (last and not flags & os.O_DIRECTORY):
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
                retries += 1
                if retries > MAX_SYMLINKS:
                    raise OSError(errno.EAGAIN, "directory keeps changing", path) from None
                try:
                    os.mkdir(name, mkdir_mode, dir_fd=stack[-1])
                    if created is not None:
                        created.append("/".join([*names, name]))
                except FileExistsError:
                    pass  # made (or planted) meanwhile: look at it again
                except OSError as err:
                    raise OSError(err.errno, os.strerror(err.errno or 0), path) from None
                todo.append(name)
                continue
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and last and flags & os.O_NOFOLLOW:
                if not _is_path_only(flags):
                    os.close(fd)
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                return fd
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                if how & _c.RESOLVE_NO_SYMLINKS:
                    raise OSError(errno.ELOOP, "symlink in the path", path)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    if not how & _c.RESOLVE_IN_ROOT:
                        raise OSError(errno.EXDEV, "absolute symlink leaves the root", path)
                    while len(stack) > 1:
                        os.close(stack.pop())
                    names.clear()
                todo.extend(reversed(_parts(target)))
                continue
            if not last:
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                stack.append(fd)
                names.append(name)
                continue
            return _finish(fd, st, stack[-1], name, flags, path)
        return _finish(stack.pop(), None, -1, ".", flags, path)
    finally:
        for fd in stack:
            os.close(fd)


def _create(dir_fd: int, name: str, flags: int, mode: int, path: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as err:
        raise OSError(err.errno, os.strerror(err.errno or 0), path) from None


def _finish(
    fd: int, st: os.stat_result | None, dir_fd: int, name: str, flags: int, path: str
) -> int:
    """Turn the walk's ``O_PATH`` fd into one opened with ``flags`` (same inode)."""
    if _is_path_only(flags):
        if flags & os.O_DIRECTORY and not stat.S_ISDIR((st or os.fstat(fd)).st_mode):
            os.close(fd)
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return fd
    if flags & os.O_CREAT and flags & os.O_EXCL:
        os.close(fd)
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    try:
        return os.open(proc_path(fd), (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_CLOEXEC)
    except OSError as err:
        raise OSError(err.errno, os.strerror(err.errno or 0), path) from None
    finally:
        os.close(fd)


def mkdirs(
    root: int, path: str, mode: int = 0o755, *, how: int = BENEATH, created: list[str] | None = None
) -> int:
    """``mkdir -p path`` below ``root``: an ``O_PATH`` fd of the directory. Missing directories
    (also those a symlink on the way points to) are made with mkdirat and entered with
    ``O_NOFOLLOW``; a concurrent swap makes the call fail or resolve by the same rules, never
    escape. Their paths relative to ``root`` are appended to ``created``; ``mode`` is subject to
    the umask."""
    flags = os.O_PATH | os.O_DIRECTORY
    try:
        return resolve(root, path, flags, how=how)
    except FileNotFoundError:
        pass
    return _walk(root, _parts(path), flags, 0, how, path, mkdir_mode=mode, created=created)


def open_file(
    root: int,
    path: str,
    flags: int = os.O_RDONLY,
    *,
    kinds: tuple[int, ...] = (stat.S_IFREG,),
    how: int = BENEATH,
) -> int:
    """Open ``path`` below ``root`` for I/O (``O_NONBLOCK | O_NOCTTY``) only if its type is one
    of ``kinds`` (``stat.S_IFREG``, ``stat.S_IFDIR``, ...); ``WrongType`` otherwise. The type is
    checked on an ``O_PATH`` fd first, so a FIFO or device is never opened for I/O."""
    fd = resolve(root, path, os.O_PATH | (flags & os.O_NOFOLLOW), how=how)
    return _reopen_checked(fd, flags, kinds, path)


def open_at(
    dir_fd: int,
    name: str,
    flags: int = os.O_RDONLY,
    mode: int = 0o600,
    *,
    kinds: tuple[int, ...] = (stat.S_IFREG,),
    create: bool = False,
) -> int:
    """``open_file`` for one entry of a directory fd; the entry itself is never followed if it is
    a symlink (``ELOOP``). With ``create`` a missing entry is created (``O_EXCL``) as a regular
    file with ``mode``."""
    if "/" in name or name in ("", ".", "..") or "\0" in name:
        raise OSError(errno.EINVAL, "not a plain file name", name)
    io_flags = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)
    for _ in range(8):  # an entry removed/created under our feet: look again
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                fd = os.open(
                    name,
                    io_flags
                    | os.O_CREAT
                    | os.O_EXCL
                    | os.O_NOFOLLOW
                    | os.O_NONBLOCK
                    | os.O_NOCTTY
                    | os.O_CLOEXEC,
                    mode,
                    dir_fd=dir_fd,
                )
            except FileExistsError:
                continue
            return fd
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ELOOP, "is a symlink", name)
        out = _reopen_checked(fd, io_flags, kinds, name)
        if flags & os.O_TRUNC:
            os.ftruncate(out, 0)
        return out
    raise OSError(errno.EAGAIN, "entry keeps changing", name)


def _is_path_only(flags: int) -> bool:
    return flags & ~(os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY) == os.O_PATH


def _reopen_checked(fd: int, flags: int, kinds: tuple[int, ...], path: str) -> int:
    """Check the type of the ``O_PATH`` ``fd`` (closed here), then open that inode for I/O."""
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind not in kinds:
            raise WrongType(errno.EINVAL, f"is a {_KIND_NAMES.get(kind, oct(kind))}", path)
        if _is_path_only(flags):
            keep, fd = fd, -1
            return keep
        try:
            return os.open(
                proc_path(fd),
                (flags & ~(os.O_NOFOLLOW | os.O_CREAT | os.O_EXCL))
                | os.O_NONBLOCK
                | os.O_NOCTTY
                | os.O_CLOEXEC,
            )
        except OSError as err:
            raise OSError(err.errno, os.strerror(err.errno or 0), path) from None
    finally:
        if fd >= 0:
            os.close(fd)


_KIND_NAMES = {
    stat.S_IFREG: "regular file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def proc_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def real_path(fd: int) -> str:
    return os.readlink(proc_path(fd))


def mount_id(fd: int) -> int:
    """``mnt_id`` from /proc/self/fdinfo: unlike ``st_dev`` it tells a bind mount of the same
    filesystem apart."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.ENOENT, "no mnt_id in fdinfo", str(fd))
