"""systemd's service notification protocol (sd_notify(3)) and its watchdog, for
``nnspam daemon`` and ``nnspam serve`` (``Type=notify`` units).

A few lines of standard-library socket code instead of a dependency. Without
``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing; a failed send is
logged and never stops the service. With ``WatchdogSec=`` in the unit, systemd sets
``$WATCHDOG_USEC`` and kills the service unless ``WATCHDOG=1`` comes at least that
often: :class:`Watchdog` sends it at half the interval, and only while its caller says
the service is alive, so a hung service is restarted instead of silently not filtering.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["sd_notify", "watchdog_interval", "Watchdog", "under_journal", "log_format"]

log = logging.getLogger("nnspam.services.systemd")


def under_journal() -> bool:
    """Whether standard error goes to systemd's journal (``$JOURNAL_STREAM`` names its
    device and inode, systemd.exec(5)), which stamps every line with the time itself."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def log_format(tag: str = "") -> str:
    """The log line format of nnspam's long-running commands: the time first unless the
    journal adds it (a daemon run from a shell or a supervisor other than systemd logged
    lines without a time: issue 25), then ``tag``, the level and the message."""
    return (("" if under_journal() else "%(asctime)s ") + (f"{tag} " if tag else "")
            + "%(levelname)s %(message)s")


def sd_notify(message: str) -> bool:
    """Send one sd_notify(3) datagram (``READY=1``, ``STATUS=...``, several lines at
    once) to ``$NOTIFY_SOCKET``; False if unset or the send failed. An address
    starting with ``@`` is in the abstract namespace."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC`` (systemd's own
    advice), or None without a watchdog or when ``$WATCHDOG_PID`` names another process
    (a child that inherited the environment must not ping for its parent)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.01)
    except ValueError:
        return None


class Watchdog:
    """Pings systemd's watchdog from a service's main loop.

    The interval is read once, from the environment of the process that creates it
    (the service's main process: ``NotifyAccess=main``). :meth:`ping` is cheap enough to
    call on every turn of the loop; it sends only when half the interval has passed."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = watchdog_interval() if interval is None else interval
        self.last = time.monotonic()

    @property
    def enabled(self) -> bool:
        """Whether systemd expects pings from this process."""
        return self.interval is not None

    def ping(self, alive: bool = True, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` if it is due and ``alive`` (the caller's check that the
        service does its work, e.g. a recent heartbeat of its worker); True if sent."""
        if self.interval is None or not alive:
            return False
        now = time.monotonic() if now is None else now
        if now - self.last < self.interval:
            return False
        self.last = now
        return sd_notify("WATCHDOG=1")
