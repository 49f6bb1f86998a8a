"""Process use cases: ExecProcess, SignalProcess, WaitProcess (reference doc §1.3, §9.3, §9.5)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence

from agent.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from agent.sandbox import (
    ESRCH_TEXT,
    ContainerStatus,
    ProcessEntry,
    ProcessIO,
    Sandbox,
    validate_exec_id,
)
from agent.sandbox.signals import effective_signal, is_kill_all, read_proc_status
from agent.services.containers import (
    Background,
    LifecycleSettings,
    attach_exit,
    console_size,
    runtime_of,
)
from oci.spec import Process, Spec, SpecError, check_process

log = logging.getLogger(__name__)

_MAX_SIGNAL = 64


EnvRewriter = Callable[[str, Sequence[str]], tuple[str, ...]]


class ProcessService:
    def __init__(
        self,
        *,
        sandbox: Sandbox,
        settings: LifecycleSettings,
        rewrite_env: EnvRewriter | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._settings = settings
        self._rewrite_env = rewrite_env
        self._background = Background()

    async def close(self) -> None:
        await self._background.close()

    async def exec(self, container_id: str, exec_id: str, process: Process | None) -> None:
        await asyncio.shield(self._background.run(self._exec(container_id, exec_id, process)))

    async def _exec(self, container_id: str, exec_id: str, process: Process | None) -> None:
        entry = self._sandbox.get_container(container_id)
        validate_exec_id(exec_id)
        if process is None:
            raise InvalidArgument(f"container {container_id}: exec {exec_id}: no process given")
        if not process.args:
            raise InvalidArgument(f"container {container_id}: exec {exec_id}: args is empty")
        if entry.status is not ContainerStatus.RUNNING:
            raise FailedPrecondition(
                f"container {container_id}: cannot exec {exec_id}: the container is "
                f"{entry.status.value}, not running"
            )
        if entry.has_process(exec_id):
            raise AlreadyExists(f"container {container_id}: exec id {exec_id} already exists")
        try:
            check_process(process)
        except SpecError as err:
            raise InvalidArgument(f"container {container_id}: exec {exec_id}: {err}") from err
        process = self._complete(entry.spec, container_id, process)
        name = f"container {container_id} exec {exec_id}"
        io = (
            ProcessIO.pty(name=name, size=console_size(process))
            if process.terminal
            else ProcessIO.pipes(name=name, pipe_size=self._settings.pipe_size)
        )
        started = time.monotonic()
        try:
            launched = await runtime_of(entry).exec(exec_id, process, io.child)
        except BaseException:
            io.close()
            raise
        io.close_child_ends()
        proc = ProcessEntry(
            container_id=container_id,
            exec_id=exec_id,
            pid=launched.pid,
            io=io,
            is_init=False,
            stdio_grace=self._settings.stdio_grace,
        )
        entry.add_process(proc)
        attach_exit(proc, launched)
        log.debug(
            "process started",
            extra={
                "container_id": container_id,
                "exec_id": exec_id,
                "process_pid": launched.pid,
                "engine_ms": round((time.monotonic() - started) * 1000, 2),
            },
        )

    def _complete(self, spec: Spec | None, container_id: str, process: Process) -> Process:
        """As Kata: no capabilities given → the init's; PCIDEVICE_* env rewritten for the guest."""
        init = spec.process if spec is not None else None
        if process.capabilities is None and init is not None and init.capabilities is not None:
            process = dataclasses.replace(process, capabilities=init.capabilities)
        if self._rewrite_env is not None and process.env:
            process = dataclasses.replace(process, env=self._rewrite_env(container_id, process.env))
        return process

    async def signal(self, container_id: str, exec_id: str, signum: int) -> None:
        entry = self._sandbox.get_container(container_id)
        if not 1 <= signum <= _MAX_SIGNAL:
            raise InvalidArgument(f"container {container_id}: invalid signal number {signum}")
        if is_kill_all(exec_id, signum):
            await runtime_of(entry).kill_all(signum)
            return
        process = entry.get_process(exec_id)
        pid = process.live_pid()
        sent = effective_signal(signum, is_init=process.is_init, status_text=read_proc_status(pid))
        if sent != signum:
            log.info(
                "init does not handle SIGTERM, sending SIGKILL",
                extra={"container_id": container_id, "pid": pid},
            )
        try:
            os.kill(pid, sent)
        except ProcessLookupError:
            raise NotFound(f"{process.label} (pid {pid}): {ESRCH_TEXT}") from None

    async def wait(self, container_id: str, exec_id: str) -> int:
        """Wait for the exit and return the status, once: a later wait gets NOT_FOUND. The
        process's output stays readable to EOF (`agent.sandbox.process`)."""
        entry = self._sandbox.get_container(container_id)
        process = entry.get_process(exec_id)
        if process.waited:
            raise NotFound(f"{process.label} not found (already waited for)")
        status = await process.wait()
        process.mark_waited()
        return status
