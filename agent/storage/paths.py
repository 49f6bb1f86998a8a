"""Where storages may be mounted: only below the agent's run_dir (default /run/kata-containers).

`StorageRoots` names the directories of Kata's layout (reference doc §2.4). `confine()` turns a
requested mount point into a checked absolute path: no relative paths, no `..` components, and
once the existing prefix is resolved (symlinks included) it must still lie below the real run_dir.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import PermissionDenied


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


def _real_prefix(path: Path) -> Path:
    """Resolve the longest existing prefix of `path` (following symlinks) and re-append the rest."""
    missing: list[str] = []
    cur = path
    while not os.path.lexists(cur):
        missing.append(cur.name)
        if cur.parent == cur:
            break
        cur = cur.parent
    real = Path(os.path.realpath(cur))
    for part in reversed(missing):
        real = real / part
    return real


def confine(roots: StorageRoots, requested: str, *, what: str) -> Path:
    """The mount point as an absolute path strictly below run_dir, or PermissionDenied."""
    if not requested:
        raise PermissionDenied(f"{what}: empty mount point")
    p = Path(requested)
    if not p.is_absolute():
        raise PermissionDenied(f"{what}: mount point {requested!r} is not an absolute path")
    if ".." in p.parts:
        raise PermissionDenied(f"{what}: mount point {requested!r} contains '..'")
    base = Path(os.path.realpath(roots.run_dir))
    real = _real_prefix(Path(os.path.normpath(p)))
    if real == base or base not in real.parents:
        allowed = ", ".join(str(d) for d in roots.allowed())
        raise PermissionDenied(
            f"{what}: mount point {requested!r} (resolves to {str(real)!r}) is outside the "
            f"allowed directories ({allowed})"
        )
    return real


def ensure_dir(roots: StorageRoots, requested: str, *, what: str, mode: int = 0o755) -> Path:
    """`confine`, then create the directory (and parents), and check again after creation."""
    target = confine(roots, requested, what=what)
    try:
        target.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as err:
        raise PermissionDenied(
            f"{what}: create mount point {str(target)!r}: {err.strerror}"
        ) from err
    again = confine(roots, str(target), what=what)
    if not again.is_dir():
        raise PermissionDenied(f"{what}: mount point {str(again)!r} is not a directory")
    return again
