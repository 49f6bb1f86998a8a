"""iptables argv and error mapping (fake runner), guest DNS files, PCI path to netdev."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import DeadlineExceeded, InvalidArgument, Unavailable
from agent.network import dns, pcinet
from agent.network.iptables import IPTables


@dataclass
class Done:
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""


class FakeRun:
    def __init__(self, result: Done) -> None:
        self.result = result
        self.calls: list[tuple[list[str], bytes | None]] = []

    async def __call__(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109
    ) -> Done:
        self.calls.append((list(argv), input))
        return self.result


def sbin(tmp_path: Path) -> str:
    d = tmp_path / "sbin"
    d.mkdir()
    for name in ("iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"):
        p = d / name
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    return str(d)


async def test_iptables_paths_and_args(tmp_path: Path) -> None:
    d = sbin(tmp_path)
    run = FakeRun(Done(0, b"*filter\nCOMMIT\n"))
    ipt = IPTables(run, dirs=("/nonexistent", d))
    assert await ipt.get(False) == b"*filter\nCOMMIT\n"
    await ipt.set(True, b"*filter\nCOMMIT\n")
    assert run.calls == [
        ([f"{d}/iptables-save"], None),
        ([f"{d}/ip6tables-restore", "--wait", "5"], b"*filter\nCOMMIT\n"),
    ]


@pytest.mark.parametrize(
    ("code", "cls"), [(1, InvalidArgument), (2, InvalidArgument), (4, Unavailable)]
)
async def test_iptables_restore_failure(tmp_path: Path, code: int, cls: type) -> None:
    run = FakeRun(Done(code, stderr=b"iptables-restore: line 2 failed\n"))
    with pytest.raises(cls, match=f"iptables-restore exited with status {code}: .*line 2 failed"):
        await IPTables(run, dirs=(sbin(tmp_path),)).set(False, b"junk")


async def test_iptables_binary_missing(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="iptables-save not found"):
        await IPTables(FakeRun(Done(0)), dirs=(str(tmp_path),)).get(False)


def test_guest_dns(tmp_path: Path) -> None:
    target = tmp_path / "etc-resolv.conf"
    target.write_text("nameserver 127.0.0.1\n")
    binds: list[tuple[str, str]] = []
    lines = ["nameserver 10.96.0.10", " search default.svc.cluster.local ", "options ndots:5", ""]
    out = dns.setup_guest_dns(
        lines, str(tmp_path / "run"), target=str(target), bind=lambda s, t: binds.append((s, t))
    )
    assert out == str(tmp_path / "run" / "sandbox" / "resolv.conf")
    assert Path(out).read_text() == (
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n"
    )
    assert binds == [(out, str(target))]


def test_guest_dns_noops_and_directory(tmp_path: Path) -> None:
    assert dns.setup_guest_dns([], str(tmp_path), target=str(tmp_path / "x")) is None
    assert (
        dns.setup_guest_dns(["nameserver 1.1.1.1"], str(tmp_path), target="/nonexistent/r") is None
    )
    with pytest.raises(InvalidArgument, match="is a directory"):
        dns.setup_guest_dns(["nameserver 1.1.1.1"], str(tmp_path), target=str(tmp_path))


def test_hostname() -> None:
    assert dns.check_hostname("pod-1") == "pod-1"
    with pytest.raises(InvalidArgument):
        dns.check_hostname("x" * 65)


def fake_sysfs(root: Path, with_netdev: bool) -> None:
    dev = root / "devices/pci0000:00/0000:00:02.0/0000:01:03.0"
    (root / "devices/pci0000:00/0000:00:02.0/pci_bus/0000:01").mkdir(parents=True)
    (dev / "virtio4/net/eth3").mkdir(parents=True)
    (root / "class/net").mkdir(parents=True)
    if with_netdev:
        os.symlink(dev / "virtio4/net/eth3", root / "class/net/eth3")


async def test_pci_path_to_netdev(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, with_netdev=True)
    assert await pcinet.wait_for_netdev_until(str(tmp_path), "02/03", 5) == "eth3"


async def test_pci_netdev_appears_later(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, with_netdev=False)
    waiter = asyncio.create_task(pcinet.wait_for_netdev_until(str(tmp_path), "02/03", 30))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    dev = tmp_path / "devices/pci0000:00/0000:00:02.0/0000:01:03.0/virtio4/net/eth3"
    os.symlink(dev, tmp_path / "class/net/eth3")
    assert await waiter == "eth3"


async def test_pci_timeout_and_bad_path(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, with_netdev=False)
    with pytest.raises(DeadlineExceeded, match=r"Timeout after 0\.1 s .* PCI path 02/04"):
        await pcinet.wait_for_netdev_until(str(tmp_path), "02/04", 0.1)
    with pytest.raises(InvalidArgument, match="invalid PCI path"):
        await pcinet.wait_for_netdev_until(str(tmp_path), "0x2/zz", 1)
