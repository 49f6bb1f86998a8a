"""The VM tier: build the guest image (cached in build/), boot it once under QEMU, drive the agent.

``guest`` is session-scoped: one VM for the tier (a boot under TCG takes seconds). QEMU and
virtiofsd are killed in the fixture's ``finally`` whatever the tests did; the last test powers the
guest off through DestroySandbox, and a test that needs a fresh VM uses ``boot_guest``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest import GuestAgent, build_image, load_image_build

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"


@pytest.fixture(scope="session")
def guest_image() -> dict[str, Any]:
    """Build (or reuse from the cache) the kernel and initrd; fail with the build's own message."""
    return build_image(BUILD)


@pytest.fixture(scope="session")
def boot_guest(
    guest_image: dict[str, Any], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """Factory: boot a VM (extra kernel args optional, ``cpus`` vCPUs, another ``image``'s
    manifest than the tier's); every VM it made is killed at the end. Its run directory (console
    log, QEMU log) is removed when no test failed, else kept."""
    vm_mod = load_image_build("vm")
    started: list[Any] = []

    def boot(*append: str, cpus: int = 1, image: dict[str, Any] | None = None) -> Any:
        image = guest_image if image is None else image
        # Not under pytest's numbered temp dirs: concurrent pytest runs rotate those away.
        rundir = Path(tempfile.mkdtemp(prefix="kata-vm-"))
        cfg = vm_mod.VmConfig(
            kernel=Path(image["kernel"]),
            initrd=Path(image["initrd"]),
            rundir=rundir,
            extra_append=append,
            cpus=cpus,
            boot_timeout=240.0,
        )
        vm = vm_mod.Vm(cfg)
        started.append(vm)
        vm.start()
        vm.wait_for_agent()
        return vm

    try:
        yield boot
    finally:
        failed = request.session.testsfailed
        for vm in started:
            vm.stop()
            if failed:
                print(f"\nVM logs kept in {vm.config.rundir}")
            else:
                shutil.rmtree(vm.config.rundir, ignore_errors=True)


@pytest.fixture(scope="session")
def agent(guest: Any) -> Iterator[GuestAgent]:
    """The tier's one connection to the guest's agent."""
    conn = GuestAgent(guest.agent_sock)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="session")
def guest(boot_guest: Callable[..., Any]) -> Any:
    return boot_guest()
