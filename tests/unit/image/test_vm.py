"""image-build/vm.py without booting: accelerator choice, QEMU command line, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.guest import load_image_build


def test_kvm_only_with_vmx_or_svm() -> None:
    vm = load_image_build("vm")
    assert not vm.kvm_usable("flags\t: fpu vme sse2 hypervisor\n")


def test_qemu_command_line_is_the_kata_shape(tmp_path: Path) -> None:
    vm = load_image_build("vm")
    cfg = vm.VmConfig(kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd", rundir=tmp_path)
    v = vm.Vm(cfg)
    v.share_mode = "virtio-fs"
    argv = " ".join(v.qemu_argv())
    assert "q35,accel=tcg" in argv
    assert "-cpu max" in argv
    assert "name=agent.channel.0" in argv
    assert "name=agent.console.0" in argv
    assert "vhost-user-fs-pci,chardev=vfs,tag=kataShared" in argv
    assert "memory-backend-memfd" in argv
    assert "agent.server_addr=serial:///dev/virtio-ports/agent.channel.0" in argv
    v.share_mode = "9p"
    assert "virtio-9p-pci,fsdev=fs0,mount_tag=kataShared" in " ".join(v.qemu_argv())


def test_a_missing_kernel_stops_before_qemu_starts(tmp_path: Path) -> None:
    vm = load_image_build("vm")
    cfg = vm.VmConfig(kernel=tmp_path / "nope", initrd=None, rundir=tmp_path / "run")
    v = vm.Vm(cfg)
    with pytest.raises(vm.VmError, match=r"step vm-start: kernel .*nope does not exist"):
        v.start()
    assert v.qemu is None
