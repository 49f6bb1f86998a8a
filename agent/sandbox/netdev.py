"""Interface counters for StatsContainer's ``network_stats`` (the Rust agent leaves it empty).

In a Kata guest every container shares the VM's network namespace (the runtime strips the
network namespace from the spec), so the container's interfaces are the guest's: the counters
come from the agent's own ``/proc/net/dev``. Loopback is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceStats]:
    """Parse /proc/net/dev (two header lines, then ``name: 16 counters``)."""
    out: list[InterfaceStats] = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        fields = rest.split()
        if name == "lo" or len(fields) < 16:
            continue
        try:
            n = [int(f) for f in fields[:16]]
        except ValueError:
            continue
        out.append(InterfaceStats(name, n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return out


def read_net_dev(proc: Path = Path("/proc")) -> list[InterfaceStats]:
    try:
        return parse_net_dev((proc / "net" / "dev").read_text())
    except OSError:
        return []
