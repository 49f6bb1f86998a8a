#!/usr/bin/env python3
"""Boot the guest image under QEMU the way Kata does, with host ends as unix sockets in one dir.

``make vm`` runs ``vm.py run`` (foreground; Ctrl-C stops it). ``vm.py start`` returns once the
agent answers and leaves the VM running (``vm.py stop`` ends it); tests and bench/boot.py use the
``Vm`` class directly. Layout of the run directory (default ``build/vm``)::

    agent.sock          the agent's ttrpc channel (virtio-serial port agent.channel.0)
    console.sock        the debug console (virtio-serial port agent.console.0)
    serial.sock         the VM's serial console (ttyS0), interactive
    console.log         everything the guest wrote on the serial console (kernel + agent logs)
    qemu.log            QEMU's own stderr; virtiofsd.log the virtio-fs daemon's
    shared/             the host directory shared with the guest as Kata shares it: virtio-fs
                        (virtiofsd, tag kataShared, memfd shared memory) or 9p when there is no
                        virtiofsd; the agent mounts it at /run/kata-containers/shared/containers/
    vm.json             pids, paths and the kernel command line of the running VM

Accelerator: KVM only when /proc/cpuinfo has vmx or svm and /dev/kvm exists, else TCG. Machine
q35, ``-cpu max``, PVH vmlinux. QEMU and virtiofsd are always killed (by pid) when the VM is
stopped, when the guest never answers, and when anything fails on the way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
AGENT_PORT = "agent.channel.0"
CONSOLE_PORT = "agent.console.0"
SHARED_TAG = "kataShared"
GUEST_SHARED = "/run/kata-containers/shared/containers/"


class VmError(Exception):
    """Booting or talking to the VM failed; the message names the step and the log to read."""


def kvm_usable(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"vmx", "svm"}) and os.path.exists("/dev/kvm")


@dataclass(frozen=True, slots=True)
class VmConfig:
    kernel: Path
    initrd: Path | None
    rundir: Path
    disk: Path | None = None  # boot from this ext4 image instead of the initrd (root=/dev/vda)
    share: Path | None = None  # default rundir/shared
    memory_mb: int = 512
    cpus: int = 1
    share_mode: str = "auto"  # auto | virtio-fs | 9p | none
    debug_console: bool = True
    extra_append: tuple[str, ...] = ()
    boot_timeout: float = 120.0

    @property
    def shared_dir(self) -> Path:
        return self.share if self.share is not None else self.rundir / "shared"


@dataclass
class Vm:
    """One running guest. Use as a context manager: QEMU is killed on exit whatever happened."""

    config: VmConfig
    qemu: subprocess.Popen[bytes] | None = None
    virtiofsd: subprocess.Popen[bytes] | None = None
    share_mode: str = "none"
    append: str = ""
    started_at: float = 0.0
    answered_at: float | None = None
    _logs: list[object] = field(default_factory=list)

    # -- paths -------------------------------------------------------------------------------
    @property
    def agent_sock(self) -> Path:
        return self.config.rundir / "agent.sock"

    @property
    def console_sock(self) -> Path:
        return self.config.rundir / "console.sock"

    @property
    def serial_sock(self) -> Path:
        return self.config.rundir / "serial.sock"

    @property
    def console_log(self) -> Path:
        return self.config.rundir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.config.rundir / "qemu.log"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cfg = self.config
        if not cfg.kernel.is_file():
            raise VmError(f"step vm-start: kernel {cfg.kernel} does not exist (run `make image`)")
        if cfg.initrd is not None and not cfg.initrd.is_file():
            raise VmError(f"step vm-start: initrd {cfg.initrd} does not exist (run `make image`)")
        if shutil.which(QEMU) is None:
            raise VmError(f"step vm-start: {QEMU} not found (apt-get install qemu-system-x86)")
        cfg.rundir.mkdir(parents=True, exist_ok=True)
        for name in ("agent.sock", "console.sock", "serial.sock", "vfs.sock", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                (cfg.rundir / name).unlink()
        cfg.shared_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_virtiofsd()
            self._start_qemu()
        except BaseException:
            self.stop()
            raise

    def _start_virtiofsd(self) -> None:
        mode = self.config.share_mode
        if mode == "auto":
            mode = "virtio-fs" if os.access(VIRTIOFSD, os.X_OK) else "9p"
        self.share_mode = mode
        if mode != "virtio-fs":
            return
        if not os.access(VIRTIOFSD, os.X_OK):
            raise VmError(f"step virtiofsd: {VIRTIOFSD} not found (qemu-system-common ships it)")
        sock = self.config.rundir / "vfs.sock"
        log = open(self.config.rundir / "virtiofsd.log", "wb")  # noqa: SIM115 (closed in stop)
        self._logs.append(log)
        self.virtiofsd = subprocess.Popen(
            [
                VIRTIOFSD,
                f"--socket-path={sock}",
                "-o",
                f"source={self.config.shared_dir}",
                "-o",
                "cache=auto",
                "-o",
                "sandbox=chroot",
                "-o",
                "xattr",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.virtiofsd.poll() is not None:
                raise VmError(
                    f"step virtiofsd: exited with {self.virtiofsd.returncode}; "
                    f"see {self.config.rundir / 'virtiofsd.log'}"
                )
            if time.monotonic() > deadline:
                raise VmError(
                    f"step virtiofsd: no socket after 10 s; "
                    f"see {self.config.rundir / 'virtiofsd.log'}"
                )
            time.sleep(0.02)

    def kernel_cmdline(self) -> str:
        parts = [
            "console=ttyS0",
            "panic=-1",
            "quiet",
            "loglevel=4",
            f"agent.server_addr=serial:///dev/virtio-ports/{AGENT_PORT}",
            "systemd.unified_cgroup_hierarchy=1",
        ]
        if self.config.initrd is None and self.config.disk is not None:
            parts += ["root=/dev/vda1", "rootfstype=ext4", "rw", "init=/init"]
        if self.config.debug_console:
            parts.append("agent.debug_console")
        parts += list(self.config.extra_append)
        return " ".join(parts)

    def qemu_argv(self) -> list[str]:
        cfg = self.config
        d = cfg.rundir
        accel = "kvm" if kvm_usable() else "tcg"
        argv = [
            QEMU,
            "-machine",
            f"q35,accel={accel}",
            "-cpu",
            "host" if accel == "kvm" else "max",
            "-m",
            f"{cfg.memory_mb}M",
            "-smp",
            str(cfg.cpus),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(cfg.kernel),
        ]
        if cfg.initrd is not None:
            argv += ["-initrd", str(cfg.initrd)]
        self.append = self.kernel_cmdline()
        argv += ["-append", self.append]
        argv += [
            "-chardev",
            f"socket,id=serial0,path={d / 'serial.sock'},server=on,wait=off,"
            f"logfile={d / 'console.log'}",
            "-serial",
            "chardev:serial0",
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            f"socket,id=agent0,path={d / 'agent.sock'},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT}",
            "-chardev",
            f"socket,id=console0,path={d / 'console.sock'},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=console0,name={CONSOLE_PORT}",
            "-device",
            "virtio-rng-pci",
        ]
        if self.share_mode == "virtio-fs":
            argv += [
                "-object",
                f"memory-backend-memfd,id=mem,size={cfg.memory_mb}M,share=on",
                "-numa",
                "node,memdev=mem",
                "-chardev",
                f"socket,id=vfs,path={d / 'vfs.sock'}",
                "-device",
                f"vhost-user-fs-pci,chardev=vfs,tag={SHARED_TAG}",
            ]
        elif self.share_mode == "9p":
            argv += [
                "-fsdev",
                f"local,id=fs0,path={cfg.shared_dir},security_model=none",
                "-device",
                f"virtio-9p-pci,fsdev=fs0,mount_tag={SHARED_TAG}",
            ]
        if cfg.disk is not None:
            argv += [
                "-drive",
                f"file={cfg.disk},if=none,id=disk0,format=raw",
                "-device",
                "virtio-blk-pci,drive=disk0",
            ]
        return argv

    def _start_qemu(self) -> None:
        argv = self.qemu_argv()
        log = open(self.qemu_log, "wb")  # noqa: SIM115 (closed in stop)
        self._logs.append(log)
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        self.started_at = time.monotonic()
        self.qemu = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 15
        while not self.agent_sock.exists():
            self._check_alive("vm-start")
            if time.monotonic() > deadline:
                raise VmError(
                    f"step vm-start: QEMU made no agent socket in 15 s; see {self.qemu_log}"
                )
            time.sleep(0.02)

    def _check_alive(self, step: str) -> None:
        if self.qemu is not None and self.qemu.poll() is not None:
            raise VmError(
                f"step {step}: QEMU exited with {self.qemu.returncode}; "
                f"see {self.qemu_log} and {self.console_log}\n{self.tail_console()}"
            )

    def tail_console(self, lines: int = 15) -> str:
        try:
            text = self.console_log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text)

    def wait_for_agent(self, timeout: float | None = None) -> float:
        """Block until the agent answers a health Check; return seconds since QEMU started."""
        timeout = self.config.boot_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive("vm-boot")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VmError(
                    f"step vm-boot: the agent did not answer within {timeout:.0f} s; "
                    f"see {self.console_log}\n{self.tail_console()}"
                )
            try:
                if health_check(
                    self.agent_sock, timeout=min(3.0, remaining), alive=self._check_alive
                ):
                    self.answered_at = time.monotonic()
                    return self.answered_at - self.started_at
            except OSError:
                time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for QEMU to exit by itself (the guest powered off); its return code or None."""
        if self.qemu is None:
            return None
        try:
            return self.qemu.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        for proc in (self.qemu, self.virtiofsd):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        for log in self._logs:
            with contextlib.suppress(Exception):
                log.close()  # type: ignore[attr-defined]
        self._logs.clear()

    def describe(self) -> dict[str, object]:
        return {
            "qemu_pid": self.qemu.pid if self.qemu else None,
            "virtiofsd_pid": self.virtiofsd.pid if self.virtiofsd else None,
            "agent_sock": str(self.agent_sock),
            "console_sock": str(self.console_sock),
            "serial_sock": str(self.serial_sock),
            "console_log": str(self.console_log),
            "shared_dir": str(self.config.shared_dir),
            "share_mode": self.share_mode,
            "guest_shared_dir": "/run/kata-containers/shared/containers/",
            "cmdline": self.append,
        }


# -- a minimal ttrpc health probe (no agent code needed, only the generated messages) -----------


def health_check(sock_path: Path, *, timeout: float, alive: Any = None) -> bool:
    """Send grpc.Health/Check over `sock_path` until the agent answers SERVING (True) or
    `timeout` passes (False). One connection, a new odd stream id every 20 s: QEMU holds
    what the host sends until the guest opens its port, so nothing is lost or duplicated."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from agent.rpc.pb import health_pb2, request_pb2

    def frame(stream: int) -> bytes:
        req = request_pb2.Request(
            service="grpc.Health",
            method="Check",
            payload=health_pb2.CheckRequest(service="").SerializeToString(),
            timeout_nano=int(30e9),
        ).SerializeToString()
        return struct.pack(">IIBB", len(req), stream, 1, 0) + req

    deadline = time.monotonic() + timeout
    stream = 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        s.sendall(frame(stream))
        next_send = time.monotonic() + 20
        buf = b""
        while True:
            if alive is not None:
                alive("vm-boot")
            now = time.monotonic()
            if now > deadline:
                return False
            if now > next_send:
                stream += 2
                s.sendall(frame(stream))
                next_send = now + 20
            s.settimeout(0.25)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return False
            buf += chunk
            while len(buf) >= 10:
                length, _stream, kind, _flags = struct.unpack(">IIBB", buf[:10])
                if len(buf) < 10 + length:
                    break
                body, buf = buf[10 : 10 + length], buf[10 + length :]
                if kind != 2:
                    continue
                resp = request_pb2.Response.FromString(body)
                if resp.status.code != 0:
                    raise VmError(f"step vm-boot: health Check failed: {resp.status.message}")
                out = health_pb2.HealthCheckResponse.FromString(resp.payload)
                if out.status == health_pb2.HealthCheckResponse.SERVING:
                    return True


def create_sandbox(sock_path: Path, share_mode: str, *, timeout: float = 120.0) -> None:
    """CreateSandbox with the shared directory as the Kata runtime sends it (kata_agent.go): the
    share mounted at /run/kata-containers/shared/containers/ (what `make vm` does for the user,
    playing the runtime's part, so container rootfs placed in the share are visible)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from agent.rpc.pb import agent_pb2, request_pb2

    storages = []
    if share_mode == "virtio-fs":
        storages.append(
            agent_pb2.Storage(
                driver="virtio-fs", source=SHARED_TAG, fstype="virtiofs", mount_point=GUEST_SHARED
            )
        )
    elif share_mode == "9p":
        storages.append(
            agent_pb2.Storage(
                driver="9p",
                source=SHARED_TAG,
                fstype="9p",
                mount_point=GUEST_SHARED,
                options=["trans=virtio,version=9p2000.L,cache=mmap", "nodev", "msize=512000"],
            )
        )
    req = request_pb2.Request(
        service="grpc.AgentService",
        method="CreateSandbox",
        payload=agent_pb2.CreateSandboxRequest(
            hostname="kata", sandbox_id="make-vm", storages=storages
        ).SerializeToString(),
        timeout_nano=int(timeout * 1e9),
    ).SerializeToString()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(struct.pack(">IIBB", len(req), 1, 1, 0) + req)
        buf = b""
        while len(buf) < 10 or len(buf) < 10 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise VmError("step vm-sandbox: the agent closed the channel during CreateSandbox")
            buf += chunk
    length = struct.unpack(">I", buf[:4])[0]
    resp = request_pb2.Response.FromString(buf[10 : 10 + length])
    if resp.status.code != 0:
        raise VmError(f"step vm-sandbox: CreateSandbox failed: {resp.status.message}")


# -- CLI -------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> VmConfig:
    build = args.build
    manifest = build / "image.json"
    if not manifest.is_file():
        raise VmError(f"step vm-start: {manifest} missing (run `make image` first)")
    m = json.loads(manifest.read_text())
    use_disk = args.boot == "disk"
    if use_disk and not m.get("image"):
        raise VmError("step vm-start: no disk image was built (make image without --no-disk)")
    return VmConfig(
        kernel=Path(m["kernel"]),
        initrd=None if use_disk else Path(m["initrd"]),
        disk=Path(m["image"]) if use_disk else None,
        rundir=args.rundir,
        share=args.share,
        memory_mb=args.memory,
        share_mode=args.share_mode,
        extra_append=tuple(args.append),
    )


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--memory", type=int, default=512)
    p.add_argument("--append", action="append", default=[], help="extra kernel command line word")
    p.add_argument(
        "--no-sandbox", action="store_true", help="do not CreateSandbox with the share after boot"
    )
    args = p.parse_args(argv)
    state = args.rundir / "vm.json"
    if args.action == "stop":
        return _stop_from_state(state)
    running = _running_pid(state, "qemu_pid")
    if running is not None:
        print(
            f"error: a VM is already running in {args.rundir} (QEMU pid {running}); "
            f"stop it first (make vm-stop / vm.py stop --rundir {args.rundir})",
            file=sys.stderr,
        )
        return 1
    try:
        cfg = config_from_args(args)
    except VmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    vm = Vm(cfg)
    try:
        vm.start()
        secs = vm.wait_for_agent()
        if not args.no_sandbox:
            create_sandbox(vm.agent_sock, vm.share_mode)
    except VmError as err:
        vm.stop()
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BaseException:
        vm.stop()
        raise
    info = vm.describe()
    state.write_text(json.dumps(info, indent=1) + "\n")
    rel = os.path.relpath(vm.agent_sock)
    print(
        f"[vm] agent answered {secs:.1f} s after QEMU started "
        f"({vm.share_mode} share {cfg.shared_dir})"
    )
    print(f"[vm] kata-agent-ctl --addr unix://{rel} check")
    if not args.no_sandbox and vm.share_mode != "none":
        host = os.path.relpath(cfg.shared_dir)
        print(f"[vm] sandbox created; {host}/ is {GUEST_SHARED} in the guest. A container:")
        print(f"[vm]   mkdir -p {host}/demo && cp -a ROOTFS_DIR {host}/demo/rootfs")
        print(
            f"[vm]   kata-agent-ctl --addr unix://{rel} run "
            f"--rootfs {GUEST_SHARED}demo/rootfs -- echo hi"
        )
    print(f"[vm] kata-agent-ctl console --addr unix://{os.path.relpath(vm.console_sock)}")
    print(f"[vm] console log: {os.path.relpath(vm.console_log)}")
    if args.action == "start":
        # Detach: QEMU and virtiofsd run in their own sessions; `vm.py stop` ends them by pid.
        vm.qemu = None
        vm.virtiofsd = None
        return 0
    print("[vm] running; Ctrl-C stops the VM")
    try:
        rc = vm.qemu.wait() if vm.qemu else 0
        print(f"[vm] QEMU exited with {rc}")
    except KeyboardInterrupt:
        pass
    finally:
        vm.stop()
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
    return 0


def _running_pid(state: Path, key: str) -> int | None:
    """The pid recorded under `key` in vm.json if that process is still QEMU/virtiofsd."""
    try:
        pid = int(json.loads(state.read_text()).get(key) or 0)
    except (OSError, ValueError, TypeError):
        return None
    if not pid:
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    # A reused pid belongs to something else: never signal it.
    return pid if cmd.endswith((b"qemu-system-x86_64", b"virtiofsd")) else None


def _stop_from_state(state: Path) -> int:
    if not state.exists():
        print(f"no running VM recorded in {state}")
        return 0
    for key in ("qemu_pid", "virtiofsd_pid"):
        pid = _running_pid(state, key)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    state.unlink()
    print("[vm] stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
