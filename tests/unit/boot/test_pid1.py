"""agent.boot.pid1 and pid1_early on a host: the load list split, virtio-port links on a fake
sysfs, no action unless PID 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.boot import pid1, pid1_early
from agent.boot.args import BootArgs
from agent.devices.virtio_ports import find_virtio_port, link_ports


def fake_sysfs(tmp_path: Path, ports: dict[str, str]) -> tuple[Path, Path]:
    sys_dir, dev_dir = tmp_path / "sys", tmp_path / "dev"
    dev_dir.mkdir()
    for dev, name in ports.items():
        (sys_dir / dev).mkdir(parents=True)
        (sys_dir / dev / "name").write_text(name + "\n")
        (dev_dir / dev).touch()
    return sys_dir, dev_dir


def test_virtio_ports_get_named_links(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_sysfs(tmp_path, {"vport0p1": "agent.channel.0", "vport0p2": ""})
    found = link_ports(("agent.channel.0",), 1.0, sys_dir=sys_dir, dev_dir=dev_dir)
    assert found == {"agent.channel.0": "vport0p1"}
    assert os.readlink(dev_dir / "virtio-ports" / "agent.channel.0") == "../vport0p1"
    assert find_virtio_port("agent.channel.0", sys_dir=sys_dir, dev_dir=dev_dir) == str(
        dev_dir / "virtio-ports" / "agent.channel.0"
    )


def test_a_missing_port_is_waited_for_then_given_up(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_sysfs(tmp_path, {"vport0p1": "other"})
    found = link_ports(("agent.channel.0",), 0.05, sys_dir=sys_dir, dev_dir=dev_dir)
    assert found == {"other": "vport0p1"}
    assert find_virtio_port("agent.channel.0", sys_dir=sys_dir, dev_dir=dev_dir) is None


def test_a_port_without_its_device_node_is_not_there_yet(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_sysfs(tmp_path, {"vport0p1": "agent.channel.0"})
    (dev_dir / "vport0p1").unlink()
    assert link_ports(("agent.channel.0",), 0.05, sys_dir=sys_dir, dev_dir=dev_dir) == {}
    assert find_virtio_port("agent.channel.0", sys_dir=sys_dir, dev_dir=dev_dir) is None


def test_an_unlinked_port_is_found_by_its_device(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_sysfs(tmp_path, {"vport0p1": "agent.console.0"})
    found = find_virtio_port("agent.console.0", sys_dir=sys_dir, dev_dir=dev_dir)
    assert found == str(dev_dir / "vport0p1")


def test_nothing_happens_unless_pid_1() -> None:
    assert os.getpid() != 1
    early = pid1.Early(initramfs_root=True, exec_uptime=0.0)
    assert pid1.setup(BootArgs(), early) == {}
    pid1.power_off("test")  # returns: only PID 1 may power off


PATHS = [
    "/lib/modules/r/kernel/virtio_ring.ko",
    "/lib/modules/r/kernel/virtio_pci.ko",
    "/lib/modules/r/kernel/virtio_console.ko",
    "/lib/modules/r/kernel/vsock.ko",
    "/lib/modules/r/kernel/vmw_vsock_virtio_transport.ko",
    "/lib/modules/r/kernel/fuse.ko",
    "/lib/modules/r/kernel/virtiofs.ko",
]


def test_only_the_channel_modules_load_before_the_agent_starts() -> None:
    early, rest = pid1_early.split_load_list(PATHS)
    assert early == PATHS[:5]
    assert rest == PATHS[5:]
    assert pid1_early.split_load_list(PATHS[5:]) == ([], PATHS[5:])


def test_a_serial_channel_needs_only_its_driver_first() -> None:
    early, rest = pid1_early.split_load_list(PATHS, (pid1_early.SERIAL_DRIVER,))
    assert early == PATHS[:3]
    assert rest == PATHS[3:]


def test_a_failed_module_is_reported_not_raised(tmp_path: Path) -> None:
    failed = pid1_early.load_modules([str(tmp_path / "missing.ko")])
    assert [(path, err.errno) for path, err in failed] == [(str(tmp_path / "missing.ko"), 2)]


def test_the_interpreters_start_up_cost_from_proc_stat() -> None:
    with open("/proc/self/stat") as fh:
        cost = pid1_early.startup_cost(fh.read())
    assert set(cost) == {"minflt", "majflt", "utime_s", "stime_s"}
    assert cost["minflt"] > 0


def test_not_pid1_the_init_is_plain_kata_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import cli
    from agent.boot import init

    called: list[str] = []

    def fake_main() -> int:
        called.append("cli.main")
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    assert init.main() == 0
    assert called == ["cli.main"]
