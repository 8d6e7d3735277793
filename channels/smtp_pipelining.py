"""SMTP PIPELINING (RFC 2920): one round trip per message instead of four.

Sent one command at a time, a message costs four round trips (MAIL, RCPT, DATA, the message);
smtplib waits for each answer. A server that offers PIPELINING lets the client send MAIL,
RCPT and DATA together, and the end of one message together with the next one's MAIL, RCPT
and DATA, so each message costs one round trip. Against a relay 2 ms away that is the
difference between about 125 and about 500 messages a second per connection.

This module is only that client loop, over a connection smtplib has already opened, secured
and logged into (`smtplib.SMTP.send` and `getreply`), so TLS, AUTH and EHLO stay smtplib's.
It keeps the promise the email channel makes: a message's text is sent only after the result
of the previous message on this connection has been handed to `result` (which returns once it
is recorded), so a crash leaves at most one message per connection sent but unrecorded. Only
the next envelope (MAIL, RCPT, DATA: nothing a recipient sees) travels ahead of that result.

What the server answers is kept per message: a refused MAIL or RCPT fails that message alone
(RSET clears the transaction before the next one); a dropped connection raises `Lost`, which
says where to start again on a new connection and whether a message is in doubt.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: A line starting with "." is sent as ".." (RFC 5321 §4.5.2): the server takes it off.
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Refusal:
    """What the server said when it did not accept a message, and at which command."""

    code: int
    text: str
    #: "MAIL" (the sender), "RCPT" (the recipient), "DATA" or "message" (the text itself).
    stage: str


class Lost(Exception, Generic[T]):
    """The connection dropped (or the server said 421, closing). Start again at `resume_at` on
    a new connection; `in_doubt` is the message whose text was sent but whose answer never
    came (it may have been delivered), or None."""

    def __init__(self, cause: BaseException | str, resume_at: int, in_doubt: T | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.resume_at = resume_at
        self.in_doubt = in_doubt


def dot_stuffed(data: bytes) -> bytes:
    """The message as it goes after DATA: CRLF lines, leading dots doubled, ending in CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data)


def envelope(sender: str, address: str, options: Sequence[str], *, reset: bool = False) -> bytes:
    """MAIL, RCPT and DATA for one message, sent together (RSET first after a failed one)."""
    extra = "".join(f" {o}" for o in options)
    commands = f"MAIL FROM:<{sender}>{extra}\r\nRCPT TO:<{address}>\r\nDATA\r\n"
    if reset:
        commands = "RSET\r\n" + commands
    return commands.encode("utf-8" if "SMTPUTF8" in options else "ascii")


def send_pipelined(
    connection: smtplib.SMTP, sender: str, items: Sequence[T], start: int, *,
    address: Callable[[T], str], options: Callable[[T], Sequence[str]], data: Callable[[T], bytes],
    result: Callable[[T, Refusal | None], None],
) -> None:
    """Send `items[start:]` on `connection`, one round trip each; `result(item, None)` when the
    server accepted an item, `result(item, Refusal)` when it did not. Raises `Lost` if the
    connection drops; whatever `result` raises stops the loop at once (nothing more is sent)."""
    if start >= len(items):
        return
    index, reset = start, False
    _write(connection, envelope(sender, address(items[index]), options(items[index])), index, None)
    while True:
        item = items[index]
        replies = _replies(connection, 4 if reset else 3, index, None)
        if reset:
            replies = replies[1:]  # RSET's answer: the transaction before is cleared
        (mail, mail_text), (rcpt, rcpt_text), (go, go_text) = replies
        following = index + 1 if index + 1 < len(items) else None
        refusal = (Refusal(mail, mail_text, "MAIL") if mail != 250
                   else Refusal(rcpt, rcpt_text, "RCPT") if rcpt not in (250, 251)
                   else None if go == 354 else Refusal(go, go_text, "DATA"))
        end = 0
        # After a refused MAIL or RCPT the transaction is cleared (RSET) before the next one.
        reset = refusal is not None
        if go == 354:
            # DATA accepted (even after a refused sender or recipient, by some servers): send the
            # text, or end an empty message that has nobody to go to; the next envelope rides along.
            text = dot_stuffed(data(item)) if refusal is None else b""
            doubt = item if refusal is None else None
            ahead = b""
            if following is not None:
                nxt = items[following]
                ahead = envelope(sender, address(nxt), options(nxt), reset=reset)
            _write(connection, text + b".\r\n" + ahead, index, doubt)
            ((end, end_text),) = _replies(connection, 1, index, doubt)
            if refusal is None and end != 250:
                refusal = Refusal(end, end_text, "message")
        elif following is not None:  # nothing went ahead: the next envelope goes now
            nxt = items[following]
            _write(connection, envelope(sender, address(nxt), options(nxt), reset=True), following, None)
            reset = True
        result(item, refusal)
        if 421 in (mail, rcpt, go, end):  # the server is going away: the rest needs a new connection
            raise Lost("the server closed the connection (421)", index + 1, None)
        if following is None:
            return
        index = following


def _write(connection: smtplib.SMTP, payload: bytes, index: int, in_doubt: object) -> None:
    try:
        connection.send(payload)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise Lost(exc, index + 1 if in_doubt is not None else index, in_doubt) from None


def _replies(connection: smtplib.SMTP, count: int, index: int, in_doubt: object) -> list[tuple[int, str]]:
    out = []
    try:
        for _ in range(count):
            code, text = connection.getreply()
            out.append((code, text.decode("utf-8", "replace")))
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise Lost(exc, index + 1 if in_doubt is not None else index, in_doubt) from None
    return out
