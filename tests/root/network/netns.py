"""Throw-away network namespaces and veth pairs for the network root tests and the bench.

Every pod gets two namespaces: the "guest" one the agent runs in, and a "peer" one holding the
other end of each veth pair (created there directly, so nothing ever appears in the machine's own
namespace). Deleting both namespaces destroys the veths. Names are unique per process and call.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field

_counter = itertools.count()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}"


@dataclass
class Pod:
    """A guest netns (`ns`) and its peer netns (`peer`), with `nics` veths added so far."""

    ns: str
    peer: str
    nics: list[tuple[str, str]] = field(default_factory=list)  # (guest-side name, MAC)

    @classmethod
    def create(cls, prefix: str = "kn") -> Pod:
        pod = cls(unique(prefix + "g"), unique(prefix + "p"))
        ip("netns", "add", pod.ns)
        try:
            ip("netns", "add", pod.peer)
        except BaseException:
            ip("netns", "del", pod.ns)
            raise
        return pod

    def add_nic(self, mac: str, *, up_peer: bool = True) -> str:
        """A veth whose guest end (named `tapN`, MAC `mac`) is in `ns`; returns its name."""
        i = len(self.nics)
        name = f"tap{i}"
        ip(
            "-n", self.peer, "link", "add", f"peer{i}", "type", "veth",
            "peer", "name", name, "netns", self.ns, "address", mac,
        )  # fmt: skip
        if up_peer:
            ip("-n", self.peer, "link", "set", f"peer{i}", "up")
        self.nics.append((name, mac))
        return name

    def delete(self) -> None:
        for ns in (self.ns, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def __enter__(self) -> Pod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()
