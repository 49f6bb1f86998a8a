"""One guest under QEMU the way Kata boots it, with its host ends as unix sockets in one directory.

Layout of the run directory::

    agent.sock          QEMU's end of the agent's virtio-serial port agent.channel.0 (the name is
                        ``VmConfig.channel_name``; a multiplexer, ``hv.mux``, may serve agent.sock
                        instead and take the channel under another name)
    console.sock        the debug console (virtio-serial port agent.console.0)
    serial.sock         the VM's serial console (ttyS0), interactive
    console.log         everything the guest wrote on the serial console (kernel + agent logs)
    qemu.log            QEMU's own stderr; virtiofsd.log the virtio-fs daemon's
    vfs.sock            virtiofsd's vhost-user socket

The shared directory (default ``RUNDIR/shared``) is shared as Kata shares it: virtio-fs (virtiofsd,
tag kataShared, memfd shared memory) or 9p when there is no virtiofsd. ``VmConfig.mount_ns`` names a
mount namespace (a path such as ``/proc/PID/ns/mnt``, or an open fd passed as ``/proc/self/fd/N``)
in which the process serving the share runs (virtiofsd, or QEMU for 9p), through ``nsenter``:
the Kata shim bind-mounts container root filesystems in a mount namespace of its own.

Accelerator: KVM only when /proc/cpuinfo has vmx or svm and /dev/kvm exists, else TCG. Machine
q35, ``-cpu max``, PVH vmlinux. Every path handed to QEMU and virtiofsd is absolute. QEMU and
virtiofsd are always killed (by pid) when the VM is stopped, when the guest never answers, and
when anything fails on the way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hv.shared import SHARED_TAG

QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
NSENTER = "nsenter"
AGENT_PORT = "agent.channel.0"
CONSOLE_PORT = "agent.console.0"


class VmError(Exception):
    """Booting or talking to the VM failed; the message names the step and the log to read."""


class AgentTimeout(VmError):
    """The guest booted (QEMU runs) but its agent did not answer in time."""


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
class GuestImage:
    """The outputs of ``make image`` as ``BUILD/image.json`` lists them. A relative path in the
    manifest is relative to the build directory, never to the current directory."""

    kernel: Path
    initrd: Path | None
    disk: Path | None

    @classmethod
    def load(cls, build: Path) -> GuestImage:
        build = build.absolute()
        manifest = build / "image.json"
        if not manifest.is_file():
            raise VmError(f"step vm-start: {manifest} missing (run `make image` first)")
        try:
            m = json.loads(manifest.read_text())
            kernel = build / m["kernel"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise VmError(
                f"step vm-start: {manifest} is unreadable ({err}); run `make image`"
            ) from None
        return cls(
            kernel=kernel,
            initrd=build / m["initrd"] if m.get("initrd") else None,
            disk=build / m["image"] if m.get("image") else None,
        )


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
    channel_name: str = "agent.sock"  # QEMU's end of the agent port, in rundir
    mount_ns: str | None = None  # the share is served from this mount namespace (nsenter)
    pass_fds: tuple[int, ...] = ()  # fds the share's server inherits (a mount_ns /proc/self/fd/N)

    def __post_init__(self) -> None:
        # Tools get absolute paths: virtiofsd chroots into its source, and a relative path means
        # something else (or nothing) once a tool changed directory.
        for name in ("kernel", "initrd", "rundir", "disk", "share"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(os.path.abspath(value)))

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
    def channel_sock(self) -> Path:
        """QEMU's end of the agent's virtio-serial port."""
        return self.config.rundir / self.config.channel_name

    @property
    def agent_sock(self) -> Path:
        """Where a ttrpc client reaches the agent when no multiplexer serves the VM."""
        return self.channel_sock

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

    @property
    def virtiofsd_log(self) -> Path:
        return self.config.rundir / "virtiofsd.log"

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start virtiofsd (if sharing over virtio-fs) and QEMU; returns once QEMU has made the
        agent channel's socket. ``wait_for_agent`` (or a multiplexer) then waits for the agent."""
        cfg = self.config
        if not cfg.kernel.is_file():
            raise VmError(f"step vm-start: kernel {cfg.kernel} does not exist (run `make image`)")
        if cfg.initrd is not None and not cfg.initrd.is_file():
            raise VmError(f"step vm-start: initrd {cfg.initrd} does not exist (run `make image`)")
        if shutil.which(QEMU) is None:
            raise VmError(f"step vm-start: {QEMU} not found (apt-get install qemu-system-x86)")
        if cfg.mount_ns is not None and shutil.which(NSENTER) is None:
            raise VmError(f"step vm-start: {NSENTER} not found (apt-get install util-linux)")
        longest = cfg.rundir / "console.sock"
        if len(os.fsencode(longest)) > 107 or len(os.fsencode(self.channel_sock)) > 107:
            raise VmError(
                f"step vm-start: run directory {cfg.rundir} is too long for unix socket paths "
                f"(at most 107 bytes with the socket name)"
            )
        cfg.rundir.mkdir(parents=True, exist_ok=True)
        for name in (cfg.channel_name, "console.sock", "serial.sock", "vfs.sock", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                (cfg.rundir / name).unlink()
        try:
            self._make_shared_dir()
            self._start_virtiofsd()
            self._start_qemu()
        except BaseException:
            self.stop()
            raise

    def _make_shared_dir(self) -> None:
        """The share's directory, as the process serving it will see it (the Kata runtime makes
        it when it prepares the sandbox, maybe after the VM started)."""
        path = self.config.shared_dir
        if self.config.mount_ns is None:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        done = subprocess.run(
            self._in_share_ns(["mkdir", "-p", "-m", "0700", str(path)]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            pass_fds=self.config.pass_fds,
            check=False,
        )
        if done.returncode != 0:
            raise VmError(
                f"step vm-start: cannot create the shared directory {path} in mount namespace "
                f"{self.config.mount_ns}: {done.stderr.strip()}"
            )

    def _in_share_ns(self, argv: list[str]) -> list[str]:
        """``argv`` run in the mount namespace the share is to be seen from."""
        if self.config.mount_ns is None:
            return argv
        return [NSENTER, f"--mount={self.config.mount_ns}", "--", *argv]

    def _spawn(self, argv: list[str], log: Path, *, share_ns: bool) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self._logs.append(out)
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        return subprocess.Popen(
            self._in_share_ns(argv) if share_ns else argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            pass_fds=self.config.pass_fds if share_ns else (),
        )

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
        self.virtiofsd = self._spawn(
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
            self.virtiofsd_log,
            share_ns=True,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.virtiofsd.poll() is not None:
                raise VmError(
                    f"step virtiofsd: exited with {self.virtiofsd.returncode}; "
                    f"see {self.virtiofsd_log}\n{tail(self.virtiofsd_log)}"
                )
            if time.monotonic() > deadline:
                raise VmError(f"step virtiofsd: no socket after 10 s; see {self.virtiofsd_log}")
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
            f"socket,id=agent0,path={self.channel_sock},server=on,wait=off",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT}",
        ]
        if cfg.debug_console:
            argv += [
                "-chardev",
                f"socket,id=console0,path={d / 'console.sock'},server=on,wait=off",
                "-device",
                f"virtserialport,bus=vser0.0,chardev=console0,name={CONSOLE_PORT}",
            ]
        argv += ["-device", "virtio-rng-pci"]
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
        with contextlib.suppress(FileNotFoundError):
            self.qemu_log.unlink()
        self.started_at = time.monotonic()
        # QEMU serves a 9p share itself, so it then runs where the share is to be seen from.
        self.qemu = self._spawn(argv, self.qemu_log, share_ns=self.share_mode == "9p")
        deadline = time.monotonic() + 15
        while not self.channel_sock.exists():
            self.check_alive("vm-start")
            if time.monotonic() > deadline:
                raise VmError(
                    f"step vm-start: QEMU made no agent socket in 15 s; see {self.qemu_log}"
                )
            time.sleep(0.02)

    def check_alive(self, step: str) -> None:
        """VmError naming the logs if QEMU has exited."""
        if self.qemu is not None and self.qemu.poll() is not None:
            raise VmError(
                f"step {step}: QEMU exited with {self.qemu.returncode}; "
                f"see {self.qemu_log} and {self.console_log}\n{self.tail_console()}"
                + (f"\n{tail(self.qemu_log, 5)}" if self.qemu.returncode else "")
            )

    def tail_console(self, lines: int = 15) -> str:
        return tail(self.console_log, lines)

    def wait_for_agent(self, timeout: float | None = None) -> float:
        """Block until the agent answers a health Check on the raw channel (no multiplexer);
        return seconds since QEMU started."""
        timeout = self.config.boot_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("vm-boot")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.never_answered(timeout)
            try:
                if health_check(
                    self.channel_sock, timeout=min(3.0, remaining), alive=self.check_alive
                ):
                    self.answered_at = time.monotonic()
                    return self.answered_at - self.started_at
            except OSError:
                time.sleep(0.1)

    def never_answered(self, timeout: float) -> AgentTimeout:
        return AgentTimeout(
            f"step vm-boot: the agent did not answer within {timeout:.0f} s; "
            f"see {self.console_log}\n{self.tail_console()}"
        )

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
            "console_sock": str(self.console_sock) if self.config.debug_console else None,
            "serial_sock": str(self.serial_sock),
            "console_log": str(self.console_log),
            "shared_dir": str(self.config.shared_dir),
            "share_mode": self.share_mode,
            "guest_shared_dir": "/run/kata-containers/shared/containers/",
            "cmdline": self.append,
        }


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text)


def running_pid(pid: int | None) -> int | None:
    """``pid`` if that process is still a QEMU or virtiofsd (a reused pid is never signalled)."""
    if not pid:
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    return pid if cmd.endswith((QEMU.encode(), b"virtiofsd")) else None


# -- a minimal ttrpc health probe on the raw channel (only the generated messages) -------------


def health_check(
    sock_path: Path, *, timeout: float, alive: Callable[[str], None] | None = None
) -> bool:
    """Send grpc.Health/Check over `sock_path` until the agent answers SERVING (True) or
    `timeout` passes (False). One connection, a new odd stream id every 20 s: QEMU holds
    what the host sends until the guest opens its port, so nothing is lost or duplicated."""
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
