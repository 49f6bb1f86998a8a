"""The part of the Kata shim that must happen in its own mount namespace, for the VM tier.

Run as ``unshare --mount --propagation private -- python -m tests.vm.runtime_shim HV_SOCKET``: the
Kata shim unshares its mount namespace and bind-mounts container root filesystems there, and it
is the process that calls CreateVM (kata-agent-hv finds the namespace from that connection's
SO_PEERCRED). Commands on stdin, one JSON reply line each on stdout:

    create ID VCPUS MEMORY_MB     CreateVM; replies {"agentSocketPath": ...}
    bind SRC DST                  mount --bind SRC DST in this namespace; replies {"ok": true}

EOF on stdin ends it. (Without unshare it is simply a CreateVM caller that can go away.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import HYPERVISOR_SERVICE
from agent.rpc.pb import hypervisor_pb2
from hv.config import MEMORY_ANNOTATION, VCPUS_ANNOTATION


async def create_vm(socket: str, sandbox_id: str, vcpus: str, memory: str) -> str:
    async with await TtrpcClient.connect(f"unix://{socket}", timeout=10) as client:
        resp = await client.call(
            HYPERVISOR_SERVICE,
            "CreateVM",
            hypervisor_pb2.CreateVMRequest(
                id=sandbox_id,
                annotations={VCPUS_ANNOTATION: vcpus, MEMORY_ANNOTATION: memory},
            ),
            timeout=60,
        )
    return str(resp.agentSocketPath)


def main(socket: str) -> int:
    for line in sys.stdin:
        words = line.split()
        if words[0] == "create":
            path = asyncio.run(create_vm(socket, *words[1:]))
            reply: dict[str, object] = {"agentSocketPath": path}
        elif words[0] == "bind":
            subprocess.run(["mount", "--bind", words[1], words[2]], check=True)
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
