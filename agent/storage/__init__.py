"""Storages: mount, ref-count and release the volumes the host asks for (reference doc §3.1, §3.2).

Public entry points: `StorageManager` (ref-counting keyed by mount point, one handler per driver),
`Storage` (the request), `StorageEnv` (what the drivers need from the rest of the agent).
"""

from __future__ import annotations

from agent.storage.env import StorageEnv
from agent.storage.manager import StorageManager
from agent.storage.model import FsGroup, FsGroupPolicy, Storage
from agent.storage.paths import StorageRoots

__all__ = ["FsGroup", "FsGroupPolicy", "Storage", "StorageEnv", "StorageManager", "StorageRoots"]
