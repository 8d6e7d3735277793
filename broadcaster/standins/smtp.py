"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, and can misbehave.

The drill sends its subscribers' emails here; the tests use it to refuse a recipient, to
answer a 4xx, to drop the connection before or after taking a message, to take only so many
connections at once, or only so many messages a second. It offers
PIPELINING (RFC 2920) as Postfix does, unless told not to: aiosmtpd reads commands in order
from the stream, so a pipelining client's batches are answered as a real relay answers them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
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
        #: Offer PIPELINING in the EHLO answer (a client then sends commands in batches).
        self.pipelining = True
        #: How many connections said EHLO (each connection a client opened and logged into).
        self.greetings = 0
        #: Seconds each EHLO takes to answer (a relay far away), and the most EHLOs that were
        #: being answered at once (connections opened one after another: 1).
        self.ehlo_delay = 0.0
        self.most_greeting_at_once = 0
        self._greeting_now = 0
        #: Connections taken at once; past it, a new one gets 421 instead of the greeting, as a
        #: relay at its limit answers (Postfix's `smtpd_client_connection_count_limit`).
        self.max_connections: int | None = None
        #: What a connection past the limit is told where the greeting would be (a 5xx: a relay
        #: that will not take this client at all, e.g. "554 5.7.1 Client host rejected").
        self.limit_reply = "421 4.7.0 Too many concurrent SMTP connections from this IP"
        #: How many connections were turned away so.
        self.refused_connections = 0
        #: The reply to EHLO and HELO, for a relay that greets a client and then will not talk
        #: to it (e.g. "550 5.7.1 Client not authorized"); None: the usual 250.
        self.refuse_greeting: str | None = None
        #: At most (count, seconds): messages over `count` in any `seconds` are answered with
        #: `rate_reply` after their text, as a relay that limits how fast a client sends (Amazon
        #: SES's maximum send rate); how many were, in `throttled`.
        self.max_rate: tuple[int, float] | None = None
        self.rate_reply = "454 Throttling failure: Maximum sending rate exceeded"
        self.throttled = 0
        #: When each message was taken (time.monotonic), in order.
        self.taken_at: list[float] = []
        self._open = 0
        self.lock = threading.Lock()
        self.port = 0
        self._controller: Any = None

    def start(self, **controller_options: Any) -> SmtpStandIn:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        stand_in = self

        class Counted(SMTP):
            def connection_lost(self, error: Exception | None) -> None:
                with stand_in.lock:
                    stand_in._open -= 1
                super().connection_lost(error)

        class Limited(Controller):
            def factory(self) -> asyncio.Protocol:
                with stand_in.lock:
                    if stand_in.max_connections is not None and stand_in._open >= stand_in.max_connections:
                        stand_in.refused_connections += 1
                        return _AtItsLimit(stand_in.limit_reply)
                    stand_in._open += 1
                return Counted(self.handler, **self.SMTP_kwargs)

        self.port = _free_port()  # aiosmtpd cannot be given port 0
        self._controller = Limited(self, hostname="127.0.0.1", port=self.port, **controller_options)
        self._controller.start()
        # start() opened a connection of its own to check the server answers: wait until it is gone.
        for _ in range(200):
            with self.lock:
                if self._open == 0:
                    break
            time.sleep(0.005)
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

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        if self.refuse_greeting:
            return [self.refuse_greeting]
        session.host_name = hostname
        with self.lock:
            self.greetings += 1
            self._greeting_now += 1
            self.most_greeting_at_once = max(self.most_greeting_at_once, self._greeting_now)
        if self.ehlo_delay:
            await asyncio.sleep(self.ehlo_delay)
        with self.lock:
            self._greeting_now -= 1
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> Any:
        from aiosmtpd.smtp import MISSING

        return self.refuse_greeting or MISSING

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
            now = time.monotonic()
            if self.max_rate is not None:
                count, seconds = self.max_rate
                if sum(1 for t in self.taken_at[-count:] if t > now - seconds) >= count:
                    self.throttled += 1
                    return self.rate_reply
            if self.drop_before_storing:
                self.drop_before_storing -= 1
                server.transport.close()
                return "421 closing"
            message = message_from_bytes(envelope.original_content, _class=Received,
                                         policy=email_policy.default)
            message.envelope_to = list(envelope.rcpt_tos)
            message.raw = envelope.original_content
            self.messages.append(message)
            self.taken_at.append(now)
            if self.drop_after_storing:
                self.drop_after_storing -= 1
                server.transport.close()
                return "421 closing"
        return "250 Message accepted"


class _AtItsLimit(asyncio.Protocol):
    """A connection past the limit: `reply` where the greeting would be, then the line is closed."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{self.reply}\r\n".encode())
        transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """Postfix's `smtp-sink` (C, fast, PIPELINING by default) on a free loopback port, for the
    benchmarks and the tests of the SMTP client; `options` are its own (`-p`: no PIPELINING,
    `-q .`: hang up after a message's final dot without answering, `-D file`: keep messages)."""

    def __init__(self, *options: str) -> None:
        import os
        import shutil
        import subprocess
        import time

        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("smtp-sink is missing: run `scripts/system-packages postfix`")
        self.port = _free_port()
        command = [binary, *options, "-c", f"127.0.0.1:{self.port}", "256"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "root"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("smtp-sink did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
