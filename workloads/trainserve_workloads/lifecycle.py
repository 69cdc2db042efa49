"""Local commands as good citizens: Ray on loopback, signals that drain, and no process or port left behind.

A first SIGTERM or SIGINT stops the command the way Ctrl-C does (it drains and shuts Ray down); a second one
stops every process the command started at once. Ray's driver installs a native handler that dumps a stack on
SIGTERM, so :func:`handle_stop_signals` is called after Ray starts, replacing it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

LOOPBACK = "127.0.0.1"
#: Where a local Ray's own servers (GCS, raylet, workers, agents) listen: Ray's single-machine mode takes the
#: loopback address as the node's, and its servers then bind it alone (as on macOS; ray/_private/services.py).
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

#: :func:`free_port` picks from FIRST_PICKED_PORT up to the kernel's ephemeral range (Linux: 32768-60999 unless set).
FIRST_PICKED_PORT = 20000
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LINUX_EPHEMERAL_START = 32768

#: How long a stop waits for Ray's processes to exit on their own before it kills what is left.
GRACE_SECONDS = 5.0


class StopRequested(KeyboardInterrupt):
    """A stop signal, raised in the main thread where Ctrl-C would be (so existing Ctrl-C paths drain)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def use_loopback_ray() -> None:
    """A local Ray started after this (in this process) keeps its servers on loopback; one that joins an existing
    cluster (``RAY_ADDRESS``) is left as that cluster is. Ray reads the setting when it is first imported, and
    its processes must agree on it, so a process that imported Ray already keeps Ray's default."""
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        for key, value in LOOPBACK_RAY_ENV.items():
            os.environ.setdefault(key, value)


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing uses on ``host`` now, for a server that cannot pick its own and binds it later.

    Picked at random below the kernel's ephemeral range. A port the OS hands out (a bind to port 0) comes from
    that range, and any outgoing connection may take it as its source port before the server binds it: HAProxy
    then exits with "Address already in use" and the service never starts. Ports below the range are only ever
    taken by a bind that names them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ephemeral_start = _ephemeral_ports_start()
    if ephemeral_start - FIRST_PICKED_PORT >= 1000:
        for _ in range(64):
            port = random.randrange(FIRST_PICKED_PORT, ephemeral_start)
            with socket.socket(family) as probe:
                try:
                    probe.bind((host, port))
                except OSError:  # in use
                    continue
                return port
    with socket.socket(family) as probe:  # no room below the range: the OS's choice
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _ephemeral_ports_start() -> int:
    try:
        return int(Path(EPHEMERAL_RANGE_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LINUX_EPHEMERAL_START


_stop_signals: list[int] = []
_hurry: list[Callable[[], None]] = []


def handle_stop_signals(hurry: Callable[[], None] | None = None) -> None:
    """First SIGTERM/SIGINT: :class:`StopRequested` in the main thread; a second: ``hurry()`` and exit now.

    Called again right after Ray starts in this process (Ray's driver installs its own handlers then); the
    signals counted so far and ``hurry`` are kept."""
    if hurry is not None:
        _hurry[:] = [hurry]
    elif not _hurry:
        return  # this command does not handle stop signals itself

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _stop_signals.append(signum)
        if len(_stop_signals) == 1:
            raise StopRequested(signum)
        _hurry[0]()
        os._exit(0 if signum == signal.SIGTERM else 128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` now, with its start time (a pid reused later is not the same process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        started = _start_time(pid)
        if started is not None:
            found[pid] = started
        pending.extend(children.get(pid, []))
    return found


def alive(processes: dict[int, str]) -> dict[int, str]:
    return {pid: started for pid, started in processes.items() if _start_time(pid) == started}


def kill(processes: dict[int, str], sig: int = signal.SIGKILL) -> None:
    for pid in alive(processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap(processes: dict[int, str], grace: float = GRACE_SECONDS) -> None:
    """Wait up to ``grace`` seconds for the processes to exit, then SIGTERM, then SIGKILL whatever remains."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            kill(processes, sig)
        deadline = time.monotonic() + grace
        while alive(processes) and time.monotonic() < deadline:
            _reap_children()
            time.sleep(0.05)
        if not alive(processes):
            return


def _reap_children() -> None:
    """Collect our own exited children, so they do not linger as zombies (which still count as alive)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def kill_everything_started() -> None:
    """The second signal's answer: every process below this one, killed now."""
    kill(descendants(os.getpid()))


@contextlib.contextmanager
def leaves_nothing_behind(shutdown: Callable[[], None], grace: float = GRACE_SECONDS) -> Iterator[None]:
    """On exit, ``shutdown()`` runs and whatever this process started (Ray's processes, HAProxy) is gone within
    ``grace`` seconds, or killed. The process tree is read before ``shutdown()``, which would orphan the
    grandchildren (Ray's workers and agents, HAProxy), so the block must leave shutting down to this."""
    try:
        yield
    finally:
        started = descendants(os.getpid())
        try:
            shutdown()
        finally:
            reap(started, grace)
