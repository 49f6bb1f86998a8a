"""gRPC serving of the same servicers (grpc.aio); filled in by the next commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.rpc.dispatch import Dispatcher


async def start_grpc(address: str, dispatcher: Dispatcher) -> Callable[[], Any]:
    raise OSError(f"gRPC listener {address}: not available yet")
