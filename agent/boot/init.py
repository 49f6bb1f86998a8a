"""The guest's ``/init``: the agent as PID 1, its channel open and answering Health.Check first.

The image's ``/init`` runs ``main``. Not PID 1: plain ``kata-agent`` (``agent.cli``). As PID 1 it
mounts /proc and reads the BootArgs (the kernel command line and the environment; ``/init`` has
no flags). Then:

* the agent listens on a virtio-serial port (``agent.server_addr=serial:///dev/virtio-ports/
  NAME``): importing the agent costs seconds under TCG and the host's first call is a
  Health.Check, so the main thread first does only what opening that port needs, timing each
  step (``agent.boot.pid1_early``): ``channel-modules`` (the load list up to ``virtio_console``),
  ``switch-root``, ``early-mounts``, ``channel-open`` (wait for the port, link and open it). Then
  phase 0 answers Check on the port (``agent.rpc.early_serial``) while a worker thread runs the
  rest of PID 1's set-up (``agent.boot.pid1``), builds the configuration and imports phase 1
  (``agent.boot.phase0.prepare``); phases 1 and 2 adopt the open port. A port that does not show
  up within ``pid1_early.PORT_TIMEOUT`` is left to the asyncio listener (it keeps trying);
* any other address: PID 1's set-up in full (``agent.boot.pid1.setup``), then ``kata-agent``'s
  start-up (``agent.boot.phase0.run``).

When the agent ends (DestroySandbox, a bad configuration, a fatal error) the VM is powered off.
"pid1 ready" logs ``channel_open_uptime``: from then on a Check is answered (``bench/boot.py``).

Cold: see ``agent.boot.pid1_early``. The modules of the later steps are imported where those
steps begin, after the port is open.
"""

from __future__ import annotations

import os
import time

from agent.boot import pid1_early
from agent.boot.args import SERIAL_PORTS_PREFIX, BootArgs
from agent.boot.args import read as read_boot_args
from agent.devices.virtio_ports import link_ports
from agent.rpc import early_serial

TYPE_CHECKING = False  # not typing's: typing is not imported before the channel is open
if TYPE_CHECKING:
    import threading

    from agent.boot.phase0 import Start


def main() -> int:
    """The image's ``/init``."""
    if os.getpid() != 1:
        from agent import cli  # not the guest's init: kata-agent, as the command would run it

        return cli.main()
    started = pid1_early.uptime()
    pid1_early.mount_proc()
    try:
        with open("/proc/self/stat") as fh:
            stat = fh.read()
    except OSError:
        stat = ""
    boot = read_boot_args((), os.environ)
    initramfs = pid1_early.root_is_initramfs()
    name = boot.serial_port
    if name is None:
        return _setup_first(boot, initramfs)
    return _channel_first(boot, name, initramfs, started, stat)


def _setup_first(boot: BootArgs, initramfs: bool) -> int:
    """No serial channel to open first: PID 1's set-up in full, then kata-agent's start-up."""
    from agent.boot import phase0, pid1  # ordinary Python from here on

    def setup_then_serve() -> int:
        pid1.setup_logging(boot)
        pid1.setup(boot, pid1.Early(initramfs_root=initramfs, exec_uptime=pid1.exec_uptime()))
        return phase0.run(boot)

    return pid1.run_as_init(setup_then_serve)


def _channel_first(boot: BootArgs, name: str, initramfs: bool, started: float, stat: str) -> int:
    times: dict[str, float] = {}
    # The channel's modules first: the port then appears while the rest of this runs (the
    # host's QEMU answers the driver's port queries meanwhile).
    t0 = time.monotonic()
    now, later = pid1_early.split_load_list(
        pid1_early.read_load_list(), (pid1_early.SERIAL_DRIVER,)
    )
    failed = pid1_early.load_modules(now)
    times["channel-modules"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    switched = initramfs and boot.switch_root
    if switched:
        pid1_early.switch_root()
    times["switch-root"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    pid1_early.early_mounts()
    times["early-mounts"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    address = SERIAL_PORTS_PREFIX + name
    handover = None
    if name in link_ports((name,), pid1_early.PORT_TIMEOUT):
        path = f"/dev/virtio-ports/{name}"
        try:
            handover = early_serial.SerialHandover(address, path, early_serial.open_port(path))
        except OSError:
            handover = None  # the asyncio listener retries (and logs) the open
    times["channel-open"] = round(time.monotonic() - t0, 4)
    # From here on a Check is answered: the serve loop polls the port first thing.
    opened = pid1_early.uptime() if handover is not None else None
    outcome: list[Start | BaseException] = []

    def prepare() -> None:
        try:
            from agent.boot import phase0, pid1  # the rest, while the port answers Check

            pid1.setup_logging(boot)
            pid1.log_module_failures(failed)
            pid1.defer_modules(later)
            pid1.setup(
                boot,
                pid1.Early(initramfs_root=initramfs, exec_uptime=pid1.exec_uptime()),
                done=times,
                channel_opened=opened is not None,
                switched_root=switched,
                extra={
                    "main_uptime": round(started, 4),
                    "channel_open_uptime": opened,
                    "python_startup": pid1_early.startup_cost(stat) if stat else {},
                },
            )
            outcome.append(phase0.prepare(boot))
        except BaseException as err:
            outcome.append(err)

    def start() -> threading.Event:
        import threading  # after the port's first poll: what the host sent already is answered

        done = threading.Event()

        def work() -> None:
            try:
                prepare()
            finally:
                done.set()

        threading.Thread(target=work, name="pid1-prepare", daemon=True).start()
        return done

    if handover is not None:
        early_serial.EarlySerialServer(handover).serve(start)
    else:
        start().wait()
    from agent.boot import pid1  # the worker imported it already

    return pid1.run_as_init(lambda: _run(outcome[0], handover))


def _run(prepared: Start | BaseException, handover: early_serial.SerialHandover | None) -> int:
    if isinstance(prepared, BaseException):
        raise prepared
    return prepared(handover)
