"""The parent ↔ init synchronisation protocol.

Transport: one ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair per launch; each message is one packet
holding a JSON object ``{"t": <type>, ...}`` (fds, when any, travel with it as SCM_RIGHTS).
Both sides block; messages are small (< 64 KiB). The set of messages is closed:

=========  ===========  ===================================================================
from       type         meaning / reply
=========  ===========  ===================================================================
parent     ``go``       stage-1 may proceed (the parent has put it into the cgroup)
stage-1    ``idmap``    a new user namespace exists: write uid_map/gid_map of stage-1's pid
parent     ``idmap_ok`` the maps are written (reply to ``idmap``)
stage-1    ``pid``      ``{"pid": n}``: the container process (stage-2); stage-1 then exits
init       ``hooks``    mounts are done, before pivot_root: run prestart + createRuntime
parent     ``hooks_ok`` the hooks ran (reply to ``hooks``)
init       ``warn``     ``{"msg": s}``: a warning to log (e.g. AppArmor not supported)
init       ``ready``    set-up complete. create: the init now waits for start on exec.fifo
                        and closes its end. exec: its end stays open, close-on-exec, so
                        the parent waits for EOF = the process has exec'd
either     ``error``    ``{"step", "errno", "msg", "path"}``: set-up failed; the sender exits
=========  ===========  ===================================================================

stage-1 forks the container process behind a gate (a pipe the child reads until EOF) and
sends ``pid`` before exiting, so ``pid`` always precedes every message of the container
process. A closed socket before ``ready`` (EOF) means the child died; the parent reports it as
an ``InitError`` naming the last step it heard of.
"""

from __future__ import annotations

import contextlib
import json
import os
from socket import AF_UNIX, SOCK_SEQPACKET, socket, socketpair
from typing import Any

from .errors import InitError

Message = dict[str, Any]


def pair() -> tuple[socket, socket]:
    """(parent end, child end); the child end is inheritable, both are blocking."""
    p, c = socketpair(AF_UNIX, SOCK_SEQPACKET)
    os.set_inheritable(c.fileno(), True)
    return p, c


def send(sock: socket, t: str, **fields: Any) -> None:
    fields["t"] = t
    sock.send(json.dumps(fields).encode())


def recv(sock: socket, last_step: str = "init") -> Message:
    data = sock.recv(65536)
    if not data:
        raise InitError(last_step, "container init exited unexpectedly")
    msg: Message = json.loads(data)
    return msg


def expect(sock: socket, t: str, step: str) -> Message:
    msg = recv(sock, step)
    if msg["t"] == "error":
        raise error_from(msg)
    if msg["t"] != t:
        raise InitError(step, f"protocol error: expected {t!r}, got {msg['t']!r}")
    return msg


def error_from(msg: Message) -> InitError:
    return InitError(
        str(msg.get("step", "init")),
        str(msg.get("msg", "")),
        int(msg.get("errno") or 0),
        msg.get("path"),
    )


def send_error(sock: socket, step: str, err: BaseException) -> None:
    if isinstance(err, OSError):
        errno = err.errno or 0
        path = err.filename if isinstance(err.filename, str) else None
        text = err.strerror or str(err)
        if errno and os.strerror(errno) not in text:
            text = f"{text}: {os.strerror(errno)}"
    elif isinstance(err, InitError):
        errno, path, text = err.errno, err.path, err.detail
    else:  # a HookError carries why its hook could not start
        errno, path, text = getattr(err, "errno", 0) or 0, None, str(err) or type(err).__name__
    with contextlib.suppress(OSError):
        send(sock, "error", step=step, errno=errno, msg=text, path=path)
