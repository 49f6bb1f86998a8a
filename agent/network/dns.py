"""The guest's resolv.conf from CreateSandbox's `dns` list, and the sandbox hostname check.

Kata's semantics (`setup_guest_dns`): an empty list changes nothing; if the guest has no
/etc/resolv.conf nothing is done either; a directory there is an error. Otherwise the lines,
each stripped, are joined with "\\n" (the Go shim sends the file's lines, the last one empty, so
the file ends with a newline) and written to `<run_dir>/sandbox/resolv.conf`, which is then
bind-mounted over /etc/resolv.conf. The bind is a parameter: only the agent running as the guest
passes one, and tests point `target` at temp files.

Containers do not see this file: they get /etc/resolv.conf, /etc/hosts and /etc/hostname as OCI
bind mounts of the host's files through the shared filesystem.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from agent.errors import InvalidArgument

log = logging.getLogger(__name__)

GUEST_RESOLV_CONF = "/etc/resolv.conf"
HOST_NAME_MAX = 64

Bind = Callable[[str, str], None]


def sandbox_resolv_conf(run_dir: str) -> str:
    return os.path.join(run_dir, "sandbox", "resolv.conf")


def render_resolv_conf(lines: Sequence[str]) -> str:
    return "\n".join(line.strip() for line in lines)


def setup_guest_dns(
    lines: Sequence[str],
    run_dir: str,
    *,
    target: str = GUEST_RESOLV_CONF,
    bind: Bind | None = None,
) -> str | None:
    """Write the sandbox resolv.conf and bind it over `target` (when `bind` is given).

    Returns the path written, or None when nothing was to be done. Blocking (small file I/O and a
    mount); call through `asyncio.to_thread` from the loop.
    """
    if not lines:
        log.info("no DNS in the request, guest resolv.conf left as is")
        return None
    if not os.path.lexists(target):
        log.info("%s does not exist, guest DNS not set", target)
        return None
    if os.path.isdir(target):
        raise InvalidArgument(f"set up guest DNS: {target} is a directory")
    source = sandbox_resolv_conf(run_dir)
    os.makedirs(os.path.dirname(source), exist_ok=True)
    tmp = f"{source}.tmp"
    with open(tmp, "w") as f:
        f.write(render_resolv_conf(lines))
    os.replace(tmp, source)
    if bind is not None:
        bind(source, target)
    return source


def check_hostname(hostname: str) -> str:
    """The sandbox hostname as sethostname(2) will take it (the runtime truncates to 64)."""
    if len(hostname.encode()) > HOST_NAME_MAX:
        raise InvalidArgument(f"hostname {hostname[:20]!r}...: longer than {HOST_NAME_MAX} bytes")
    if "\0" in hostname or "/" in hostname:
        raise InvalidArgument(f"hostname {hostname!r}: contains NUL or '/'")
    return hostname
