"""Guest-wide use cases: guest details, clock, entropy, CopyFile, metrics.

Everything that touches the system goes through a root or a callable given to the constructor
(``sysfs_root``, ``random_device``, ``set_clock``), so tests can point it at temp files.

CopyFile (Kata's semantics, reference §1.2): the target must be below
``<run_dir>/shared/containers/``, a directory the host (and containers, through their rootfs) can
write. The parent is resolved and made with ``oci.safepath`` (no symlink anywhere on the way, even
one planted concurrently); everything after that acts on file descriptors: the mode and owner of a
directory are set with fchmod/fchown on the opened directory, and a file is only ever opened after
its type was checked on an ``O_PATH`` fd (a FIFO planted at ``<name>.tmp`` is refused, never
opened). Missing parents are created with ``dir_mode & 0o777``; the immediate parent is chowned to
uid/gid. ``file_mode``'s type bits select a directory, a symlink (``data`` is the target) or a
regular file; regular files are written in chunks at ``offset`` into ``<name>.tmp`` (offset 0
truncates; a chunk may not leave a gap) and renamed into place, with mode and owner applied, once
the size reaches ``file_size`` (an atomic replace). The work runs on the filesystem pool
(``agent.blocking``), so a stuck share cannot starve other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent import __version__
from agent.blocking import BlockingPool, fs_pool
from agent.config import AgentConfig
from agent.errors import Internal, InvalidArgument, PermissionDenied
from agent.metrics import MetricsCollector
from oci import safepath

log = logging.getLogger(__name__)

# <linux/random.h>
RNDADDTOENTCNT = 0x40045201
RNDRESEEDCRNG = 0x5207


@dataclass(frozen=True, slots=True)
class AgentDetails:
    version: str
    init_daemon: bool
    device_handlers: tuple[str, ...]
    storage_handlers: tuple[str, ...]
    supports_seccomp: bool
    extra_features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GuestDetails:
    mem_block_size_bytes: int
    support_mem_hotplug_probe: bool
    agent: AgentDetails


@dataclass(frozen=True, slots=True)
class CopyFileArgs:
    path: str
    file_size: int
    file_mode: int
    dir_mode: int
    uid: int
    gid: int
    offset: int
    data: bytes


def _set_realtime_clock(seconds: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, seconds)


def _seccomp_available() -> bool:
    """libseccomp is what the container engine binds; look for it without loading it."""
    for directory in (
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
        "/lib",
        "/usr/lib/aarch64-linux-gnu",
    ):
        if os.path.exists(os.path.join(directory, "libseccomp.so.2")):
            return True
    return False


@dataclass(eq=False)
class GuestService:
    config: AgentConfig
    sysfs_root: Path = Path("/sys")
    random_device: Path = Path("/dev/random")
    set_clock: Callable[[float], None] = _set_realtime_clock
    storage_handlers: Callable[[], Sequence[str]] = tuple
    device_handlers: Callable[[], Sequence[str]] = tuple
    supports_seccomp: Callable[[], bool] = _seccomp_available
    extra_features: tuple[str, ...] = field(default=())
    metrics: MetricsCollector = field(default_factory=MetricsCollector)
    fs: BlockingPool = field(default_factory=fs_pool)

    # -- GetMetrics --------------------------------------------------------------------------------

    async def metrics_text(self) -> str:
        return await asyncio.to_thread(self.metrics.collect)

    # -- GetGuestDetails ---------------------------------------------------------------------------

    def guest_details(self, *, mem_block_size: bool, mem_hotplug_probe: bool) -> GuestDetails:
        block = 0
        if mem_block_size:
            path = self.sysfs_root / "devices/system/memory/block_size_bytes"
            try:
                block = int(path.read_text().strip(), 16)
            except FileNotFoundError:
                block = 0
            except (OSError, ValueError) as err:
                raise Internal(f"read memory block size from {path}: {err}") from err
        probe = False
        if mem_hotplug_probe:
            probe = (self.sysfs_root / "devices/system/memory/probe").exists()
        details = AgentDetails(
            version=__version__,
            init_daemon=os.getpid() == 1,
            device_handlers=tuple(self.device_handlers()),
            storage_handlers=tuple(self.storage_handlers()),
            supports_seccomp=self.supports_seccomp(),
            extra_features=self.extra_features,
        )
        return GuestDetails(block, probe, details)

    # -- SetGuestDateTime --------------------------------------------------------------------------

    def set_date_time(self, sec: int, usec: int) -> None:
        if sec < 0:
            raise InvalidArgument(f"set guest time: seconds must be >= 0, got {sec}")
        if not 0 <= usec < 1_000_000:
            raise InvalidArgument(
                f"set guest time: microseconds must be in [0, 1000000), got {usec}"
            )
        try:
            self.set_clock(sec + usec / 1e6)
        except OSError as err:
            raise Internal(f"set guest time to {sec}.{usec:06d}: {_errno_text(err)}") from err
        log.info("guest time set", extra={"sec": sec, "usec": usec})

    # -- ReseedRandomDev ---------------------------------------------------------------------------

    async def reseed_random(self, data: bytes) -> None:
        if not data:
            raise InvalidArgument("reseed random device: data is empty")
        await asyncio.to_thread(self._reseed, data)

    def _reseed(self, data: bytes) -> None:
        path = self.random_device
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise Internal(f"reseed random device: open {path}: {_errno_text(err)}") from err
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                # credit as many bits as Kata does (the data length); the int is passed by pointer
                fcntl.ioctl(fd, RNDADDTOENTCNT, struct.pack("i", len(data)))
                fcntl.ioctl(fd, RNDRESEEDCRNG)
        except OSError as err:
            raise Internal(f"reseed random device {path}: {_errno_text(err)}") from err
        finally:
            os.close(fd)

    # -- CopyFile ----------------------------------------------------------------------------------

    async def copy_file(self, args: CopyFileArgs) -> None:
        check_copy_args(args)
        await self.fs.run(self._copy_file, args)

    def _copy_file(self, args: CopyFileArgs) -> None:
        base = self.config.paths.shared_containers_dir
        parts = self._relative_parts(args.path, base)
        try:
            base.mkdir(parents=True, exist_ok=True)
            root = safepath.open_root(base)
        except OSError as err:
            raise Internal(f"copy file {args.path}: open {base}: {_errno_text(err)}") from err
        try:
            dir_fd = self._parent_dir(root, "/".join(parts[:-1]), args)
            try:
                self._write_leaf(dir_fd, parts[-1], args)
            finally:
                os.close(dir_fd)
        finally:
            os.close(root)

    def _relative_parts(self, path: str, base: Path) -> list[str]:
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            raise InvalidArgument(f"copy file {path!r}: path must be absolute")
        if ".." in pure.parts:
            raise PermissionDenied(f"copy file {path}: '..' is not allowed in the path")
        try:
            rel = pure.relative_to(PurePosixPath(base))
        except ValueError:
            raise PermissionDenied(
                f"copy file {path}: only paths below {base}/ may be written"
            ) from None
        if not rel.parts or rel.parts == (".",):
            raise PermissionDenied(f"copy file {path}: only paths below {base}/ may be written")
        return list(rel.parts)

    def _parent_dir(self, root: int, rel: str, args: CopyFileArgs) -> int:
        """The leaf's directory, opened for fchown: made (mode ``dir_mode``, not subject to the
        umask) where missing, no symlink anywhere on the way, owned by uid/gid."""
        created: list[str] = []
        dir_mode = args.dir_mode & 0o777
        try:
            path_fd = safepath.mkdirs(
                root, rel, dir_mode, how=safepath.NO_SYMLINKS, created=created
            )
            try:
                fd = os.open(safepath.proc_path(path_fd), os.O_RDONLY | os.O_DIRECTORY)
            finally:
                os.close(path_fd)
        except OSError as err:
            raise self._walk_error(args.path, err) from err
        try:
            for made in created:
                made_fd = safepath.resolve(
                    root, made, os.O_RDONLY | os.O_DIRECTORY, how=safepath.NO_SYMLINKS
                )
                try:
                    os.fchmod(made_fd, dir_mode)
                finally:
                    os.close(made_fd)
            if rel:
                os.fchown(fd, args.uid, args.gid)
        except OSError as err:
            os.close(fd)
            raise Internal(f"copy file {args.path}: set up the parent: {_errno_text(err)}") from err
        return fd

    @staticmethod
    def _walk_error(path: str, err: OSError) -> Exception:
        if err.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            return PermissionDenied(
                f"copy file {path}: a parent is a symlink or not a directory; refusing to follow"
            )
        return Internal(f"copy file {path}: open the parent: {_errno_text(err)}")

    def _write_leaf(self, dir_fd: int, name: str, args: CopyFileArgs) -> None:
        kind = stat.S_IFMT(args.file_mode)
        mode = args.file_mode & 0o7777
        if kind == stat.S_IFDIR:
            self._make_dir(dir_fd, name, mode, args)
        elif kind == stat.S_IFLNK:
            self._make_symlink(dir_fd, name, args)
        elif kind in (0, stat.S_IFREG):
            self._write_chunk(dir_fd, name, mode, args)
        else:
            raise InvalidArgument(
                f"copy file {args.path}: file_mode: unsupported file type {oct(kind)}"
            )

    def _make_dir(self, dir_fd: int, name: str, mode: int, args: CopyFileArgs) -> None:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            pass  # an existing directory gets the mode and owner; anything else is refused
        except OSError as err:
            raise Internal(f"copy file {args.path}: mkdir: {_errno_text(err)}") from err
        try:
            fd = safepath.open_at(dir_fd, name, os.O_RDONLY, kinds=(stat.S_IFDIR,))
        except OSError as err:
            raise self._leaf_error(args.path, name, err) from err
        try:
            os.fchmod(fd, mode)  # on the fd: a swap for a symlink cannot redirect it
            os.fchown(fd, args.uid, args.gid)
        except OSError as err:
            raise Internal(f"copy file {args.path}: chmod/chown: {_errno_text(err)}") from err
        finally:
            os.close(fd)

    def _make_symlink(self, dir_fd: int, name: str, args: CopyFileArgs) -> None:
        target = args.data.decode(errors="surrogateescape")
        if not target:
            raise InvalidArgument(f"copy file {args.path}: data: symlink with an empty target")
        if "\0" in target:
            raise InvalidArgument(f"copy file {args.path}: data: symlink target has a NUL byte")
        tmp = f".{name}.symlink.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            os.symlink(target, tmp, dir_fd=dir_fd)
            os.chown(tmp, args.uid, args.gid, dir_fd=dir_fd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if err.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise InvalidArgument(
                    f"copy file {args.path}: a directory is in the way of the symlink"
                ) from err
            raise Internal(f"copy file {args.path}: symlink: {_errno_text(err)}") from err

    def _write_chunk(self, dir_fd: int, name: str, mode: int, args: CopyFileArgs) -> None:
        if args.offset + len(args.data) > args.file_size:
            raise InvalidArgument(
                f"copy file {args.path}: chunk at offset {args.offset} with {len(args.data)} "
                f"bytes goes past file_size {args.file_size}"
            )
        tmp = f"{name}.tmp"
        try:
            if args.offset == 0:
                fd = safepath.open_at(dir_fd, tmp, os.O_WRONLY | os.O_TRUNC, 0o600, create=True)
            else:
                fd = safepath.open_at(dir_fd, tmp, os.O_WRONLY)
        except FileNotFoundError:
            raise InvalidArgument(
                f"copy file {args.path}: chunk at offset {args.offset} but no transfer in "
                "progress (the first chunk must have offset 0)"
            ) from None
        except OSError as err:
            raise self._leaf_error(args.path, tmp, err) from err
        try:
            size = os.fstat(fd).st_size
            if args.offset > size:
                # chunks arrive in order (the runtime sends them sequentially); a gap would make
                # the size check below declare a file with a hole complete
                raise InvalidArgument(
                    f"copy file {args.path}: chunk at offset {args.offset} leaves a gap after "
                    f"byte {size} received so far"
                )
            view = memoryview(args.data)
            pos = args.offset
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
            if os.fstat(fd).st_size < args.file_size:
                return
            os.fchmod(fd, mode)
            os.fchown(fd, args.uid, args.gid)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            if err.errno in (errno.EISDIR, errno.ENOTEMPTY):
                raise InvalidArgument(
                    f"copy file {args.path}: a directory is in the way of the file"
                ) from err
            raise Internal(f"copy file {args.path}: write: {_errno_text(err)}") from err
        finally:
            os.close(fd)

    @staticmethod
    def _leaf_error(path: str, name: str, err: OSError) -> Exception:
        if isinstance(err, safepath.WrongType):
            return InvalidArgument(f"copy file {path}: {name} {err.strerror}")
        if err.errno in (errno.ELOOP, errno.EXDEV):
            return PermissionDenied(f"copy file {path}: {name} is a symlink; refusing to follow")
        return Internal(f"copy file {path}: open {name}: {_errno_text(err)}")


ID_MAX = 0xFFFFFFFE  # uid/gid 2**32-1 is (uid_t)-1, "no change"


def check_copy_args(args: CopyFileArgs) -> None:
    """Input errors of a CopyFile request, each naming its field."""
    where = f"copy file {args.path!r}"
    if args.offset < 0:
        raise InvalidArgument(f"{where}: offset: must be >= 0, got {args.offset}")
    if args.file_size < 0:
        raise InvalidArgument(f"{where}: file_size: must be >= 0, got {args.file_size}")
    for field_name, value in (("uid", args.uid), ("gid", args.gid)):
        if value < -1 or value > ID_MAX:
            raise InvalidArgument(f"{where}: {field_name}: must be -1 or 0..{ID_MAX}, got {value}")


def _errno_text(err: OSError) -> str:
    code = err.errno
    name = errno.errorcode.get(code, str(code)) if code else "?"
    return f"{err.strerror or err} ({name})"
