"""The container side of a launch: stage-1 (namespaces) and the container init (stage-2).

Both run in processes forked by ``oci.engine.launch`` from a single-threaded process (the
kata-oci CLI, or the engine's spawner for the agent), so the plan they follow (``InitConfig``) is
inherited in memory: nothing is serialised and nothing is imported per container. Everything
the steps use is imported here, at module level: after pivot_root the Python library is out of
reach.

stage-1 waits for ``go`` (it has been put into the container's cgroup), enters the user
namespace (new: the parent writes the id maps; or joined by path), joins the namespaces given
by path (mount last), unshares the new ones, forks the container process (so it is PID 1 of a
new PID namespace or a member of the joined one), reports its pid and exits. The container
process is then reparented to the nearest subreaper: the agent (PID 1 / subreaper) or
``kata-oci run``.

The container process runs ``CREATE_STEPS`` (or ``EXEC_STEPS`` for ``exec``): an ordered list
of named steps. A failing step sends ``error {step, errno, msg, path}`` to the parent and exits;
the parent raises it as ``InitError`` ("mount /proc: ... : Permission denied").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import select
import signal
import socket
import struct
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass, field

from oci.spec import Hook
from oci.syscalls import consts as c
from oci.syscalls.api import Syscalls

from . import hooks as hooks_mod
from . import rootfs as rfs
from . import sync
from .process import ProcessPlan, exec_env, find_executable


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """A device node to create in the container's /dev."""

    path: str
    kind: str
    major: int
    minor: int
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class InitConfig:
    """Everything the container side needs, decided by the parent before the fork
    (``oci.engine.plan``; the launch fills in the fds it opens)."""

    mode: str  # "create" | "exec"
    container_id: str
    process: ProcessPlan
    rootfs: str = "/"
    bundle: str = ""
    user_ns: str | None = None  # None | "new" | "join"
    ns_join: tuple[tuple[int, int, str], ...] = ()  # (fd, CLONE_NEW*, path); user ns first
    ns_new: int = 0  # CLONE_NEW* flags to unshare (user excluded)
    mounts: tuple[rfs.MountOp, ...] = ()
    devices: tuple[DevicePlan, ...] = ()
    default_devices: bool = False
    rootfs_propagation: str | None = None
    rootfs_readonly: bool = False
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sysctl: tuple[tuple[str, str], ...] = ()
    hostname: str | None = None
    domainname: str | None = None
    no_pivot: bool = False
    hooks_create_container: tuple[Hook, ...] = ()
    hooks_start_container: tuple[Hook, ...] = ()
    has_prestart_hooks: bool = False
    stdio: tuple[int, int, int] | None = None
    console_fd: int | None = None  # connected console socket (SCM_RIGHTS receiver)
    fifo_fd: int | None = None  # exec.fifo opened O_RDWR (create) — read blocks until start
    # exec: the cgroup files stage-1 joins through (recorded at create); then the parent has
    # nothing to do before stage-1 goes on, and sends no "go"
    cgroup_join: tuple[str, ...] = ()
    preserve_fds: int = 0
    keep_fds: frozenset[int] = field(default_factory=frozenset)
    personality: int | None = None
    new_keyring: bool = True
    time_offsets: tuple[tuple[str, int, int], ...] = ()  # (clock, secs, nanosecs)

    @property
    def has_mntns(self) -> bool:
        return bool(self.ns_new & c.CLONE_NEWNS) or any(
            f == c.CLONE_NEWNS for _, f, _ in self.ns_join
        )

    @property
    def has_cgroupns(self) -> bool:
        return bool(self.ns_new & c.CLONE_NEWCGROUP)


class _Ctx:
    def __init__(self, cfg: InitConfig, sys_: Syscalls, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sys = sys_
        self.sock = sock
        self.exe = ""
        self.state_json = ""
        self.keep_fds = cfg.keep_fds


Step = tuple[str, Callable[[_Ctx], None]]


# ---------------------------------------------------------------------------------------------
# stage-1


def stage1(cfg: InitConfig, sys_: Syscalls, sock: socket.socket) -> None:
    """Entry point of the forked stage-1 process; never returns."""
    step = "wait for the parent"
    gc.disable()  # a short-lived fork: never let a collection dirty the inherited pages
    try:
        # Until execve (which makes the container program dumpable again) no process of the
        # container may open this one's /proc fds, cwd or exe (CVE-2024-21626, CVE-2019-5736):
        # ptrace access to a non-dumpable process needs CAP_SYS_PTRACE.
        sys_.set_dumpable(False)
        for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        join = cfg.cgroup_join or tuple(sync.expect(sock, "go", step).get("cgroup") or ())
        for path in join:  # join the container's cgroup (v1 "tasks" files)
            step = f"join cgroup {path}"
            sys_.write_file(path, "0")
        for fd, flag, path in cfg.ns_join:
            if flag == c.CLONE_NEWUSER:
                step = f"join user namespace {path}"
                sys_.setns(fd, flag, path)
                _become_root(sys_)
        if cfg.user_ns == "new":
            step = "create user namespace"
            sys_.unshare(c.CLONE_NEWUSER)
            sync.send(sock, "idmap")
            sync.expect(sock, "idmap_ok", step)
            _become_root(sys_)
        for fd, flag, path in cfg.ns_join:
            if flag not in (c.CLONE_NEWUSER, c.CLONE_NEWNS):
                step = f"join namespace {path}"
                sys_.setns(fd, flag, path)
        for fd, flag, path in cfg.ns_join:
            if flag == c.CLONE_NEWNS:
                step = f"join namespace {path}"
                sys_.setns(fd, flag, path)
        if cfg.ns_new:
            step = "create namespaces"
            sys_.unshare(cfg.ns_new)
        if cfg.time_offsets and cfg.ns_new & c.CLONE_NEWTIME:
            # Must be written before any process enters the new time namespace.
            step = "time namespace offsets"
            sys_.write_file(
                "/proc/self/timens_offsets",
                "".join(f"{clock} {secs} {nsecs}\n" for clock, secs, nsecs in cfg.time_offsets),
            )
        step = "fork the container process"
        # The container process waits for EOF on this pipe, i.e. until stage-1 has reported its
        # pid: so "pid" always reaches the parent before any message of stage-2. The pipe is
        # closed explicitly, not by the exit, which frees the address space first.
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(gate_w)
            while os.read(gate_r, 1):
                pass
            os.close(gate_r)
            stage2(cfg, sys_, sock)
        os.close(gate_r)
        sync.send(sock, "pid", pid=pid)
        os.close(gate_w)
        os._exit(0)
    except BaseException as err:
        sync.send_error(sock, step, err)
        os._exit(1)


def _become_root(sys_: Syscalls) -> None:
    # 0 not mapped: keep the overflow ids, the process sets its own user later
    with contextlib.suppress(OSError):
        sys_.setresgid(0)
        sys_.setresuid(0)


# ---------------------------------------------------------------------------------------------
# stage-2 steps


def _setsid(x: _Ctx) -> None:
    os.setsid()


def _session_keyring(x: _Ctx) -> None:
    """A fresh session keyring per container (runc's default; --no-new-keyring skips it)."""
    if not x.cfg.new_keyring:
        return
    try:
        x.sys.join_session_keyring(f"_ses.{x.cfg.container_id}")
    except OSError as err:
        if err.errno not in (errno.ENOSYS, errno.EPERM):  # no keyrings; restricted keyctl
            raise


def _oom_score_adj(x: _Ctx) -> None:
    if x.cfg.process.oom_score_adj is not None:
        x.sys.write_file("/proc/self/oom_score_adj", str(x.cfg.process.oom_score_adj))


def _umask_zero(x: _Ctx) -> None:
    os.umask(0)


def _propagation(x: _Ctx) -> None:
    rfs.set_root_propagation(x.sys, x.cfg.rootfs_propagation)
    rfs.make_parent_private(x.sys, x.cfg.rootfs)


def _bind_rootfs(x: _Ctx) -> None:
    x.sys.mount(x.cfg.rootfs, x.cfg.rootfs, "bind", c.MS_BIND | c.MS_REC, None)


def _mounts(x: _Ctx) -> None:
    for op in x.cfg.mounts:
        try:
            rfs.mount_one(x.sys, x.cfg.rootfs, op, has_cgroupns=x.cfg.has_cgroupns)
        except OSError as err:
            raise _Named(f"mount {op.destination}", err) from None


def _devices(x: _Ctx) -> None:
    bind = x.cfg.user_ns is not None
    if x.cfg.default_devices:
        for path, major, minor in rfs.DEFAULT_DEVICES:
            rfs.create_device(x.sys, x.cfg.rootfs, path, "c", major, minor, 0o666, 0, 0, bind)
        rfs.setup_dev_links(x.cfg.rootfs)
    for d in x.cfg.devices:
        rfs.create_device(
            x.sys, x.cfg.rootfs, d.path, d.kind, d.major, d.minor, d.mode, d.uid, d.gid, bind
        )


def _prestart_hooks(x: _Ctx) -> None:
    cfg = x.cfg
    if not (cfg.has_prestart_hooks or cfg.hooks_create_container or cfg.hooks_start_container):
        return  # no hook needs the state: no round trip to the parent
    sync.send(x.sock, "hooks")
    msg = sync.expect(x.sock, "hooks_ok", "prestart hooks")
    x.state_json = str(msg.get("state", ""))


def _create_container_hooks(x: _Ctx) -> None:
    if x.cfg.hooks_create_container:
        hooks_mod.run_hooks("createContainer", x.cfg.hooks_create_container, x.state_json)


def _pivot_root(x: _Ctx) -> None:
    if x.cfg.no_pivot:
        rfs.move_root(x.sys, x.cfg.rootfs)
        return
    try:
        rfs.pivot(x.sys, x.cfg.rootfs)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        # the current root is the initramfs "rootfs", which cannot be pivoted away
        rfs.move_root(x.sys, x.cfg.rootfs)


def _chroot_only(x: _Ctx) -> None:
    x.sys.chroot(x.cfg.rootfs)
    x.sys.chdir("/")


def _hostname(x: _Ctx) -> None:
    # Only in a UTS namespace of our own: a joined one (the sandbox's) keeps its names.
    if not x.cfg.ns_new & c.CLONE_NEWUTS:
        return
    if x.cfg.hostname is not None:
        x.sys.sethostname(x.cfg.hostname)
    if x.cfg.domainname is not None:
        x.sys.setdomainname(x.cfg.domainname)


def _sysctl(x: _Ctx) -> None:
    for key, value in x.cfg.sysctl:
        x.sys.write_file("/proc/sys/" + key.replace(".", "/"), value)


def _readonly_paths(x: _Ctx) -> None:
    for p in x.cfg.readonly_paths:
        rfs.readonly_path(x.sys, p)


def _masked_paths(x: _Ctx) -> None:
    for p in x.cfg.masked_paths:
        rfs.mask_path(x.sys, p)


def _readonly_root(x: _Ctx) -> None:
    if x.cfg.rootfs_readonly:
        rfs.readonly_root(x.sys)


def _console(x: _Ctx) -> None:
    if not x.cfg.process.terminal:
        if x.cfg.stdio is not None:
            for i, fd in enumerate(x.cfg.stdio):
                if fd != i:
                    os.dup2(fd, i)
        if x.cfg.console_fd is not None:  # not needed without a terminal: do not leak it
            os.close(x.cfg.console_fd)
            x.keep_fds = frozenset()
        return
    if x.cfg.console_fd is None:
        if x.cfg.stdio is None:
            raise OSError(errno.EINVAL, "process.terminal is set but no console socket was given")
        # The caller made the pty (the agent keeps the master): stdio is the slave.
        for i, fd in enumerate(x.cfg.stdio):
            if fd != i:
                os.dup2(fd, i)
        x.sys.set_controlling_tty(0)
        return
    master, slave = os.openpty()
    if x.cfg.process.console_size is not None:
        rows, cols = x.cfg.process.console_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    sock = socket.socket(fileno=x.cfg.console_fd)
    try:
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
    finally:
        sock.detach()
        os.close(x.cfg.console_fd)
    os.close(master)
    for i in range(3):
        os.dup2(slave, i)
    os.close(slave)
    x.sys.set_controlling_tty(0)


def _lsm(x: _Ctx) -> None:
    p = x.cfg.process
    if p.apparmor_profile:
        if _read("/sys/module/apparmor/parameters/enabled").startswith("Y"):
            attr = "/proc/self/attr/apparmor/exec"
            if not os.path.exists(attr):
                attr = "/proc/self/attr/exec"
            x.sys.write_file(attr, f"exec {p.apparmor_profile}")
        else:
            sync.send(
                x.sock,
                "warn",
                msg=f"apparmor is not enabled on this kernel: profile "
                f"{p.apparmor_profile!r} not applied",
            )
    if p.selinux_label:
        if os.path.exists("/sys/fs/selinux/enforce"):
            x.sys.write_file("/proc/self/attr/exec", p.selinux_label)
        else:
            sync.send(
                x.sock,
                "warn",
                msg=f"selinux is not enabled on this kernel: label {p.selinux_label!r} not applied",
            )


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _rlimits(x: _Ctx) -> None:
    for res, soft, hard in x.cfg.process.rlimits:
        x.sys.setrlimit(res, soft, hard)


def _personality(x: _Ctx) -> None:
    if x.cfg.personality is not None:
        x.sys.personality(x.cfg.personality)


def _resolve_exe(x: _Ctx) -> None:
    x.exe = find_executable(x.cfg.process.args[0], x.cfg.process.env)


def _no_new_privs(x: _Ctx) -> None:
    if x.cfg.process.no_new_privs:
        x.sys.set_no_new_privs()


def _seccomp_early(x: _Ctx) -> None:
    if x.cfg.process.seccomp is not None and not x.cfg.process.no_new_privs:
        x.sys.load_seccomp(x.cfg.process.seccomp)


def _bounding(x: _Ctx) -> None:
    if x.cfg.process.caps is not None:
        x.sys.drop_bounding_set(x.cfg.process.caps.bounding)


def _user(x: _Ctx) -> None:
    p = x.cfg.process
    x.sys.set_keepcaps(True)
    x.sys.setgroups(list(p.additional_gids))
    x.sys.setresgid(p.gid)
    x.sys.setresuid(p.uid)
    x.sys.set_keepcaps(False)


def _capabilities(x: _Ctx) -> None:
    if x.cfg.process.caps is not None:
        x.sys.set_capabilities(x.cfg.process.caps)


def _cwd(x: _Ctx) -> None:
    x.sys.chdir(x.cfg.process.cwd)


def _umask(x: _Ctx) -> None:
    os.umask(0o022 if x.cfg.process.umask is None else x.cfg.process.umask)


def _close_fds(x: _Ctx) -> None:
    keep = {x.sock.fileno(), *x.keep_fds}
    if x.cfg.fifo_fd is not None:
        keep.add(x.cfg.fifo_fd)
    keep.update(range(3, 3 + x.cfg.preserve_fds))
    x.sys.close_fds_from(3, frozenset(keep))
    for fd in range(3, 3 + x.cfg.preserve_fds):
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, True)


class _Named(Exception):
    """Re-labels the failing step with a more precise name (e.g. the mount destination)."""

    def __init__(self, step: str, err: OSError) -> None:
        super().__init__(step)
        self.step = step
        self.err = err


CREATE_STEPS: tuple[Step, ...] = (
    ("setsid", _setsid),
    ("session keyring", _session_keyring),
    ("oom_score_adj", _oom_score_adj),
    ("umask", _umask_zero),
    ("rootfs propagation", _propagation),
    ("bind rootfs", _bind_rootfs),
    ("mounts", _mounts),
    ("devices", _devices),
    ("prestart hooks", _prestart_hooks),
    ("createContainer hooks", _create_container_hooks),
    ("pivot_root", _pivot_root),
    ("hostname", _hostname),
    ("sysctl", _sysctl),
    ("readonly paths", _readonly_paths),
    ("masked paths", _masked_paths),
    ("readonly rootfs", _readonly_root),
    ("console", _console),
    ("lsm labels", _lsm),
    ("rlimits", _rlimits),
    ("personality", _personality),
    ("resolve executable", _resolve_exe),
    ("no_new_privs", _no_new_privs),
    ("seccomp", _seccomp_early),
    ("capabilities bounding set", _bounding),
    ("user", _user),
    ("capabilities", _capabilities),
    ("cwd", _cwd),
    ("umask", _umask),
    ("close fds", _close_fds),
)

# Without a mount namespace the rootfs steps reduce to a chroot (before the hostname step).
_ROOTFS_STEPS = frozenset(
    {
        "rootfs propagation",
        "bind rootfs",
        "mounts",
        "devices",
        "readonly paths",
        "masked paths",
        "readonly rootfs",
        "pivot_root",
    }
)
CREATE_STEPS_NO_MNTNS: tuple[Step, ...] = tuple(
    s
    for n, f in CREATE_STEPS
    if n not in _ROOTFS_STEPS
    for s in ((("chroot", _chroot_only), (n, f)) if n == "hostname" else ((n, f),))
)

EXEC_STEPS: tuple[Step, ...] = (
    ("setsid", _setsid),
    ("console", _console),
    ("lsm labels", _lsm),
    ("rlimits", _rlimits),
    ("resolve executable", _resolve_exe),
    ("no_new_privs", _no_new_privs),
    ("seccomp", _seccomp_early),
    ("capabilities bounding set", _bounding),
    ("user", _user),
    ("capabilities", _capabilities),
    ("cwd", _cwd),
    ("umask", _umask),
    ("close fds", _close_fds),
)


def steps_for(cfg: InitConfig) -> tuple[Step, ...]:
    if cfg.mode == "exec":
        return EXEC_STEPS
    return CREATE_STEPS if cfg.has_mntns else CREATE_STEPS_NO_MNTNS


def stage2(cfg: InitConfig, sys_: Syscalls, sock: socket.socket) -> None:
    """The container process: run the steps, report ready, wait for start, exec. Never returns."""
    x = _Ctx(cfg, sys_, sock)
    name = "init"
    try:
        for step in steps_for(cfg):
            name = step[0]
            step[1](x)
    except _Named as err:
        sync.send_error(sock, err.step, err.err)
        os._exit(1)
    except BaseException as err:
        sync.send_error(sock, name, err)
        os._exit(1)
    env = exec_env(cfg.process)
    sync.send(sock, "ready")
    if cfg.mode == "exec":
        # Keep the socket open, close-on-exec: the parent sees EOF exactly at execve.
        os.set_inheritable(sock.fileno(), False)
        sock.detach()
    else:
        sock.close()
    if cfg.mode == "create" and cfg.fifo_fd is not None:
        try:
            while True:
                ready, _, _ = select.select([cfg.fifo_fd], [], [], 1.0)
                if ready:
                    if os.read(cfg.fifo_fd, 1):
                        break
                elif os.fstat(cfg.fifo_fd).st_nlink == 0:
                    # The state dir is gone without a start (the runtime crashed or cleaned
                    # up): never linger as an orphan.
                    os._exit(137)
            # Not closed: it closes at execve (or exit), which is how start knows the
            # program runs (EPOLLHUP on its reader of the fifo).
            os.set_inheritable(cfg.fifo_fd, False)
            if cfg.hooks_start_container:
                hooks_mod.run_hooks("startContainer", cfg.hooks_start_container, x.state_json)
        except BaseException as err:
            _die(f"start: {err}")
    if cfg.process.seccomp is not None and cfg.process.no_new_privs:
        try:
            sys_.load_seccomp(cfg.process.seccomp)
        except OSError as err:
            _die(f"seccomp: {err}")
    try:
        os.execve(x.exe, list(cfg.process.args), env)
    except OSError as err:
        _die(f"exec {x.exe}: {err.strerror}")


def _die(msg: str) -> None:
    try:
        sys.stderr.write(f"kata-oci init: {msg}\n")
        sys.stderr.flush()
    finally:
        os._exit(127)
