"""``kata-agent-hv``: Kata's remote hypervisor service, booting this project's guest image.

Point the Kata runtime's ``[hypervisor.remote] remote_hypervisor_socket`` at ``--socket``. For each
sandbox the runtime calls CreateVM (answered with the agent socket it then dials), StartVM (the
guest boots under QEMU: KVM when usable, else TCG; the call returns once the agent answers) and
StopVM. The agent socket multiplexes any number of runtime connections onto the guest's one
virtio-serial channel (``hv.mux``). SIGTERM or SIGINT stops every VM, then the service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from agent.log import JsonFormatter, level_number
from agent.rpc.dispatch import HYPERVISOR_SERVICE, Dispatcher
from agent.rpc.server import TtrpcServer
from hv.config import MIN_MEMORY_MB, ServiceConfig, VmSize
from hv.mux import private_listener
from hv.service import HypervisorService
from hv.servicer import HypervisorServicer
from hv.vm import GuestImage, VmError

log = logging.getLogger("hv.cli")


def parse_args(argv: list[str] | None) -> tuple[ServiceConfig, str]:
    p = argparse.ArgumentParser(
        prog="kata-agent-hv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", type=Path, required=True, help="the service's ttrpc socket")
    p.add_argument(
        "--build", type=Path, default=Path("build"), help="the image's build dir (image.json)"
    )
    p.add_argument("--state-dir", type=Path, default=Path("/run/kata-agent-hv"))
    p.add_argument(
        "--shared-root",
        type=Path,
        default=Path("/run/kata-containers/shared/sandboxes"),
        help="the runtime's sandboxes dir: <root>/<id>/mounts is shared with the guest",
    )
    p.add_argument("--log-rpc", action="store_true", help="one JSON line per agent call")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    p.add_argument("--boot-timeout", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--default-vcpus", type=int, default=1)
    p.add_argument("--default-memory", type=int, default=512, help="MiB (default 512)")
    p.add_argument("--share-mode", choices=("auto", "virtio-fs", "9p"), default="auto")
    p.add_argument(
        "--append", action="append", default=[], help="extra guest kernel command line word"
    )
    p.add_argument(
        "--debug-console", action="store_true", help="a root shell on STATE/<id>/console.sock"
    )
    p.add_argument("--keep-logs", action="store_true", help="keep STATE/<id>/ (logs) after StopVM")
    a = p.parse_args(argv)
    if a.default_vcpus < 1 or a.default_memory < MIN_MEMORY_MB or a.boot_timeout <= 0:
        p.error(f"--default-vcpus >= 1, --default-memory >= {MIN_MEMORY_MB} and --boot-timeout > 0")
    config = ServiceConfig(
        socket=a.socket.absolute(),
        build=a.build.absolute(),
        state_dir=a.state_dir.absolute(),
        shared_root=a.shared_root.absolute(),
        default_size=VmSize(cpus=a.default_vcpus, memory_mb=a.default_memory),
        boot_timeout=a.boot_timeout,
        log_rpc=a.log_rpc,
        debug_console=a.debug_console,
        keep_logs=a.keep_logs,
        share_mode=a.share_mode,
        append=tuple(a.append),
    )
    return config, a.log_level


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(name="kata-agent-hv", source="hv"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number(level))


async def serve(config: ServiceConfig) -> int:
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    service = HypervisorService(config)
    service.clean_stale_state()
    dispatcher = Dispatcher(
        {HYPERVISOR_SERVICE: HypervisorServicer(service)}, services=(HYPERVISOR_SERVICE,)
    )
    server = TtrpcServer(dispatcher, peer_credentials=True)
    await server.listen(f"unix://{config.socket}", sock=private_listener(config.socket))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "kata-agent-hv serving",
        extra={"socket": str(config.socket), "state_dir": str(config.state_dir)},
    )
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await server.close()
        await service.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    config, level = parse_args(argv)
    setup_logging(level)
    try:
        GuestImage.load(config.build)  # fail now, not at the first StartVM
    except VmError as err:
        print(f"kata-agent-hv: {err}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config))
    except OSError as err:
        print(f"kata-agent-hv: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
