"""PID 1 without a serial channel to open first (the address a real Kata guest has, vsock): the
guest's /init runs PID 1's set-up in full, then the agent's ordinary start-up, which binds vsock
in the guest. The host has no vhost-vsock here, so the test reads the guest's JSON log on the
serial console and talks to it through the debug console (a virtio-serial port)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest import console_run, load_image_build

pytestmark = pytest.mark.vm


def _records(console_log: Path) -> list[dict[str, Any]]:
    records = []
    for line in console_log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def test_vsock_address_sets_up_pid1_then_serves(guest_image: dict[str, Any]) -> None:
    vm_mod = load_image_build("vm")
    cfg = vm_mod.VmConfig(
        kernel=Path(guest_image["kernel"]),
        initrd=Path(guest_image["initrd"]),
        rundir=Path(tempfile.mkdtemp(prefix="kata-vm-")),
        extra_append=("agent.server_addr=vsock://-1:1024",),
        boot_timeout=240.0,
    )
    vm = vm_mod.Vm(cfg)
    try:
        vm.start()
        deadline = time.monotonic() + cfg.boot_timeout
        while not any(r.get("msg") == "announce" for r in _records(vm.console_log)):
            assert vm.qemu.poll() is None, f"the guest went away:\n{vm.tail_console(30)}"
            assert time.monotonic() < deadline, f"no announce:\n{vm.tail_console(30)}"
            time.sleep(0.2)
        records = _records(vm.console_log)
        ready = next(r for r in records if r.get("msg") == "pid1 ready")
        # the whole set-up ran here, before the agent: no channel was opened first
        assert {"switch-root", "mounts", "modules", "cgroups"} <= set(ready["steps"]), ready
        assert "channel_open_uptime" not in ready, ready
        announce = next(r for r in records if r.get("msg") == "announce")
        assert announce["server_addr"] == "vsock://-1:1024", announce
        assert announce["init_daemon"] is True, announce
        out = console_run(vm, "tr '\\0' ' ' < /proc/1/cmdline; echo; grep -c ' proc ' /proc/mounts")
        assert "/init" in out, out
        assert "\n1\n" in out.replace("\r", ""), out
    finally:
        vm.stop()
    shutil.rmtree(cfg.rundir, ignore_errors=True)
