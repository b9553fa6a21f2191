"""A real SMTP server on loopback that keeps every message it receives in a Maildir.

For the local demo and the tests only: it speaks real SMTP (aiosmtpd) so the production email
path (Airflow's ``SmtpHook`` over ``smtplib``) runs unchanged, but it has no authentication and
no TLS, accepts every sender and recipient, and delivers nothing onwards. It binds to loopback
addresses only, so it can never act as an open relay for the network.
"""

from __future__ import annotations

import email
import ipaddress
import mailbox
import re
import socket
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str) -> int:
    """A port the OS reports free right now (aiosmtpd's Controller cannot bind port 0 itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalSmtpServer:
    """Loopback SMTP test server storing mail in ``maildir``. Test/demo only: no auth, no TLS.

    Use as a context manager; ``port`` is the port it listens on, ``messages()`` what arrived.
    """

    def __init__(self, maildir: Path | str, host: str = "127.0.0.1", port: int = 0) -> None:
        if not _is_loopback(host):
            raise ValueError(f"LocalSmtpServer listens on loopback only, not {host!r}: it has no auth and no TLS")
        self.maildir = Path(maildir)
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        # aiosmtpd's Mailbox handler adds each message (with X-Peer/X-MailFrom/X-RcptTo) to the Maildir.
        self._controller = Controller(Mailbox(self.maildir), hostname=host, port=self.port)

    def start(self) -> LocalSmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first, parsed with the modern email policy."""
        box = mailbox.Maildir(self.maildir, create=True)
        return [email.message_from_bytes(box.get_bytes(key), policy=policy.default) for key in sorted(box.keys(), key=_arrival)]


def _arrival(key: str) -> tuple[int, int, str]:
    # Maildir keys begin "<seconds>.M<microseconds>" (microseconds unpadded: sort as numbers).
    match = re.match(r"(\d+)\.M(\d+)", key)
    return (int(match[1]), int(match[2]), key) if match else (0, 0, key)
