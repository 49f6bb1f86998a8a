"""The agent's side of the engine's spawner: an asyncio client (``SpawnerClient``) that sends each
request with its own reply socket, so many tasks may call it at once. It never forks and never
blocks the event loop.

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = spawner_argv(3)      # start ONCE at agent start-up via agent.spawn, child fd 3
    client = SpawnerClient(parent, root=state_root)
    pid = await client.create(cid, bundle, stdio=(in, out, err) | None, no_pivot=False)

Raises the same ``oci.engine.errors`` classes as ``Engine``.
"""

from __future__ import annotations

import array
import asyncio
import json
import socket
from typing import Any

from oci import spec as ocispec

from .errors import EngineError
from .process import plan_process
from .wire import error_from_wire, plan_to_wire, spawner_argv

__all__ = ["SpawnerClient", "spawner_argv"]


class SpawnerClient:
    """asyncio client of the spawner (see the module docstring)."""

    def __init__(self, sock: socket.socket, root: str) -> None:
        self._sock = sock
        self._sock.setblocking(True)
        self.root = root

    async def create(
        self,
        container_id: str,
        bundle: str,
        *,
        stdio: tuple[int, int, int] | None = None,
        no_pivot: bool = False,
    ) -> int:
        """Create from ``bundle``/config.json; returns the init's pid (blocked until start)."""
        r = await self._call(
            {"op": "create", "id": container_id, "bundle": bundle, "no_pivot": no_pivot}, stdio
        )
        return int(r["pid"])

    async def start(self, container_id: str) -> None:
        await self._call({"op": "start", "id": container_id})

    async def exec(
        self,
        container_id: str,
        process: ocispec.Process,
        *,
        stdio: tuple[int, int, int] | None = None,
    ) -> int:
        """Returns the pid (already running). The process is planned here (names resolved:
        InvalidArgument before any request), so the worker decodes no spec: a forked worker
        pays a copy-on-write fault for every page the generic decoder touches."""
        req = {
            "op": "exec",
            "id": container_id,
            "plan": plan_to_wire(plan_process(process, None)),
            "init_caps": process.capabilities is None,
        }
        r = await self._call(req, stdio)
        return int(r["pid"])

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        await self._call({"op": "kill", "id": container_id, "signal": signum, "all": all_processes})

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self._call({"op": "delete", "id": container_id, "force": force})

    async def state(self, container_id: str) -> dict[str, Any]:
        r = await self._call({"op": "state", "id": container_id})
        return dict(r["state"])

    async def pids(self, container_id: str) -> list[int]:
        r = await self._call({"op": "pids", "id": container_id})
        return [int(p) for p in r["pids"]]

    async def pause(self, container_id: str) -> None:
        await self._call({"op": "pause", "id": container_id})

    async def resume(self, container_id: str) -> None:
        await self._call({"op": "resume", "id": container_id})

    async def update(self, container_id: str, resources: ocispec.LinuxResources) -> None:
        req = {"op": "update", "id": container_id, "resources": ocispec.encode(resources)}
        await self._call(req)

    async def stats(self, container_id: str) -> dict[str, Any]:
        r = await self._call({"op": "stats", "id": container_id})
        return dict(r["stats"])

    async def _call(
        self, req: dict[str, Any], stdio: tuple[int, int, int] | None = None
    ) -> dict[str, Any]:
        req["root"] = self.root
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fds = [theirs.fileno(), *(stdio or ())]
            # A small message on a local socketpair: never blocks in practice.
            self._sock.sendmsg(
                [json.dumps(req).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )
            theirs.close()
            mine.setblocking(False)
            data = await asyncio.get_running_loop().sock_recv(mine, 65536)
        finally:
            mine.close()
            theirs.close()
        if not data:
            raise EngineError(f"{req['op']} {req['id']}: the engine's worker died without a reply")
        out: dict[str, Any] = json.loads(data)
        if out.get("ok"):
            return out
        raise error_from_wire(out, req["id"])
