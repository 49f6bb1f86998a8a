"""A running guest: a ``Vm`` (QEMU, virtiofsd) and the multiplexer that serves its agent channel,
started and stopped as one (``make vm`` and kata-agent-hv both use it).

QEMU's end of the agent port is ``RUNDIR/channel.sock``; clients use the multiplexer's socket
(``agent_sock``, by default ``RUNDIR/agent.sock``), which exists once the agent has answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hv.mux import AgentMux
from hv.shared import shared_storage
from hv.vm import Vm, VmConfig, VmError

T = TypeVar("T")
CHANNEL_NAME = "channel.sock"


async def run_blocking(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread. If the caller is cancelled meanwhile, the thread is still
    waited for before the cancellation goes on, so nothing it started is left unseen."""
    task = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: its failure is not what the caller reports
        raise


@dataclass
class Guest:
    vm: Vm
    mux: AgentMux
    boot_seconds: float = 0.0  # QEMU start to the agent's first answer

    @property
    def agent_sock(self) -> Path:
        return self.mux.listen_path

    async def stop(self) -> None:
        """Close the multiplexer, stop QEMU and virtiofsd (always; also when cancelled)."""
        try:
            await self.mux.close()
        finally:
            await run_blocking(self.vm.stop)

    def describe(self) -> dict[str, object]:
        info = self.vm.describe()
        info["agent_sock"] = str(self.agent_sock)
        info["channel_sock"] = str(self.vm.channel_sock)
        return info


async def start_guest(
    config: VmConfig,
    *,
    agent_sock: Path | None = None,
    log_rpc: bool = False,
    add_shared_storage: bool = True,
    name: str = "",
) -> Guest:
    """Boot the guest and return once its agent answers Health.Check through the multiplexer.
    VmError names the step and the log to read; nothing is left running when it is raised (or
    when the caller is cancelled)."""
    config = dataclasses.replace(config, channel_name=CHANNEL_NAME)
    vm = Vm(config)
    mux: AgentMux | None = None
    try:
        await run_blocking(vm.start)
        storage = None
        if add_shared_storage and vm.share_mode in ("virtio-fs", "9p"):
            storage = shared_storage(vm.share_mode)
        mux = AgentMux(
            vm.channel_sock,
            agent_sock or config.rundir / "agent.sock",
            log_rpc=log_rpc,
            shared_storage=storage,
            name=name,
        )
        try:
            await mux.connect(alive=vm.check_alive)
        except ConnectionError as err:
            raise VmError(f"step vm-start: {err}; see {vm.qemu_log}") from None
        try:
            await mux.wait_for_agent(config.boot_timeout, vm.check_alive)
        except TimeoutError:
            raise vm.never_answered(config.boot_timeout) from None
        except ConnectionError as err:
            vm.check_alive("vm-boot")
            raise VmError(f"step vm-boot: {err}; see {vm.console_log}") from None
        boot_seconds = time.monotonic() - vm.started_at
        await mux.listen()
        return Guest(vm, mux, boot_seconds)
    except BaseException:
        if mux is not None:
            await mux.close()
        await run_blocking(vm.stop)
        raise
