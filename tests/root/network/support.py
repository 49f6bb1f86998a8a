"""A real agent process running inside a network namespace, with a ttrpc client to it.

Built on `tests.support.agent.start_agent` with the prefix `ip netns exec <ns>`; the unix socket
lives in the agent's temp dir, reachable from the test process whatever its network namespace.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from typing import Any

from agent.rpc.client import TtrpcClient
from tests.support.agent import AgentProcess, start_agent


@dataclass
class AgentInNetns:
    ns: str
    process: AgentProcess
    client: TtrpcClient

    async def call(
        self,
        method: str,
        request: Any,
        timeout: float = 60.0,  # noqa: ASYNC109 - the deadline sent to the agent
    ) -> Any:
        return await self.client.call("grpc.AgentService", method, request, timeout=timeout)

    def rss_kib(self) -> int:
        """VmRSS of the agent (the python process under `ip netns exec`, which execs it)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.process.pid}")

    async def stop(self) -> None:
        await self.client.close()
        await asyncio.to_thread(self.process.stop)
        shutil.rmtree(self.process.workdir, ignore_errors=True)


async def start_agent_in(
    ns: str, args: tuple[str, ...] = (), log_level: str = "info"
) -> AgentInNetns:
    process = await asyncio.to_thread(
        start_agent,
        prefix=["ip", "netns", "exec", ns],
        args=args,
        log_level=log_level,
    )
    try:
        client = await process.client()
    except BaseException:
        await asyncio.to_thread(process.stop)
        shutil.rmtree(process.workdir, ignore_errors=True)
        raise
    return AgentInNetns(ns, process, client)


__all__ = ["AgentInNetns", "start_agent_in"]
