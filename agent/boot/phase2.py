"""Phase 2: the service stack behind grpc.AgentService, built once phase 1 answers Check.

``agent.boot.phase1`` imports this module in a worker thread (with the AgentService shell, the
uevent listener and the device lookup it needs), then ``start`` runs on the loop:

1. the services (``agent.app.build_services``, the composition root) with the uevent listener
   started before any RPC can wait for a device; AgentService is bound and the calls that arrived
   meanwhile proceed, decided by the agent policy first if there is one (``agent.policy``:
   the default policy file is loaded before AgentService is bound). Each AgentService area
   (lifecycle with the OCI engine's spawner, storage/devices, network, guest/metrics) is
   imported and built on its first call (``agent.rpc.lazy_servicer``, ``Services.lazy``), so an
   idle agent holds only what it uses;
2. what start-up allocated is kept out of the cyclic GC's generations and the heap pages it freed
   are given back;
3. the areas to preload (``agent.preload_areas``; by default a guest's agent loads those of
   every pod start, ``agent.config.areas_to_preload``) start loading in the background, in order;
   a call of an area waits for its load instead of importing it again;
4. the gRPC listener (``--grpc-addr``) and the debug console (``agent.debug_console``), when
   configured.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from agent import app
from agent import policy as agent_policy
from agent.config import AgentConfig, areas_to_preload
from agent.rpc.dispatch import AGENT_SERVICE, Dispatcher
from agent.rpc.lazy_servicer import LazyAgentServicer
from agent.services import Services
from oci.syscalls import libc


async def start(
    config: AgentConfig,
    dispatcher: Dispatcher,
    stop: asyncio.Event,
    closers: list[Callable[[], Any]],
) -> None:
    """Build and bind the AgentService stack; `closers` gets what shutdown must close."""
    services = app.build_services(config)
    await services.uevents.start()  # before any RPC can wait for a device
    closers.append(services.uevents.stop)
    closers.append(partial(_close_lifecycle, services))  # stop the engine's spawner
    services.shutdown_requested = stop  # lifecycle: DestroySandbox ends the agent
    await agent_policy.start(services, dispatcher, config.paths.policy_file)
    servicer = app.build_servicers(services)[AGENT_SERVICE]
    dispatcher.add(AGENT_SERVICE, servicer)
    # Everything imported and built so far lives as long as the agent: keep it out of the
    # cyclic GC's generations, so collections stay short (tail latency of every call).
    gc.collect()
    gc.freeze()
    # Start-up imported in worker threads, whose malloc arenas would keep the pages it freed.
    libc.malloc_trim()

    areas = areas_to_preload(config, init_daemon=os.getpid() == 1)
    if areas and isinstance(servicer, LazyAgentServicer):
        preload = asyncio.get_running_loop().create_task(servicer.preload(areas))
        closers.append(preload.cancel)

    if config.server.grpc_addr:
        from agent.rpc.grpc_server import start_grpc  # grpcio: only when a gRPC listener is set

        closers.append(await start_grpc(config.server.grpc_addr, dispatcher))
    if config.debug_console.enabled:  # image engineer: agent.debug_console
        from agent.console import start_debug_console  # off by default: not in an idle agent

        closers.append(await start_debug_console(config.debug_console))


async def _close_lifecycle(services: Services) -> None:
    if services.built("lifecycle"):
        await services.lifecycle.close()
