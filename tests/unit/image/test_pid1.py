"""agent/pid1.py on a host: parsing, virtio-port links on a fake sysfs, no action unless PID 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import pid1


@pytest.mark.parametrize(
    ("cmdline", "v2", "switch"),
    [
        ("console=ttyS0 quiet", True, True),
        ("systemd.unified_cgroup_hierarchy=0", False, True),
        ("systemd.unified_cgroup_hierarchy=false agent.switchroot=0", False, False),
        ("systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=all", True, True),
        ("systemd.unified_cgroup_hierarchy=1", True, True),
    ],
)
def test_config_from_the_kernel_command_line(cmdline: str, v2: bool, switch: bool) -> None:
    cfg = pid1.Pid1Config.from_cmdline(cmdline)
    assert (cfg.cgroup_v2, cfg.switch_root) == (v2, switch)


def test_the_agent_port_is_waited_for() -> None:
    cfg = pid1.Pid1Config.from_cmdline("", server_addr="serial:///dev/virtio-ports/agent.channel.0")
    assert cfg.wait_ports == ("agent.channel.0",)
    assert pid1.Pid1Config.from_cmdline("", server_addr="vsock://-1:1024").wait_ports == ()


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
    found = pid1.link_virtio_ports(("agent.channel.0",), 1.0, sys_dir=sys_dir, dev_dir=dev_dir)
    assert found == {"agent.channel.0": "vport0p1"}
    assert os.readlink(dev_dir / "virtio-ports" / "agent.channel.0") == "../vport0p1"
    assert pid1.find_virtio_port("agent.channel.0", sys_dir=sys_dir, dev_dir=dev_dir)


def test_a_missing_port_is_waited_for_then_given_up(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_sysfs(tmp_path, {"vport0p1": "other"})
    found = pid1.link_virtio_ports(("agent.channel.0",), 0.05, sys_dir=sys_dir, dev_dir=dev_dir)
    assert "agent.channel.0" not in found
    assert pid1.find_virtio_port("agent.channel.0", sys_dir=sys_dir, dev_dir=dev_dir) is None


def test_nothing_happens_unless_pid_1() -> None:
    assert os.getpid() != 1
    assert pid1.mount_proc() is None
    early = pid1.Early(initramfs_root=True, exec_uptime=0.0)
    assert pid1.setup(pid1.Pid1Config(), early) == {}
    pid1.power_off("test")  # returns: only PID 1 may power off


def test_only_the_channel_modules_load_before_the_agent_starts() -> None:
    paths = [
        "/lib/modules/r/kernel/virtio_ring.ko",
        "/lib/modules/r/kernel/virtio_pci.ko",
        "/lib/modules/r/kernel/virtio_console.ko",
        "/lib/modules/r/kernel/vsock.ko",
        "/lib/modules/r/kernel/vmw_vsock_virtio_transport.ko",
        "/lib/modules/r/kernel/fuse.ko",
        "/lib/modules/r/kernel/virtiofs.ko",
    ]
    early, rest = pid1.split_load_list(paths)
    assert early == paths[:5]
    assert rest == paths[5:]
    assert pid1.split_load_list(paths[5:]) == ([], paths[5:])


def test_the_agent_port_comes_from_the_command_line_last_word_wins() -> None:
    text = (
        "console=ttyS0 agent.server_addr=serial:///dev/virtio-ports/agent.channel.0"
        " agent.server_addr=serial:///dev/virtio-ports/other"
    )
    assert pid1.Pid1Config.from_cmdline(text).wait_ports == ("other",)
