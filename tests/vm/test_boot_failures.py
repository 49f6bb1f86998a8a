"""A guest whose agent never answers: the boot stops with an error naming the console log, and no
QEMU or virtiofsd process is left behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest import load_image_build

pytestmark = pytest.mark.vm


def test_a_guest_that_never_answers_is_reported_and_killed(guest_image: dict[str, Any]) -> None:
    vm_mod = load_image_build("vm")
    cfg = vm_mod.VmConfig(
        kernel=Path(guest_image["kernel"]),
        initrd=Path(guest_image["initrd"]),
        rundir=Path(tempfile.mkdtemp(prefix="kata-vm-")),
        # The agent listens on a port the VM does not have: it boots but never answers.
        extra_append=("agent.server_addr=serial:///dev/virtio-ports/no.such.port",),
        boot_timeout=25.0,
    )
    vm = vm_mod.Vm(cfg)
    try:
        vm.start()
        with pytest.raises(vm_mod.VmError, match=r"did not answer within 25 s; see .*console\.log"):
            vm.wait_for_agent()
    finally:
        vm.stop()
    assert vm.qemu is not None
    assert vm.qemu.poll() is not None
    assert vm.virtiofsd is None or vm.virtiofsd.poll() is not None
    assert "virtio-serial port missing" in vm.console_log.read_text(errors="replace")
    shutil.rmtree(cfg.rundir, ignore_errors=True)


def test_a_kernel_qemu_cannot_load_stops_the_boot(tmp_path: Path) -> None:
    vm_mod = load_image_build("vm")
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"not a kernel")
    cfg = vm_mod.VmConfig(
        kernel=kernel, initrd=None, rundir=tmp_path / "run", share_mode="none", boot_timeout=30
    )
    vm = vm_mod.Vm(cfg)
    try:
        with pytest.raises(vm_mod.VmError, match=r"step vm-(start|boot): QEMU exited"):
            _boot(vm)
    finally:
        vm.stop()
    assert vm.qemu is not None
    assert vm.qemu.poll() is not None


def _boot(vm: Any) -> None:
    vm.start()
    vm.wait_for_agent()
