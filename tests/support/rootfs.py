"""A minimal busybox root filesystem for container tests.

``make_busybox_rootfs(path)`` copies Debian's static busybox (package busybox-static) to
``<path>/bin/busybox``, links every applet it provides (``/bin/sh``, ``/bin/cat``, ``/bin/id``,
...), and writes a minimal ``/etc/passwd`` and ``/etc/group`` (root, daemon, nobody and a test
user ``user`` 1000:1000 with supplementary group ``users``). It also creates the empty mount
points a container spec usually needs (``/proc``, ``/sys``, ``/dev``, ``/tmp``, ``/run``, ...).

The result is about 2 MB and takes a few milliseconds to build; every test builds its own in a
temp dir so tests never share a rootfs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:test user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:user
user:x:1000:
nogroup:x:65534:
"""

_DIRS = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "root",
    "home/user",
    "var/tmp",
    "mnt",
)


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def make_busybox_rootfs(path: str | os.PathLike[str]) -> Path:
    """Build a busybox rootfs at ``path`` (created if missing) and return it as a Path."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} not found: install the Debian package busybox-static")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for d in _DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in _applets(BUSYBOX):
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "etc" / "hostname").write_text("busybox\n")
    os.chown(root / "home" / "user", 1000, 1000)
    return root
