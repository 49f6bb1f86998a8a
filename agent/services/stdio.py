"""Process I/O use cases: WriteStdin, ReadStdout, ReadStderr, CloseStdin, TtyWinResize.

The rules themselves (long-poll, EOF only after the drain, 500 ms after exit) live in
`agent.sandbox.stdio`; this layer finds the process and applies Kata's conventions. A read that
returns EOF may retire a process already waited for (`agent.sandbox.process`).
"""

from __future__ import annotations

from agent.errors import InvalidArgument
from agent.sandbox import ProcessEntry, Sandbox
from agent.sandbox.stdio import Part


class StdioService:
    def __init__(self, *, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def write_stdin(self, container_id: str, exec_id: str, data: bytes) -> int:
        """Write all of ``data``; empty data closes stdin (runtime-rs convention)."""
        process = self._sandbox.get_process(container_id, exec_id)
        if not data:
            process.io.close_stdin()
            return 0
        return await process.io.stdin.write(data)

    async def read_stdout(self, container_id: str, exec_id: str, length: int) -> bytes:
        return b"".join(await self.read_stdout_parts(container_id, exec_id, length))

    async def read_stderr(self, container_id: str, exec_id: str, length: int) -> bytes:
        return b"".join(await self.read_stderr_parts(container_id, exec_id, length))

    async def read_stdout_parts(self, container_id: str, exec_id: str, length: int) -> list[Part]:
        """`read_stdout` as the pieces read (``[]`` at EOF): the RPC layer sends them unjoined."""
        process = self._sandbox.get_process(container_id, exec_id)
        return _settled(process, await process.io.stdout.read_parts(length))

    async def read_stderr_parts(self, container_id: str, exec_id: str, length: int) -> list[Part]:
        process = self._sandbox.get_process(container_id, exec_id)
        return _settled(process, await process.io.stderr.read_parts(length))

    def try_read_stdout_parts(
        self, container_id: str, exec_id: str, length: int
    ) -> list[Part] | None:
        """`read_stdout_parts` if it can answer without waiting, else ``None`` (nothing read)."""
        process = self._sandbox.get_process(container_id, exec_id)
        parts = process.io.stdout.try_read_parts(length)
        return parts if parts is None else _settled(process, parts)

    def try_read_stderr_parts(
        self, container_id: str, exec_id: str, length: int
    ) -> list[Part] | None:
        process = self._sandbox.get_process(container_id, exec_id)
        parts = process.io.stderr.try_read_parts(length)
        return parts if parts is None else _settled(process, parts)

    def close_stdin(self, container_id: str, exec_id: str) -> None:
        self._sandbox.get_process(container_id, exec_id).io.close_stdin()

    def tty_resize(self, container_id: str, exec_id: str, rows: int, columns: int) -> None:
        process = self._sandbox.get_process(container_id, exec_id)
        if rows > 0xFFFF or columns > 0xFFFF:
            raise InvalidArgument(f"{process.label}: window size {rows}x{columns} is too large")
        process.io.resize(rows, columns)


def _settled(process: ProcessEntry, parts: list[Part]) -> list[Part]:
    """After EOF the process may be done with (waited for, every output delivered)."""
    if not parts:
        process.settle()
    return parts
