"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and can misbehave.

The drill sends its subscribers' emails here; the tests use it to refuse a recipient, to
answer a 4xx, or to drop the connection before or after taking a message.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any


class Received(EmailMessage):
    """A received message, with its envelope recipients and raw bytes."""

    envelope_to: list[str]
    raw: bytes


class SmtpStandIn:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        #: address -> the SMTP reply to its RCPT (e.g. "550 5.1.1 no such user").
        self.refuse: dict[str, str] = {}
        #: address -> the SMTP reply to DATA for a message to it (e.g. "554 5.7.1 rejected").
        self.refuse_data: dict[str, str] = {}
        #: Close the connection instead of answering the next N DATA commands.
        self.drop_before_storing = 0
        self.drop_after_storing = 0
        #: Seconds each DATA takes to answer (a slow relay; connections still run in parallel).
        self.delay = 0.0
        self.lock = threading.Lock()
        self.port = 0
        self._controller: Any = None

    def start(self, **controller_options: Any) -> SmtpStandIn:
        from aiosmtpd.controller import Controller

        self.port = _free_port()  # aiosmtpd cannot be given port 0
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **controller_options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpStandIn:
        return self.start() if self._controller is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.envelope_to]

    # -- aiosmtpd handler hooks ------------------------------------------------------------

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        refused = [self.refuse_data[a] for a in envelope.rcpt_tos if a in self.refuse_data]
        if refused:
            return refused[0]
        with self.lock:
            if self.drop_before_storing:
                self.drop_before_storing -= 1
                server.transport.close()
                return "421 closing"
            message = message_from_bytes(envelope.original_content, _class=Received,
                                         policy=email_policy.default)
            message.envelope_to = list(envelope.rcpt_tos)
            message.raw = envelope.original_content
            self.messages.append(message)
            if self.drop_after_storing:
                self.drop_after_storing -= 1
                server.transport.close()
                return "421 closing"
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
