#!/usr/bin/env python3
"""Boot the guest image under QEMU the way Kata does; its agent is served by a multiplexer.

``make vm`` runs ``vm.py run`` (foreground; Ctrl-C stops it). ``vm.py start`` runs the same in the
background and returns once the agent answers (``vm.py stop`` ends it). The machinery is the host
package ``hv`` (``hv.vm``, ``hv.mux``, ``hv.guest``); tests and benchmarks use it directly. Layout
of the run directory (default ``build/vm``)::

    agent.sock          the agent: any number of ttrpc clients at once (the multiplexer, hv.mux)
    channel.sock        QEMU's end of the agent's virtio-serial port agent.channel.0 (the mux's)
    console.sock        the debug console (virtio-serial port agent.console.0)
    serial.sock         the VM's serial console (ttyS0), interactive
    console.log         everything the guest wrote on the serial console (kernel + agent logs)
    qemu.log            QEMU's own stderr; virtiofsd.log the virtio-fs daemon's; vm.log (start)
    shared/             the host directory shared with the guest as Kata shares it: virtio-fs
                        (virtiofsd, tag kataShared, memfd shared memory) or 9p when there is no
                        virtiofsd; the agent mounts it at /run/kata-containers/shared/containers/
    vm.json             pids, paths and the kernel command line of the running VM

Every path is made absolute before it reaches a tool, and image.json's relative paths are relative
to the build directory, so it works from any directory. Accelerator: KVM only when /proc/cpuinfo
has vmx or svm and /dev/kvm exists, else TCG. QEMU and virtiofsd are always stopped (by pid) when
the VM is stopped, when the guest never answers, and when anything fails on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The VM tier and the benchmarks load this file and use these names.
from hv.shared import GUEST_SHARED  # noqa: E402
from hv.vm import (  # noqa: E402, F401
    AgentTimeout,
    GuestImage,
    Vm,
    VmConfig,
    VmError,
    health_check,
    kvm_usable,
    running_pid,
)

SANDBOX_ID = "make-vm"


def config_from_args(args: argparse.Namespace) -> VmConfig:
    image = GuestImage.load(args.build)
    use_disk = args.boot == "disk"
    if use_disk and image.disk is None:
        raise VmError("step vm-start: no disk image was built (make image without --no-disk)")
    return VmConfig(
        kernel=image.kernel,
        initrd=None if use_disk else image.initrd,
        disk=image.disk if use_disk else None,
        rundir=args.rundir,
        share=args.share,
        memory_mb=args.memory,
        cpus=args.cpus,
        share_mode=args.share_mode,
        extra_append=tuple(args.append),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("action", choices=("run", "start", "stop"))
    p.add_argument("--build", type=Path, default=REPO / "build")
    p.add_argument("--rundir", type=Path, default=REPO / "build" / "vm")
    p.add_argument(
        "--share", type=Path, default=None, help="host dir to share (default RUNDIR/shared)"
    )
    p.add_argument("--share-mode", choices=("auto", "virtio-fs", "9p", "none"), default="auto")
    p.add_argument("--boot", choices=("initrd", "disk"), default="initrd")
    p.add_argument("--memory", type=int, default=512, help="MiB")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--append", action="append", default=[], help="extra kernel command line word")
    p.add_argument(
        "--no-sandbox", action="store_true", help="do not CreateSandbox with the share after boot"
    )
    p.add_argument("--log-rpc", action="store_true", help="one JSON line per agent call (stderr)")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("build", "rundir", "share"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).absolute())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = args.rundir / "vm.json"
    if args.action == "stop":
        return stop_from_state(state)
    running = _running(state)
    if running:
        print(
            f"error: a VM is already running in {args.rundir} ({running}); "
            f"stop it first (make vm-stop / vm.py stop --rundir {args.rundir})",
            file=sys.stderr,
        )
        return 1
    if args.action == "start":
        return start_detached(args, argv if argv is not None else sys.argv[1:])
    try:
        return asyncio.run(run(args, state))
    except VmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, state: Path) -> int:
    """Boot, create the sandbox with the share, then serve until a signal or QEMU exits."""
    from google.protobuf import empty_pb2

    from agent.log import JsonFormatter
    from agent.rpc.dispatch import AGENT_SERVICE
    from agent.rpc.pb import agent_pb2
    from hv.guest import run_blocking, start_guest
    from hv.shared import shared_storage

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(name="kata-vm", source="hv"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    if args.log_rpc:
        logging.getLogger("hv.rpc").setLevel(logging.INFO)
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    config = config_from_args(args)
    try:
        guest = await start_guest(config, log_rpc=args.log_rpc, name=SANDBOX_ID)
    except asyncio.CancelledError:
        return 0
    try:
        if not args.no_sandbox and guest.vm.share_mode != "none":
            await guest.mux.call(
                AGENT_SERVICE,
                "CreateSandbox",
                agent_pb2.CreateSandboxRequest(
                    hostname="kata",
                    sandbox_id=SANDBOX_ID,
                    storages=[shared_storage(guest.vm.share_mode)],
                ),
                empty_pb2.Empty,
                timeout=120,
            )
        _write_state(state, {**guest.describe(), "pid": os.getpid()})
        foreground = args.ready_fd is None
        _report(args, guest.vm, guest.boot_seconds, guest.agent_sock)
        if foreground:
            print("[vm] running; Ctrl-C stops the VM", flush=True)
        await guest.mux.channel_lost
        rc = await run_blocking(lambda: guest.vm.wait_exit(5))
        print(f"[vm] QEMU exited with {rc}", flush=True)
    except asyncio.CancelledError:
        pass
    except Exception as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        await guest.stop()
        _write_state(state, None)
    return 0


def _write_state(state: Path, info: dict[str, object] | None) -> None:
    if info is not None:
        state.write_text(json.dumps(info, indent=1) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            state.unlink()


def _report(args: argparse.Namespace, vm: Vm, secs: float, agent_sock: Path) -> None:
    """What to do with the VM, on stdout (or to `vm.py start` through the ready pipe)."""
    rel = os.path.relpath(agent_sock)
    lines = [
        f"[vm] agent answered {secs:.1f} s after QEMU started "
        f"({vm.share_mode} share {vm.config.shared_dir})",
        f"[vm] kata-agent-ctl --addr unix://{rel} check",
    ]
    if not args.no_sandbox and vm.share_mode != "none":
        host = os.path.relpath(vm.config.shared_dir)
        lines += [
            f"[vm] sandbox created; {host}/ is {GUEST_SHARED} in the guest. A container:",
            f"[vm]   mkdir -p {host}/demo && cp -a ROOTFS_DIR {host}/demo/rootfs",
            f"[vm]   kata-agent-ctl --addr unix://{rel} run "
            f"--rootfs {GUEST_SHARED}demo/rootfs -- echo hi",
        ]
    lines += [
        f"[vm] kata-agent-ctl console --addr unix://{os.path.relpath(vm.console_sock)}",
        f"[vm] console log: {os.path.relpath(vm.console_log)}",
    ]
    text = "\n".join(lines) + "\n"
    if args.ready_fd is None:
        print(text, end="", flush=True)
        return
    with os.fdopen(args.ready_fd, "w") as ready:
        ready.write(text)


def start_detached(args: argparse.Namespace, argv: list[str]) -> int:
    """`vm.py run` in its own session, logging to RUNDIR/vm.log; returns once the agent
    answers (its report is passed through a pipe) or the boot failed."""
    args.rundir.mkdir(parents=True, exist_ok=True)
    log_path = args.rundir / "vm.log"
    read_end, write_end = os.pipe()
    run_argv = list(argv)
    run_argv[run_argv.index("start")] = "run"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *run_argv, "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    with os.fdopen(read_end) as ready:
        report = ready.read()
    if report:
        print(report, end="")
        return 0
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    print(f"error: the VM did not start; {log_path}:", file=sys.stderr)
    print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
    return 1


def _running(state: Path) -> str:
    """What of a VM recorded in vm.json still runs ("" if nothing)."""
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict):
        return ""
    found = []
    if _our_runner(info.get("pid")):
        found.append(f"vm.py pid {info['pid']}")
    pid = running_pid(info.get("qemu_pid"))
    if pid:
        found.append(f"QEMU pid {pid}")
    return ", ".join(found)


def _our_runner(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vm.py\0run" in cmdline  # a reused pid belongs to something else: never signal it


def stop_from_state(state: Path) -> int:
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        print(f"no running VM recorded in {state}")
        return 0
    runner = info.get("pid") if isinstance(info, dict) else None
    if _our_runner(runner):
        assert isinstance(runner, int)
        with contextlib.suppress(ProcessLookupError):
            os.kill(runner, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _our_runner(runner) and time.monotonic() < deadline:
            time.sleep(0.1)
    for key in ("qemu_pid", "virtiofsd_pid"):  # the runner is gone: whatever it left
        pid = running_pid(info.get(key) if isinstance(info, dict) else None)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    print("[vm] stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
