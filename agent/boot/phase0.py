"""Phase 0: Health.Check is answered before the agent is imported.

The host's first call is a Health.Check, repeated until it succeeds, and importing asyncio, uvloop
and the protobuf runtime costs a Python process most of its start-up. So ``run`` binds the listen
address the BootArgs name and serves it with a small ``selectors`` loop (``agent.rpc.early``) on
the main thread while a worker thread does ``prepare``: the configuration
(``agent.boot.configure``) and the import of phase 1 (``agent.boot.phase1``). The result of
``prepare`` is a ``Start``: given what phase 0 hands over (the listener and the connections
accepted so far, with their unparsed input), it runs phases 1 and 2 until the agent ends.

When the address is only known once configured (a configuration file names it), ``run``
configures first and then serves phase 0 while phase 1 is imported. A serial port takes no part
here: the guest's ``/init`` opens it itself (``agent.boot.init``); ``kata-agent`` on a serial
address goes straight to phase 1, which opens it.

Cold: imported by both entry points before anything listens; imports the standard library's
light parts and the phase-0 server only (``tests/unit/boot/test_import_budget.py``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from functools import partial

from agent.boot.args import BootArgs
from agent.rpc import early

TYPE_CHECKING = False  # not typing's: typing is not imported before the listener answers Check
if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.rpc.early_serial import SerialHandover

    #: Runs phases 1 and 2 with what phase 0 hands over; returns the exit status.
    Start = Callable[[early.Handover | SerialHandover | None], int]

#: The addresses phase 0 binds (stream listeners); anything else is left to phase 1.
STREAM_PREFIXES = ("unix:///", "unix://@", "vsock://")


def run(boot: BootArgs) -> int:
    """``kata-agent``'s start-up (and PID 1's without a serial port): phase 0, then the agent."""
    work: Callable[[], Start]
    if boot.server_addr is not None:
        address, work = boot.server_addr, partial(prepare, boot)
    else:  # a configuration file names the address: configure first
        configured = _configure(boot)
        if isinstance(configured, int):
            return configured
        address, work = configured.server.server_addr, partial(_phase1, configured)
    listener = _bind(address)
    if listener is None:
        return work()(None)
    handover, start = _serve(listener, address, work)
    return start(handover)


def prepare(boot: BootArgs) -> Start:
    """The configuration and phase 1's imports: the work phase 0 hides (in its worker thread)."""
    configured = _configure(boot)
    if isinstance(configured, int):
        status = configured

        def give_up(handover: early.Handover | SerialHandover | None) -> int:
            if handover is not None:
                handover.close()
            return status

        return give_up
    return _phase1(configured)


def _configure(boot: BootArgs) -> AgentConfig | int:
    from agent.boot import configure  # argparse and the configuration: phase 0's work

    return configure.configure(boot)


def _phase1(config: AgentConfig) -> Start:
    from agent import imports  # with typing: not before the listener answers

    imports.import_uvloop()  # asyncio and uvloop without ssl, before anything imports asyncio
    from agent.boot import phase1  # the asyncio server: phase 0's work

    def start(handover: early.Handover | SerialHandover | None) -> int:
        return phase1.run(config, handover)

    return start


def _bind(address: str) -> socket.socket | None:
    """The listening socket, or None: not a stream address, or binding failed (phase 1 binds
    again and reports the error)."""
    if not address.startswith(STREAM_PREFIXES):
        return None
    try:
        return early.bind(address)
    except (OSError, ValueError):
        return None


def _serve(
    listener: socket.socket, address: str, work: Callable[[], Start]
) -> tuple[early.Handover, Start]:
    """Answer Check on `listener` until `work` (in a worker thread) is done."""
    done = threading.Event()
    outcome: list[Start | BaseException] = []

    def prepare_in_thread() -> None:
        try:
            outcome.append(work())
        except BaseException as err:  # SystemExit from argparse included
            outcome.append(err)
        finally:
            done.set()

    threading.Thread(target=prepare_in_thread, name="phase0-prepare", daemon=True).start()
    handover = early.EarlyServer(listener, address).serve(done)
    result = outcome[0]
    if isinstance(result, BaseException):
        handover.close()
        raise result
    return handover, result
