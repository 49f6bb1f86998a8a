"""The driver interface: one object per `Storage.driver` name."""

from __future__ import annotations

from typing import Protocol

from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage


class Driver(Protocol):
    """Mount one storage at its (already confined) mount point; undo everything on failure."""

    name: str

    async def mount(
        self, env: StorageEnv, storage: Storage, container_id: str | None
    ) -> Mounted: ...
