"""kata-oci: runc's command line over ``oci.engine``.

Global options (before the command): ``--root DIR`` (default /run/kata-oci), ``--log FILE``,
``--log-format text|json``, ``--debug``; accepted and ignored for compatibility:
``--systemd-cgroup``, ``--criu``, ``--rootless``.

Commands: create, run, start, state, kill, delete, exec, list, ps, pause, resume, update,
events, features, spec. Errors are printed the way runc prints them (logfmt on stderr, or the
plain message on stderr plus the record in ``--log``), exit status 1; ``run`` and foreground
``exec`` exit with the container process's status (128+signal when killed).

This module is the entry point a fresh interpreter runs for every command, so the start-up
economy lives here and nowhere below it: a hand-written parser (argparse alone costs more than
some commands), the engine and the spec model imported only by the commands that use them, no
cyclic GC and no interpreter finalization (``main``). tests/unit/oci_engine/test_cli_imports.py
names what each command may load; the figures are in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oci.engine.facade import Engine

VERSION = "0.1.0"
DEFAULT_ROOT = "/run/kata-oci"


class UsageError(Exception):
    pass


# name → (aliases, takes a value, repeatable)
_Spec = dict[str, tuple[tuple[str, ...], bool, bool]]

GLOBAL: _Spec = {
    "root": (("--root",), True, False),
    "log": (("--log",), True, False),
    "log-format": (("--log-format",), True, False),
    "debug": (("--debug",), False, False),
    "systemd-cgroup": (("--systemd-cgroup",), False, False),
    "criu": (("--criu",), True, False),
    "rootless": (("--rootless",), True, False),
    "help": (("--help", "-h"), False, False),
    "version": (("--version", "-v"), False, False),
}

_CREATE: _Spec = {
    "bundle": (("--bundle", "-b"), True, False),
    "console-socket": (("--console-socket",), True, False),
    "pid-file": (("--pid-file",), True, False),
    "no-pivot": (("--no-pivot",), False, False),
    "no-new-keyring": (("--no-new-keyring",), False, False),
    "preserve-fds": (("--preserve-fds",), True, False),
}

COMMANDS: dict[str, _Spec] = {
    "create": _CREATE,
    "run": {
        **_CREATE,
        "detach": (("--detach", "-d"), False, False),
        "keep": (("--keep",), False, False),
    },
    "start": {},
    "state": {},
    "kill": {"all": (("--all", "-a"), False, False)},
    "delete": {"force": (("--force", "-f"), False, False)},
    "exec": {
        "console-socket": (("--console-socket",), True, False),
        "cwd": (("--cwd",), True, False),
        "env": (("--env", "-e"), True, True),
        "tty": (("--tty", "-t"), False, False),
        "user": (("--user", "-u"), True, False),
        "additional-gids": (("--additional-gids", "-g"), True, True),
        "process": (("--process", "-p"), True, False),
        "detach": (("--detach", "-d"), False, False),
        "pid-file": (("--pid-file",), True, False),
        "process-label": (("--process-label",), True, False),
        "apparmor": (("--apparmor",), True, False),
        "no-new-privs": (("--no-new-privs",), False, False),
        "cap": (("--cap", "-c"), True, True),
        "preserve-fds": (("--preserve-fds",), True, False),
        "ignore-paused": (("--ignore-paused",), False, False),
    },
    "list": {
        "format": (("--format", "-f"), True, False),
        "quiet": (("--quiet", "-q"), False, False),
    },
    "ps": {"format": (("--format", "-f"), True, False)},
    "pause": {},
    "resume": {},
    "update": {
        "resources": (("--resources", "-r"), True, False),
        "memory": (("--memory",), True, False),
        "memory-reservation": (("--memory-reservation",), True, False),
        "memory-swap": (("--memory-swap",), True, False),
        "cpu-shares": (("--cpu-shares",), True, False),
        "cpu-quota": (("--cpu-quota",), True, False),
        "cpu-period": (("--cpu-period",), True, False),
        "cpuset-cpus": (("--cpuset-cpus",), True, False),
        "cpuset-mems": (("--cpuset-mems",), True, False),
        "pids-limit": (("--pids-limit",), True, False),
        "blkio-weight": (("--blkio-weight",), True, False),
    },
    "events": {"stats": (("--stats",), False, False), "interval": (("--interval",), True, False)},
    "features": {},
    "spec": {
        "bundle": (("--bundle", "-b"), True, False),
        "rootless": (("--rootless",), False, False),
    },
}

# Commands and the number of positional arguments they need (None: at least one).
_NARGS: dict[str, tuple[int, int | None]] = {
    "create": (1, 1),
    "run": (1, 1),
    "start": (1, 1),
    "state": (1, 1),
    "kill": (1, 2),
    "delete": (1, 1),
    "exec": (1, None),
    "list": (0, 0),
    "ps": (1, None),
    "pause": (1, 1),
    "resume": (1, 1),
    "update": (1, 1),
    "events": (1, 1),
    "features": (0, 0),
    "spec": (0, 0),
}


class Args:
    __slots__ = ("opts", "pos")

    def __init__(self) -> None:
        self.opts: dict[str, Any] = {}
        self.pos: list[str] = []


def _parse(argv: list[str], spec: _Spec, *, stop_at_positional: bool) -> tuple[Args, list[str]]:
    """Parse options from ``argv``; returns the result and the unparsed rest."""
    by_alias = {a: (name, val, rep) for name, (aliases, val, rep) in spec.items() for a in aliases}
    out = Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.pos.extend(argv[i + 1 :])
            return out, []
        if arg.startswith("-") and len(arg) > 1:
            key, eq, inline = arg.partition("=")
            if key not in by_alias:
                raise UsageError(f"flag provided but not defined: {key}")
            name, takes, rep = by_alias[key]
            if takes:
                if eq:
                    value: Any = inline
                else:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"flag needs an argument: {key}")
                    value = argv[i]
            else:
                value = True if not eq else inline not in ("false", "0")
            if rep:
                out.opts.setdefault(name, []).append(value)
            else:
                out.opts[name] = value
            i += 1
            continue
        if stop_at_positional:
            return out, argv[i:]
        out.pos.append(arg)
        if spec is COMMANDS["exec"] or spec is COMMANDS["ps"]:
            # exec/ps: everything after the container id belongs to the command.
            out.pos.extend(argv[i + 1 :])
            return out, []
        i += 1
    return out, []


# --------------------------------------------------------------------------------------------
# logging and errors, runc style


class Log:
    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def _line(self, level: str, msg: str) -> str:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            return json.dumps({"level": level, "msg": msg, "time": now}) + "\n"
        return f"time={json.dumps(now)} level={level} msg={json.dumps(msg)}\n"

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_on:
            return
        if self.path:
            with open(self.path, "a") as f:
                f.write(self._line(level, msg))
            if level == "error":
                sys.stderr.write(msg + "\n")
        else:
            sys.stderr.write(self._line(level, msg))

    def error(self, msg: str) -> None:
        self.write("error", msg)

    def warning(self, msg: str) -> None:
        self.write("warning", msg)


def _setup_logging(log: Log) -> None:
    """Route the engine's ``logging`` records (warnings from oci.spec/oci.engine) to ``log``."""

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log.write("warning" if record.levelno < logging.ERROR else "error", record.getMessage())

    root = logging.getLogger()
    root.handlers[:] = [_H()]
    root.setLevel(logging.DEBUG if log.debug_on else logging.WARNING)


# --------------------------------------------------------------------------------------------
# commands


def _engine(g: Args) -> Engine:
    from oci.engine.facade import Engine

    return Engine(g.opts.get("root") or DEFAULT_ROOT)


def _connect_console(path: str | None) -> int | None:
    if not path:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as err:
        s.close()
        raise UsageError(f"connect to console socket {path}: {err.strerror}") from None
    return s.detach()


def _set_subreaper() -> None:
    from oci.syscalls import consts, libc

    libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)


def _wait_for(pid: int, forward_to: int | None = None) -> int:
    """Reap children until ``pid`` exits; forward SIGINT/SIGTERM/SIGHUP/... to ``forward_to``.
    Returns the shell-style status."""
    target = forward_to or pid

    def fwd(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signum)

    for sig in (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGWINCH,
    ):
        signal.signal(sig, fwd)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if wpid == pid:
            return _shell_status(status)


class _LocalConsole:
    """runc's foreground terminal: receive the pty master on a private socketpair and relay it
    to our stdin/stdout (raw mode and window size when stdin is a terminal)."""

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def child_fd(self) -> int:
        return self._theirs.detach()  # the engine closes it after handing it to the init

    def relay_and_wait(self, pid: int) -> int:
        _, fds, _, _ = socket.recv_fds(self._ours, 1024, 1)
        self._ours.close()
        if not fds:
            return _wait_for(pid)
        master = fds[0]
        saved = None
        if os.isatty(0):
            saved = termios.tcgetattr(0)
            tty.setraw(0)
            self._copy_winsize(master)
            signal.signal(signal.SIGWINCH, lambda *_: self._copy_winsize(master))
        inputs = [master, 0]
        status: int | None = None
        try:
            while status is None or master in inputs:
                if status is None:
                    wpid, st = os.waitpid(-1, os.WNOHANG) if _has_children() else (pid, 0)
                    if wpid == pid:
                        status = _shell_status(st)
                ready, _, _ = select.select(inputs, [], [], 0.05)
                if master in ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: every slave end is closed
                        data = b""
                    if data:
                        os.write(1, data)
                    else:
                        inputs.remove(master)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        os.write(master, data)
                    else:
                        inputs.remove(0)
                if status is not None and master in inputs and not ready:
                    break  # exited and drained
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            os.close(master)
        return status if status is not None else _wait_for(pid)

    @staticmethod
    def _copy_winsize(master: int) -> None:
        with contextlib.suppress(OSError):
            ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, ws)


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _shell_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def cmd_create(g: Args, a: Args, *, run: bool = False) -> int:
    cid = a.pos[0]
    eng = _engine(g)
    bundle = a.opts.get("bundle") or os.getcwd()
    if not os.path.isdir(bundle):
        raise OSError(2, f"chdir {bundle}: no such file or directory")
    detach = bool(a.opts.get("detach"))
    relay = None
    if not a.opts.get("console-socket") and _wants_terminal(bundle):
        if not run or detach:
            raise UsageError(
                "cannot allocate tty if kata-oci will detach without setting console socket"
            )
        relay = _LocalConsole()  # foreground run: relay the pty ourselves, as runc does
    if run and not detach:
        _set_subreaper()
    console = relay.child_fd() if relay else _connect_console(a.opts.get("console-socket"))
    try:
        r = eng.create(
            cid,
            bundle,
            console_socket=console,
            pid_file=a.opts.get("pid-file"),
            no_pivot=bool(a.opts.get("no-pivot")),
            preserve_fds=int(a.opts.get("preserve-fds") or 0),
            new_keyring=not a.opts.get("no-new-keyring"),
        )
    finally:
        if console is not None:
            os.close(console)
    if not run:
        return 0
    try:
        eng.start(cid)
    except BaseException:
        eng.delete(cid, force=True)
        raise
    if detach:
        return 0
    code = relay.relay_and_wait(r.pid) if relay else _wait_for(r.pid)
    if not a.opts.get("keep"):
        eng.delete(cid, force=True)
    return code


def _wants_terminal(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return False  # the engine reports a missing/invalid config.json
    proc = raw.get("process") if isinstance(raw, dict) else None
    return isinstance(proc, dict) and proc.get("terminal") is True


def cmd_start(g: Args, a: Args) -> int:
    _engine(g).start(a.pos[0])
    return 0


def cmd_state(g: Args, a: Args) -> int:
    print(json.dumps(_engine(g).state(a.pos[0]), indent=2))
    return 0


def parse_signal(text: str) -> int:
    t = text.upper()
    if t.isdigit():
        return int(t)
    if not t.startswith("SIG"):
        t = "SIG" + t
    try:
        return int(signal.Signals[t])
    except KeyError:
        raise UsageError(f"unknown signal {text!r}") from None


def cmd_kill(g: Args, a: Args) -> int:
    sig = parse_signal(a.pos[1]) if len(a.pos) > 1 else signal.SIGTERM
    _engine(g).kill(a.pos[0], sig, all_processes=bool(a.opts.get("all")))
    return 0


def cmd_delete(g: Args, a: Args) -> int:
    from oci.engine.errors import ContainerNotFound

    try:
        _engine(g).delete(a.pos[0], force=bool(a.opts.get("force")))
    except ContainerNotFound:
        if a.opts.get("force"):
            return 0
        raise
    return 0


def _parse_user(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid or 0)
    except ValueError:
        raise UsageError(f"invalid --user {text!r}: expected UID[:GID]") from None


def cmd_exec(g: Args, a: Args) -> int:
    from oci import spec as ocispec

    cid = a.pos[0]
    eng = _engine(g)
    rec = eng.record(cid)
    raw_proc = rec.config.get("process")
    base = ocispec.decode(ocispec.Process, raw_proc)[0] if raw_proc else None
    if a.opts.get("process"):
        try:
            with open(a.opts["process"]) as f:
                proc = ocispec.decode(ocispec.Process, json.load(f))[0]
        except (OSError, ValueError) as err:
            raise UsageError(f"process {a.opts['process']}: {err}") from None
    else:
        if len(a.pos) < 2:
            raise UsageError("exec: no command given (pass args or --process)")
        if base is None:
            base = ocispec.Process(cwd="/")
        proc = dataclasses.replace(base, args=tuple(a.pos[1:]), terminal=False, console_size=None)
    changes: dict[str, Any] = {}
    if a.opts.get("tty"):
        changes["terminal"] = True
    if a.opts.get("cwd"):
        changes["cwd"] = a.opts["cwd"]
    if a.opts.get("env"):
        keys = {e.partition("=")[0] for e in a.opts["env"]}
        changes["env"] = (*(e for e in proc.env if e.partition("=")[0] not in keys), *a.opts["env"])
    if a.opts.get("user") or a.opts.get("additional-gids"):
        uid, gid = (
            _parse_user(a.opts["user"]) if a.opts.get("user") else (proc.user.uid, proc.user.gid)
        )
        gids = (
            tuple(int(x) for x in a.opts.get("additional-gids") or ()) or proc.user.additional_gids
        )
        changes["user"] = dataclasses.replace(proc.user, uid=uid, gid=gid, additional_gids=gids)
    if a.opts.get("no-new-privs"):
        changes["no_new_privileges"] = True
    if a.opts.get("apparmor"):
        changes["apparmor_profile"] = a.opts["apparmor"]
    if a.opts.get("process-label"):
        changes["selinux_label"] = a.opts["process-label"]
    if a.opts.get("cap"):
        caps = proc.capabilities or ocispec.LinuxCapabilities()
        add = tuple(a.opts["cap"])
        changes["capabilities"] = dataclasses.replace(
            caps,
            bounding=caps.bounding + add,
            effective=caps.effective + add,
            permitted=caps.permitted + add,
        )
    if changes:
        proc = dataclasses.replace(proc, **changes)
    detach = bool(a.opts.get("detach"))
    relay = None
    if proc.terminal and not a.opts.get("console-socket"):
        if detach:
            raise UsageError(
                "cannot allocate tty if kata-oci will detach without setting console socket"
            )
        relay = _LocalConsole()
    if not detach:
        _set_subreaper()
    console = relay.child_fd() if relay else _connect_console(a.opts.get("console-socket"))
    try:
        r = eng.exec(
            cid,
            proc,
            console_socket=console,
            pid_file=a.opts.get("pid-file"),
            preserve_fds=int(a.opts.get("preserve-fds") or 0),
        )
    finally:
        if console is not None:
            os.close(console)
    if detach:
        return 0
    return relay.relay_and_wait(r.pid) if relay else _wait_for(r.pid)


def cmd_list(g: Args, a: Args) -> int:
    states = _engine(g).containers()
    if a.opts.get("quiet"):
        for s in states:
            print(s["id"])
        return 0
    if a.opts.get("format") == "json":
        print(json.dumps(states))
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [
        (
            str(s["id"]),
            str(s["pid"]),
            str(s["status"]),
            str(s["bundle"]),
            str(s["created"]),
            str(s["owner"]) or "root",
        )
        for s in states
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print(
            "".join(v.ljust(max(w + 2, 12)) for v, w in zip(r, widths, strict=True)).rstrip()
            if r is not rows[0]
            else "".join(v.ljust(max(w + 2, 12)) for v, w in zip(r, widths, strict=True))
        )
    return 0


def cmd_ps(g: Args, a: Args) -> int:
    pids = _engine(g).pids(a.pos[0])
    if a.opts.get("format") == "json":
        print(json.dumps(pids))
        return 0
    ps_args = a.pos[1:] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise UsageError("couldn't find PID field in ps output") from None
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0


def cmd_pause(g: Args, a: Args) -> int:
    _engine(g).pause(a.pos[0])
    return 0


def cmd_resume(g: Args, a: Args) -> int:
    _engine(g).resume(a.pos[0])
    return 0


def _size(text: str) -> int:
    t = text.strip().lower()
    mult = 1
    for suf, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("b", 1)):
        if t.endswith(suf):
            t, mult = t[:-1], m
            break
    return int(t) * mult


def cmd_update(g: Args, a: Args) -> int:
    from oci import spec as ocispec

    o = a.opts
    if o.get("resources"):
        if o["resources"] == "-":
            raw = json.load(sys.stdin)
        else:
            with open(o["resources"]) as f:
                raw = json.load(f)
    else:
        raw = {}
        mem = {
            k: _size(o[f])
            for k, f in (
                ("limit", "memory"),
                ("reservation", "memory-reservation"),
                ("swap", "memory-swap"),
            )
            if o.get(f)
        }
        if mem:
            raw["memory"] = mem
        cpu: dict[str, Any] = {
            k: int(o[f])
            for k, f in (("shares", "cpu-shares"), ("quota", "cpu-quota"), ("period", "cpu-period"))
            if o.get(f)
        }
        cpu.update(
            {k: o[f] for k, f in (("cpus", "cpuset-cpus"), ("mems", "cpuset-mems")) if o.get(f)}
        )
        if cpu:
            raw["cpu"] = cpu
        if o.get("pids-limit"):
            raw["pids"] = {"limit": int(o["pids-limit"])}
        if o.get("blkio-weight"):
            raw["blockIO"] = {"weight": int(o["blkio-weight"])}
    try:
        res = ocispec.decode(ocispec.LinuxResources, raw)[0]
    except ocispec.SpecError as err:
        raise UsageError(f"invalid resources: {err}") from None
    _engine(g).update(a.pos[0], res)
    return 0


def cmd_events(g: Args, a: Args) -> int:
    gc.enable()  # long-running
    cid = a.pos[0]
    eng = _engine(g)

    def emit(kind: str, data: object) -> None:
        sys.stdout.write(json.dumps({"type": kind, "id": cid, "data": data}) + "\n")
        sys.stdout.flush()

    if a.opts.get("stats"):
        emit("stats", eng.stats(cid))
        return 0
    interval = float(str(a.opts.get("interval") or "5s").rstrip("s"))
    watcher: Any = None
    try:
        watcher = eng.oom_watcher(cid)
    except Exception:
        watcher = None
    deadline = time.monotonic() + interval
    while True:
        if eng.status(eng.record(cid)) == "stopped":
            return 0
        timeout = max(0.0, deadline - time.monotonic())
        fds = [watcher.fileno()] if watcher is not None else []
        ready, _, _ = select.select(fds, [], [], timeout)
        if ready and watcher is not None and watcher.read():
            emit("oom", None)
        if time.monotonic() >= deadline:
            emit("stats", eng.stats(cid))
            deadline = time.monotonic() + interval


def cmd_features(g: Args, a: Args) -> int:
    from oci import spec as ocispec

    feats = ocispec.features(
        seccomp_enabled=True,
        seccomp_supported_flags=(
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ),
        apparmor_enabled=os.path.exists("/sys/kernel/security/apparmor"),
        selinux_enabled=os.path.exists("/sys/fs/selinux/enforce"),
    )
    print(json.dumps(feats, indent=4))
    return 0


def cmd_spec(g: Args, a: Args) -> int:
    from oci import spec as ocispec

    bundle = a.opts.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise UsageError("File config.json exists. Remove it first")
    with open(path, "w") as f:
        f.write(ocispec.default_spec().to_json(indent=2))
    return 0


HANDLERS: dict[str, Callable[[Args, Args], int]] = {
    "create": cmd_create,
    "run": lambda g, a: cmd_create(g, a, run=True),
    "start": cmd_start,
    "state": cmd_state,
    "kill": cmd_kill,
    "delete": cmd_delete,
    "exec": cmd_exec,
    "list": cmd_list,
    "ps": cmd_ps,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "update": cmd_update,
    "events": cmd_events,
    "features": cmd_features,
    "spec": cmd_spec,
}

USAGE = """NAME:
   kata-oci - Open Container Initiative runtime (kata-agent-py's engine, runc compatible)

USAGE:
   kata-oci [global options] command [command options] [arguments...]

COMMANDS:
   create, run, start, state, kill, delete, exec, list, ps, pause, resume, update, events,
   features, spec

GLOBAL OPTIONS:
   --root value        root directory for storage of container state (default: /run/kata-oci)
   --log value         set the log file to write kata-oci logs to (default: stderr)
   --log-format value  set the log format ('text' (default), or 'json')
   --debug             enable debug logging
"""


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        return _main(argv)
    # A short-lived process that allocates tens of thousands of objects while importing and
    # needs none of them collected: the cyclic GC would only walk them.
    # (`events`, which may run for long, turns it back on.)
    gc.disable()
    code = _main(sys.argv[1:])
    # Skip the interpreter's finalization (module teardown and a last collection): nothing of
    # ours needs it (no atexit work, every log record is written when emitted). Only the std
    # streams' buffers need flushing.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return code  # let the regular exit report it
    os._exit(code)


def _main(argv: list[str]) -> int:
    log = Log(None, "text", False)
    cmd = ""
    try:
        g, rest = _parse(argv, GLOBAL, stop_at_positional=True)
        log = Log(g.opts.get("log"), g.opts.get("log-format") or "text", bool(g.opts.get("debug")))
        if log.fmt not in ("text", "json"):
            raise UsageError(f"invalid log-format: {log.fmt}")
        if g.opts.get("version"):
            print(f"kata-oci version {VERSION}\nspec: 1.2.0")
            return 0
        if not rest or g.opts.get("help"):
            sys.stdout.write(USAGE)
            return 0 if g.opts.get("help") or not rest else 1
        cmd = rest[0]
        if cmd not in COMMANDS:
            log.error(f"No help topic for '{cmd}'")
            return 3
        a, _ = _parse(rest[1:], COMMANDS[cmd], stop_at_positional=False)
        lo, hi = _NARGS[cmd]
        if len(a.pos) < lo or (hi is not None and len(a.pos) > hi):
            n = "exactly" if lo == hi else "at least" if hi is None else "at most"
            raise UsageError(f'kata-oci: "{cmd}" requires {n} {lo} argument(s)')
        if cmd in ("create", "run", "exec", "update", "events", "delete"):
            _setup_logging(log)
        return HANDLERS[cmd](g, a)
    except UsageError as err:
        log.error(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        from oci.engine.errors import EngineError

        if isinstance(err, EngineError | OSError):
            msg = _os_message(err) if isinstance(err, OSError) else str(err)
            if cmd in ("create", "run", "exec"):
                msg = f"kata-oci {cmd} failed: {msg}"
            log.error(msg)
            return 1
        log.error(f"kata-oci {cmd}: internal error: {type(err).__name__}: {err}")
        return 1


def _os_message(err: OSError) -> str:
    text = err.strerror or str(err)
    if err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
