"""The sandbox's shared directory as the Kata Go runtime has the agent mount it (kata_agent.go).

The host directory is shared with the guest under the tag ``kataShared`` (virtio-fs, or 9p on a
host without virtiofsd) and mounted at ``GUEST_SHARED``, so a container rootfs the runtime prepares
at ``<shared dir>/<cid>/rootfs`` is ``/run/kata-containers/shared/containers/<cid>/rootfs`` in the
guest.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.rpc.pb import agent_pb2

SHARED_TAG = "kataShared"
GUEST_SHARED = "/run/kata-containers/shared/containers/"


def shared_storage(share_mode: str) -> agent_pb2.Storage:
    """The storage the Go runtime sends in CreateSandbox for the shared directory."""
    if share_mode == "virtio-fs":
        return agent_pb2.Storage(
            driver="virtio-fs", source=SHARED_TAG, fstype="virtiofs", mount_point=GUEST_SHARED
        )
    if share_mode == "9p":
        return agent_pb2.Storage(
            driver="9p",
            source=SHARED_TAG,
            fstype="9p",
            mount_point=GUEST_SHARED,
            options=["trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=512000"],
        )
    raise ValueError(f"no shared storage for share mode {share_mode!r}")


def mounts_shared_dir(storages: Iterable[agent_pb2.Storage]) -> bool:
    """Whether one of ``storages`` mounts something at the guest's shared directory."""
    want = GUEST_SHARED.rstrip("/")
    return any(s.mount_point.rstrip("/") == want for s in storages)
