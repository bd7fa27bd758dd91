"""systemd integration: the sd_notify datagram and journald-friendly log lines.

Written here (a few lines) rather than depending on a library: ``sd_notify``
is one datagram of ``KEY=value`` lines sent to the socket named by
``$NOTIFY_SOCKET``; a leading '@' names an abstract socket.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Final

__all__ = ["JournalFormatter", "notify", "under_journal"]

log = logging.getLogger(__name__)

# syslog priorities (journald reads a "<N>" prefix on each stderr line)
_PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def notify(message: str) -> bool:
    """Send *message* (e.g. ``"READY=1"``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def under_journal() -> bool:
    """True when stderr is connected to the systemd journal."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream or ":" not in stream:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    device, _, inode = stream.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald adds the time, the unit and the pid."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())
