"""`local`: a plain directory (disk-backed emptyDir); `mode=<octal>` and `fsgid=<gid>`; no mount."""

from __future__ import annotations

import os

from agent.errors import InvalidArgument
from agent.storage import mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv, oserror
from agent.storage.model import Storage
from agent.storage.paths import ensure_dir


class Local:
    name = "local"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        mode_text = mountopts.value(storage.options, "mode")
        mode = 0o777
        if mode_text is not None:
            try:
                mode = int(mode_text, 8)
            except ValueError:
                raise InvalidArgument(f"{what}: invalid mode {mode_text!r} (octal)") from None
        with ensure_dir(env.roots, storage.mount_point, what=what) as target:
            fd = os.open(target.target, os.O_RDONLY | os.O_DIRECTORY)  # that very directory
            try:
                os.fchmod(fd, mode)
            except OSError as err:
                raise oserror(what, f"chmod {oct(mode)} {str(target)!r}", err) from err
            else:
                gid = mountopts.value(storage.options, "fsgid")
                if gid is not None:
                    common.set_fsgid(fd, target.path, gid, what=what)
            finally:
                os.close(fd)
        return Mounted(target.path, unmount=False, remove_dir=False)
