"""Where storages may be mounted: only below the agent's run_dir (default /run/kata-containers).

`StorageRoots` names the directories of Kata's layout (reference doc §2.4). Parts of that tree can
be written by others (the host-shared directory, container rootfs below it), so a mount point is
never trusted as a path: `confine()` checks the request (absolute, no `..`, below run_dir) and
resolves it with `oci.safepath` below an fd of run_dir, and `ensure_dir()` makes the directory
the same way and hands back a `MountPoint` that holds it open: the mount lands on that very
directory (`MountPoint.target`, a `/proc/self/fd/N` path), whatever is swapped in meanwhile, and
`MountPoint.mounted()` finds the new mount again only if it is still where it was made.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InvalidArgument, PermissionDenied
from agent.storage import mountinfo
from oci import safepath

PATH_MAX = 4096


@dataclass(frozen=True, slots=True)
class StorageRoots:
    run_dir: Path

    @property
    def shared_dir(self) -> Path:
        return self.run_dir / "shared"

    @property
    def containers_dir(self) -> Path:
        """virtio-fs / 9p share of the host (`kataShared`), container rootfs bundles."""
        return self.run_dir / "shared" / "containers"

    @property
    def watchable_dir(self) -> Path:
        return self.run_dir / "shared" / "containers" / "watchable"

    @property
    def sandbox_dir(self) -> Path:
        return self.run_dir / "sandbox"

    def container_dir(self, container_id: str) -> Path:
        return self.run_dir / container_id

    def allowed(self) -> tuple[Path, ...]:
        return (self.run_dir, self.sandbox_dir, self.shared_dir)

    def open(self) -> int:
        """An ``O_PATH`` fd of run_dir (made if missing: the agent owns it)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return safepath.open_root(self.run_dir)

    def relative(self, requested: str, *, what: str) -> str:
        """``requested`` relative to run_dir, after the checks every request path gets."""
        if not requested:
            raise PermissionDenied(f"{what}: empty mount point")
        if "\0" in requested:
            raise InvalidArgument(f"{what}: path {requested!r} contains a NUL byte")
        if len(requested) > PATH_MAX:
            raise InvalidArgument(f"{what}: path is longer than {PATH_MAX} bytes")
        p = Path(requested)
        if not p.is_absolute():
            raise PermissionDenied(f"{what}: mount point {requested!r} is not an absolute path")
        if ".." in p.parts:
            raise PermissionDenied(f"{what}: mount point {requested!r} contains '..'")
        norm = os.path.normpath(requested)
        for base in (str(self.run_dir), os.path.realpath(self.run_dir)):
            if norm.startswith(base.rstrip("/") + "/"):
                return norm[len(base.rstrip("/")) + 1 :]
        allowed = ", ".join(str(d) for d in self.allowed())
        raise PermissionDenied(
            f"{what}: mount point {requested!r} is outside the allowed directories ({allowed})"
        )


def _outside(roots: StorageRoots, requested: str, what: str, err: OSError) -> PermissionDenied:
    allowed = ", ".join(str(d) for d in roots.allowed())
    return PermissionDenied(
        f"{what}: mount point {requested!r} leads outside the allowed directories ({allowed}): "
        f"{os.strerror(err.errno or 0)}"
    )


def _resolve_error(roots: StorageRoots, requested: str, what: str, err: OSError) -> Exception:
    if err.errno in (errno.EXDEV, errno.ELOOP):
        return _outside(roots, requested, what, err)
    if err.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
        return InvalidArgument(f"{what}: mount point {requested!r}: {os.strerror(err.errno)}")
    return PermissionDenied(f"{what}: mount point {requested!r}: {os.strerror(err.errno or 0)}")


def confine(roots: StorageRoots, requested: str, *, what: str) -> Path:
    """The real path of the mount point strictly below run_dir (as mountinfo spells it), or
    PermissionDenied. Symlinks are followed only while they stay below run_dir."""
    rel = roots.relative(requested, what=what)
    parts = rel.split("/")
    root = roots.open()
    try:
        for have in range(len(parts), 0, -1):
            try:
                fd = safepath.resolve(root, "/".join(parts[:have]))
            except FileNotFoundError:
                continue
            except OSError as err:
                raise _resolve_error(roots, requested, what, err) from err
            try:
                real = Path(safepath.real_path(fd), *parts[have:])
            finally:
                os.close(fd)
            break
        else:
            real = Path(safepath.real_path(root), *parts)
    finally:
        os.close(root)
    return real


class MountPoint:
    """A directory below run_dir, held open: the target of one mount."""

    def __init__(self, roots: StorageRoots, path: Path, fd: int, *, created: bool) -> None:
        self.roots = roots
        self.path = path  # the real path (mountinfo's spelling; the storage's key)
        self.fd = fd  # O_PATH fd of the directory (the file, for a file bind mount)
        self.created = created

    @property
    def target(self) -> str:
        """The mount(2) target that is exactly this directory."""
        return safepath.proc_path(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> MountPoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return str(self.path)

    def keep(self) -> MountPoint:
        """A second handle on the same directory (its own fd), for the storage's lifetime."""
        return MountPoint(self.roots, self.path, os.dup(self.fd), created=self.created)

    def mounted(self, flags: int = os.O_PATH) -> tuple[int, int | None]:
        """(fd, mount id) of the mount on this very directory, wherever renames have moved it:
        looked up by name from the directory's own parent (``<fd>/../<name>``: a lookup by name
        steps into the mount on top). The mount id is None when nothing is mounted there (a
        fake mount in tests): the fd is then the directory itself."""
        under = safepath.mount_id(self.fd)
        here = safepath.real_path(self.fd)
        is_dir = stat.S_ISDIR(os.fstat(self.fd).st_mode)
        for attempt in range(_TRIES):
            _backoff(attempt)
            name = os.path.basename(here)
            try:
                if is_dir:
                    fd = os.open(f"{self.target}/../{name}", flags | os.O_NOFOLLOW | os.O_CLOEXEC)
                else:  # a file has no "..": its directory, found below run_dir
                    fd = self._open_in_parent(here, flags)
            except OSError:
                here = safepath.real_path(self.fd)
                continue
            now = safepath.real_path(self.fd)
            if os.path.basename(now) == name:
                mid = safepath.mount_id(fd)
                if mid != under:
                    return fd, mid
                if safepath.real_path(fd) == now:
                    return fd, None
            os.close(fd)
            here = now
        raise PermissionDenied(f"mount point {str(self.path)!r} keeps moving")

    def _open_in_parent(self, here: str, flags: int) -> int:
        root = self.roots.open()
        try:
            parent_rel = os.path.relpath(os.path.dirname(here), safepath.real_path(root))
            parent = safepath.resolve(root, parent_rel, os.O_PATH | os.O_DIRECTORY)
        finally:
            os.close(root)
        try:
            return os.open(
                os.path.basename(here), flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
            )
        finally:
            os.close(parent)


_TRIES = 64  # a directory swapped under us again and again: give up, never guess


def _backoff(attempt: int) -> None:
    """Let a flapping rename settle a little after the first few misses."""
    if attempt >= 8:
        time.sleep(0.0005)


def open_mount(roots: StorageRoots, mount_id: int, path: str, flags: int = os.O_PATH) -> int | None:
    """An fd of ``path`` found below run_dir, if it is the root of mount ``mount_id``; None
    otherwise (moved, swapped, outside)."""
    root = roots.open()
    try:
        fd = safepath.resolve(root, os.path.relpath(path, safepath.real_path(root)), flags)
    except OSError:
        return None
    finally:
        os.close(root)
    if safepath.mount_id(fd) == mount_id and safepath.real_path(fd) == path:
        return fd
    os.close(fd)
    return None


def reach_mount(roots: StorageRoots, mount_id: int, flags: int = os.O_PATH) -> int | None:
    """An fd of mount ``mount_id`` wherever it is now below run_dir (mountinfo says where; the
    path is then checked by resolving it below run_dir). None: the mount is gone."""
    for attempt in range(_TRIES):
        _backoff(attempt)
        entry = next((e for e in mountinfo.read() if e.mount_id == mount_id), None)
        if entry is None:
            return None
        fd = open_mount(roots, mount_id, entry.mount_point, flags)
        if fd is not None:
            return fd
    raise PermissionDenied(f"mount {mount_id} cannot be reached below {roots.run_dir}")


def ensure_dir(roots: StorageRoots, requested: str, *, what: str, mode: int = 0o755) -> MountPoint:
    """`confine`, then create the directory (and parents) below run_dir, held open."""
    rel = roots.relative(requested, what=what)
    root = roots.open()
    created: list[str] = []
    try:
        fd = safepath.mkdirs(root, rel, mode, created=created)
    except OSError as err:
        raise _resolve_error(roots, requested, what, err) from err
    finally:
        os.close(root)
    return MountPoint(roots, Path(safepath.real_path(fd)), fd, created=bool(created))


def ensure_file(roots: StorageRoots, requested: str, *, what: str) -> MountPoint:
    """The mount point of a file bind mount: its directory made, the file created empty if
    missing (never opened for I/O if it exists), held open."""
    rel = roots.relative(requested, what=what)
    parent_rel, _, name = rel.rpartition("/")
    root = roots.open()
    try:
        parent = safepath.mkdirs(root, parent_rel)
        try:
            fd = safepath.open_at(parent, name, os.O_RDONLY, create=True)
            os.close(fd)
            fd = safepath.open_at(parent, name, os.O_PATH)
        finally:
            os.close(parent)
    except safepath.WrongType as err:
        raise InvalidArgument(f"{what}: mount point {requested!r} {err.strerror}") from err
    except OSError as err:
        raise _resolve_error(roots, requested, what, err) from err
    finally:
        os.close(root)
    return MountPoint(roots, Path(safepath.real_path(fd)), fd, created=False)
