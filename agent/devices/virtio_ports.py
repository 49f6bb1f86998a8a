"""virtio-serial ports by name: ``/dev/virtio-ports/NAME -> ../vportXpY`` links (what udev would
make; the guest has no udev) and the lookup of one port.

The guest's ``/init`` waits here for the agent's own port before its channel is open
(``agent.boot.init``), so this module imports only ``os`` and ``time``.
"""

from __future__ import annotations

import os
import time

SYS_VIRTIO_PORTS = "/sys/class/virtio-ports"
DEV = "/dev"


def named_ports(sys_dir: str | os.PathLike[str] = SYS_VIRTIO_PORTS) -> list[tuple[str, str]]:
    """(name, device) of every named virtio-serial port, e.g. ("agent.channel.0", "vport1p1")."""
    try:
        entries = sorted(os.listdir(sys_dir))
    except FileNotFoundError:
        return []
    ports = []
    for dev in entries:
        try:
            with open(os.path.join(sys_dir, dev, "name")) as fh:
                name = fh.read().strip()
        except OSError:
            continue
        if name:
            ports.append((name, dev))
    return ports


def link_ports(
    wait_for: tuple[str, ...] = (),
    timeout: float = 10.0,
    *,
    sys_dir: str | os.PathLike[str] = SYS_VIRTIO_PORTS,
    dev_dir: str | os.PathLike[str] = DEV,
    poll: float = 0.005,
) -> dict[str, str]:
    """Link ``<dev_dir>/virtio-ports/NAME -> ../DEVICE`` for every named port; wait up to
    `timeout` for the ports in `wait_for` to be there with their device node (they appear
    asynchronously after virtio_console loads). Returns name -> device of the ports linked;
    a port of `wait_for` missing from it did not show up in time."""
    links_dir = os.path.join(dev_dir, "virtio-ports")
    os.makedirs(links_dir, exist_ok=True)
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while True:
        for name, dev in named_ports(sys_dir):
            if name in found:
                continue
            link = os.path.join(links_dir, name)
            if not os.path.lexists(link):
                os.symlink(f"../{dev}", link)
            found[name] = dev
        waiting = [
            n
            for n in wait_for
            if n not in found or not os.path.exists(os.path.join(dev_dir, found[n]))
        ]
        if not waiting:
            return found
        if time.monotonic() > deadline:
            return {n: d for n, d in found.items() if n not in waiting}
        time.sleep(poll)


def find_virtio_port(
    name: str,
    *,
    sys_dir: str | os.PathLike[str] = SYS_VIRTIO_PORTS,
    dev_dir: str | os.PathLike[str] = DEV,
) -> str | None:
    """The device of the virtio-serial port called `name` (its link if there is one), or None."""
    link = os.path.join(dev_dir, "virtio-ports", name)
    if os.path.exists(link):
        return link
    for port, dev in named_ports(sys_dir):
        if port == name and os.path.exists(os.path.join(dev_dir, dev)):
            return os.path.join(dev_dir, dev)
    return None
