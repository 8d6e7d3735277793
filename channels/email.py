"""Email subscribers: one personal message each, threaded per incident, fast.

Every subscriber gets their own message (their unsubscribe link is personal, RFC 8058), in
their language, as `multipart/alternative` text and HTML with the statement link in both.
Later emails about an incident carry `In-Reply-To` and `References` naming that subscriber's
first email about it, so mail programs show one conversation per incident.

Building an `EmailMessage` per recipient costs milliseconds; a list of 100,000 would take
minutes. So each (update × locale) is built once, with the email library, around
placeholders, and serialised once; each recipient's copy is that byte string with their
address, Message-ID, thread headers and token substituted. `connections` SMTP connections
send in parallel. A refused recipient fails alone; a dropped connection is reopened and the
batch goes on (that recipient is tried again in the next round).

Message-IDs are derived from the update and the subscriber, so a message re-sent after a
crash carries the same Message-ID as the copy that may have gone out, and mail programs that
de-duplicate by Message-ID show it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import secrets
import smtplib
import ssl
import textwrap
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from pydantic import Field, ValidationInfo, field_validator

from broadcaster import defaults
from broadcaster.channels.base import (
    AudienceChannel,
    ChannelContext,
    ChannelSettings,
    ChannelSpec,
    Post,
    Recipient,
    Report,
    StaffNotices,
    tidy,
)
from broadcaster.channels.smtp_pipelining import (
    Lane,
    Lost,
    Pace,
    Refusal,
    Result,
    conversation,
    converse,
    dot_stuffed,
)
from broadcaster.errors import DeliveryError, InputError, PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt
from broadcaster.settings import resolve_path

if TYPE_CHECKING:
    from datetime import date

    from broadcaster.render import Page

#: Placeholders in the message built once per (update × locale): ASCII, unbreakable, and
#: never folded or encoded by the email library (headers are written without folding). Each
#: process draws its own, so no message text can contain one and have it personalised.
_NONCE = secrets.token_hex(8)
TO = f"rcpt-{_NONCE}@placeholder.invalid"
MESSAGE_ID = f"<message-{_NONCE}@placeholder.invalid>"
THREAD = f"<thread-{_NONCE}@placeholder.invalid>"
TOKEN = f"BROADCASTER-TOKEN-{_NONCE}"
THREAD_HEADERS = f"In-Reply-To: {THREAD}\r\nReferences: {THREAD}\r\n".encode()
#: What relays say when a client sends faster than they take (Amazon SES: "454 Throttling
#: failure: Maximum sending rate exceeded"; Postfix: "450 4.7.1 Error: too much mail from …";
#: Exchange Online: "… submission rate … exceeded"). A daily quota is not a rate, though SES
#: words it the same way ("454 Throttling failure: Daily message quota exceeded"): pacing does
#: not help it, so it is left out.
_TOO_FAST = re.compile(r"^(?!.*quota).*(throttl|\brate\b|too much mail|too many messages)",
                       re.IGNORECASE | re.DOTALL)
#: Relays known to limit how fast one client sends, by host name: what they take, and what
#: `rate` to set. Said before sending when `rate` is unset (`readiness`): unpaced, a list
#: goes at full speed until the relay refuses, and what it refuses waits for another round.
RATE_LIMITED_RELAYS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com$", re.IGNORECASE),
     "Amazon SES takes at most your account's maximum send rate a second (the SES console "
     "shows it) and refuses the rest with 454 Throttling failure: set [channels.email] rate to it"),
    (re.compile(r"^(smtp\.office365\.com|smtp-mail\.outlook\.com)$", re.IGNORECASE),
     "Exchange Online takes 30 messages a minute from a mailbox, and 10,000 recipients a day: "
     "set [channels.email] rate = 0.5 (a longer list needs a sender made for bulk mail)"),
)
#: SMTP's hard limit is 998 octets a line; text is wrapped well below it.
LINE_LIMIT = 900
#: Headers as they are: no folding, so no placeholder is ever split or encoded.
POLICY = email_policy.SMTP.clone(max_line_length=0)


class EmailSettings(ChannelSettings):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    #: From: header, "Name <address>".
    sender: str = "Status <status@example.com>"
    #: CSV (email,locale,components,regions) that `broadcaster subscribers import` reads by default.
    subscribers: Path = Field(Path("subscribers.csv"), validate_default=True)
    #: SMTP connections sending in parallel: as many as Postfix opens to one destination (its
    #: default_destination_concurrency_limit is 20); fewer are used if the relay takes fewer.
    connections: int = Field(16, ge=1, le=64)
    #: Messages a second the relay takes from this sender, if it limits that (Amazon SES: the
    #: account's maximum send rate; Exchange Online: 0.5, thirty a minute). The texts are then
    #: spaced evenly over every connection, and no more connections are opened than it takes a
    #: second. Unset: as fast as the relay answers until it puts messages off for coming too
    #: fast, then at what it is measured to take (`Pace.heard`).
    rate: float | None = Field(None, gt=0, allow_inf_nan=False)
    #: The one-click unsubscribe URL; {token} is the subscriber's. Default:
    #: {site.base_url}/unsubscribe/{token} (served by `broadcaster serve`).
    unsubscribe_url: str | None = None
    #: The "manage your subscription" page; {token} is the subscriber's. Default:
    #: {site.base_url}/preferences/{token} (served by `broadcaster serve`).
    preferences_url: str | None = None
    #: The mailbox for mailto: unsubscribe requests (default: the sender's address).
    unsubscribe_mailto: str | None = None
    #: A CA bundle to trust for starttls/tls (default: the system's).
    ca_file: Path | None = None
    #: Tell Ana@example.com from ana@example.com (no common mailbox provider does).
    case_sensitive_addresses: bool = False

    @field_validator("subscribers", "ca_file")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info) if value is not None else None

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        _name, address = parseaddr(value)
        if "@" not in address:
            raise ValueError(f"{value!r} is not an address like 'Example Status <status@example.com>'")
        from broadcaster.addresses import normalize_address

        try:
            normalize_address(address)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("unsubscribe_url", "preferences_url")
    @classmethod
    def _unsubscribe(cls, value: str | None) -> str | None:
        if value is not None and (not re.match(r"^https://[^/\s]+", value) or value.count("{token}") != 1):
            raise ValueError("must be an https:// URL containing {token} once (the link carries a secret; "
                             "RFC 8058 requires HTTPS for unsubscribing)")
        return value


class EmailChannel(AudienceChannel, StaffNotices):
    spec = ChannelSpec(
        name="email",
        summary="one personal email per subscriber who follows the incident, in their language",
        settings=EmailSettings,
        secrets={"username": "BROADCASTER_SMTP_USERNAME", "password": "BROADCASTER_SMTP_PASSWORD"},
        secrets_required=False,
    )
    settings: EmailSettings

    def __init__(self, settings: EmailSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        #: Connections kept open from one batch to the next (each batch would otherwise open
        #: and log in again: a TLS handshake and AUTH per connection against a real relay).
        self._kept: list[smtplib.SMTP] = []
        self._kept_lock = threading.Lock()
        #: Each post's prepared message, built once per fan-out rather than once per batch (the
        #: email library's header parsing took a tenth of a fan-out's Python time, batch by batch).
        self._prepared: dict[tuple[str, str, str | None, str, str | None], PreparedMessage] = {}
        #: Spaces the messages' texts at `rate` a second, across batches and rounds; without
        #: `rate`, at what the relay takes once it puts messages off for coming too fast.
        self._pace = Pace(settings.rate)
        #: How many connections the next open asks for. Lowered when the server refused some
        #: (e.g. 421 "too many connections"), then raised again step by step (`_took_fewer`),
        #: so a refusal that passes does not slow the rest of a long list.
        self._taken = self._most()
        self._step = 1
        #: Messages the relay put off for coming too fast in this fan-out, and its last words.
        self._throttled: tuple[int, str] = (0, "")
        #: Whether the pace slowed in this fan-out because the relay put messages off.
        self._slowed = False
        #: The fewest connections a server took in this fan-out, out of how many, and why it
        #: refused the others: what the person hears of afterwards (`said`).
        self._fewest: tuple[int, int, DeliveryError] | None = None

    def compose(self, page: Page) -> Post:
        extra = {"unsubscribe_url": self.unsubscribe_url(TOKEN),
                 "preferences_url": self.preferences_url(TOKEN)}
        text = _wrap(tidy(page.render(page.kind, **extra)))
        html_page = replace(page, extension="html")
        html = _break_long_lines(html_page.render(page.kind, **extra))
        subject = " ".join(page.render("subject").split())
        return Post(text=text, link=page.statement_url, html=html, subject=subject,
                    update_id=page.update.id, locale=page.locale, personal={TOKEN: "{token}"})

    def readiness(self, today: date) -> tuple[list[str], list[str]]:
        """A relay known to limit how fast a client sends, with no `rate` set: say what to set."""
        if self.settings.rate is None:
            for host, advice in RATE_LIMITED_RELAYS:
                if host.match(self.settings.host):
                    return [], [f"{self.settings.host}: {advice}"]
        return [], []

    def unsubscribe_url(self, token: str) -> str:
        template = self.settings.unsubscribe_url or (
            self.context.settings.site.base_url.rstrip("/") + "/unsubscribe/{token}"
        )
        return template.replace("{token}", token)

    def preferences_url(self, token: str) -> str:
        template = self.settings.preferences_url or (
            self.context.settings.site.base_url.rstrip("/") + "/preferences/{token}"
        )
        return template.replace("{token}", token)

    # -- sending ---------------------------------------------------------------------------

    def send_batch(self, post: Post, recipients: Sequence[Recipient], report: Report) -> None:
        """Send to `recipients` over `connections` connections, all driven from this thread.

        Pipelined (one round trip per message) when the server offers PIPELINING, one command
        at a time when it does not. The results of every connection that answered go to
        `report` together, and each of those connections sends its next message's text only
        once `report` has returned (the results are recorded); whatever `report` raises stops
        every connection at once, so nothing is sent that the core cannot record. A dropped
        connection is reopened and its share goes on from where it stopped.

        A server that refuses some of the connections (421 "too many connections") gets the
        batch over those it took, a slice at a time (`SMTP_RAMP_SLICE` messages a connection),
        asking for more between slices (`_took_fewer`), until it takes all of `connections` or
        refuses again (its limit: the rest of the batch goes in one piece).
        """
        key = (post.update_id, post.locale, post.subject, post.text, post.html)
        message = self._prepared.get(key) or self._prepared.setdefault(key, PreparedMessage.build(post, self))
        todo, ramping, refused = recipients, False, False
        while todo:
            self._taken = min(self._taken, self._most())  # the pace may have slowed
            asked = min(self._taken, len(todo))
            opened, refusals = self._open_many(asked)
            if not opened:  # none at all: everyone is told why (a transient reason: another round)
                report([(r, refusals[0]) for r in todo])
                return
            if refusals:  # a server at its limit, or busy for a moment: slices while it grows back
                self._took_fewer(len(opened), asked, refusals[0])
                ramping, refused = not refused, True  # refused again in this batch: its limit
            elif asked == self._taken < self._most():  # every one it asked for
                self._ask_for_more()
            else:
                ramping = False
            size = len(opened) * defaults.SMTP_RAMP_SLICE if ramping else len(todo)
            self._send_over(message, todo[:size], opened, report)
            todo = todo[size:]

    def _send_over(self, message: PreparedMessage, recipients: Sequence[Recipient], opened: list[_Opened],
                   report: Report) -> None:
        """`recipients` split over the `opened` connections, driven together (`converse`); the
        connections are kept for the next batch unless the server said more than it was asked."""
        receipts: dict[int, Receipt] = {}
        shares: dict[Lane, _Share] = {}

        def data(r: Recipient) -> bytes:
            data, receipts[r.delivery_id] = message.personal(r)
            return data

        def lane(share: _Share, position: int, opened: _Opened | None = None) -> Lane | None:
            """A connection for `share` from `position` (`opened`, else one kept or new); None
            if there is none (the rest of the share is reported with why)."""
            try:
                connection, share.reused = opened or self._open()
            except smtplib.SMTPAuthenticationError as exc:
                share.give_up(position, _login_refused(exc))
                return None
            except _Unusable as exc:
                share.give_up(position, exc.error)
                return None
            eight_bit = ["BODY=8BITMIME"] if connection.has_extn("8bitmime") else []
            talk = conversation(connection, message.sender, share.recipients, position,
                                address=lambda r: r.address, options=lambda r: _options(r, eight_bit),
                                data=data, reset=share.reused)
            opened = Lane(connection, talk)
            shares[opened] = share
            share.position = position
            return opened

        def record(results: list[Result]) -> None:
            """Each result to `report`; what the relay took and put off to the pace, first."""
            before = self._throttled[0]  # `_outcome` counts those put off for coming too fast
            outcomes = [(r.item, self._outcome(r.item, r.refusal, receipts)) for r in results]
            taken = sum(1 for r in results if r.refusal is None)
            if self._pace.heard(time.monotonic(), taken, self._throttled[0] - before):
                self._slowed = True
            report(outcomes)  # type: ignore[arg-type]

        def lost(dropped: Lane, why: Lost) -> Lane | None:
            share = shares.pop(dropped)
            _close(dropped.connection)
            if why.in_doubt is not None:
                doubt = TransientDeliveryError(f"SMTP connection lost: {_describe(why.cause)}")
                report([(why.in_doubt, doubt)])
            # A server that drops every connection before a message gets through: give up on
            # the rest for this round (they are retried) rather than reconnect for ever.
            # (A kept connection that died while it waited is not the server refusing us.)
            if why.resume_at != share.position:
                share.stalls = 0
            elif not share.reused:
                share.stalls += 1
            if share.stalls >= defaults.SMTP_STALLS:
                share.give_up(why.resume_at, TransientDeliveryError(
                    f"the SMTP server closed {share.stalls} connections in a row before accepting a message"))
                return None
            return lane(share, why.resume_at)

        count = len(opened)
        lanes = [lane(_Share(recipients[i::count], report), 0, opened[i]) for i in range(count)]
        try:
            converse([x for x in lanes if x is not None], record, timeout=self.context.timeout, lost=lost,
                     gather=defaults.GROUP_COMMIT_GATHER, pace=self._pace)
        except BaseException:  # the core refused a report (its ledger is full): stop, keep nothing
            for x in shares:
                _close(x.connection)
            raise
        for x in shares:
            if x.partial or x.replies:  # the server said more than it was asked: do not reuse
                _close(x.connection)
            else:
                self._keep(x.connection)

    def _open_many(self, count: int) -> tuple[list[_Opened], list[DeliveryError]]:
        """`count` connections: those kept from an earlier batch (True), the others opened at
        once (False); and why each that could not be opened was not.

        Opened together because each costs several round trips (the greeting, EHLO, STARTTLS
        and TLS's handshake, EHLO again, AUTH): one after another, 16 connections to a relay
        20 ms away took seconds before the first message went. A bug while opening closes
        whatever did open, so a relay that limits how many one client holds is not left full."""
        with self._kept_lock:
            kept, self._kept = self._kept[:count], self._kept[count:]
        ready = [(c, True) for c in kept if c.sock is not None]  # one closed meanwhile: a new one
        made: list[smtplib.SMTP] = []
        refusals: list[DeliveryError] = []

        def attempt(_: int) -> None:
            try:
                made.append(self._connect())
            except smtplib.SMTPAuthenticationError as exc:
                refusals.append(_login_refused(exc))
            except _Unusable as exc:
                refusals.append(exc.error)

        missing = count - len(ready)
        try:
            if missing <= 1:
                for n in range(missing):
                    attempt(n)
            else:
                with ThreadPoolExecutor(max_workers=missing, thread_name_prefix="smtp-open") as pool:
                    list(pool.map(attempt, range(missing)))
        except BaseException:
            for connection in [*made, *(c for c, _ in ready)]:
                _close(connection)
            raise
        return [*ready, *((c, False) for c in made)], refusals

    def _took_fewer(self, took: int, asked: int, why: DeliveryError) -> None:
        """The server took `took` of the `asked` connections: the next open (the batch's next
        slice, or the next batch) asks for one more, and each that gets all it asks for asks for
        more again (Postfix lowers its concurrency to a destination the same way, and raises it
        as deliveries succeed). After a refusal that passed (a relay restarting) the list is
        soon back on all of them rather than going on over the few that opened; at a hard limit
        it costs two refused connections a batch (`send_batch`)."""
        self._taken, self._step = took, 1
        self._ask_for_more()
        if self._fewest is None or took < self._fewest[0]:
            self._fewest = (took, asked, why)

    def _ask_for_more(self) -> None:
        """Ask for more next time: one, then two, four and so on more (from 1 back to 16 in
        four steps), up to `connections`."""
        self._taken = min(self._most(), self._taken + self._step)
        self._step *= 2

    def _most(self) -> int:
        """The most connections worth opening: no more than the messages the relay takes a
        second, if the pace says (each connection then still sends about once a second)."""
        rate = self._pace.rate
        return min(self.settings.connections, max(1, math.ceil(rate))) if rate else self.settings.connections

    @property
    def rate(self) -> float | None:
        return self.settings.rate

    def shared_by(self, senders: int, rank: int) -> None:
        """The relay's rate is every sender's together (`Pace.share`)."""
        self._pace.share(senders, rank, time.monotonic())

    def said(self) -> list[str]:
        """Once a fan-out: the fewest connections taken, if the relay refused some, and the
        messages it put off for coming too fast; each with what to set."""
        lines = []
        if self._fewest is not None:
            (took, asked, why), self._fewest = self._fewest, None
            lines.append(f"only {took} of the {asked} SMTP connections asked for were opened; the others: "
                         f"{why}. The list went over those it took, asking for more as it went: set "
                         f"[channels.email] connections = {took} if that is the relay's limit")
        (count, reply), self._throttled = self._throttled, (0, "")
        slowed, self._slowed = self._slowed, False
        if count:
            rate = self.settings.rate
            what = f"lower [channels.email] rate (now {rate:g})" if rate else "set [channels.email] rate"
            slowing = "sending slowed to what it took, and " if slowed else ""
            went = (f"{slowing}they {'went' if slowing else 'go'} round again or are left for `retry`: "
                    f"{what} to the messages a second it takes from this sender")
            lines.append(f"the SMTP server put off {count} message{'s' if count > 1 else ''} for coming too "
                         f"fast ({reply}); {went}")
        return lines

    def _outcome(self, recipient: Recipient, refusal: Refusal | None,
                 receipts: dict[int, Receipt]) -> Receipt | DeliveryError:
        receipt = receipts.pop(recipient.delivery_id, None)
        if refusal is None and receipt is not None:
            return receipt
        if refusal is None:  # accepted, yet no text went: cannot happen; never call it sent
            return TransientDeliveryError("the SMTP server accepted a message that was not sent")
        what = {"MAIL": "refused the sender", "RCPT": f"refused {recipient.address}",
                "DATA": "refused the message", "message": "refused the message"}[refusal.stage]
        too_fast = 400 <= refusal.code < 500 and bool(_TOO_FAST.search(refusal.text))
        if too_fast:
            self._throttled = (self._throttled[0] + 1, f"{refusal.code} {refusal.text}")
        return _smtp_error(refusal.code, refusal.text, what, too_fast=too_fast)

    def send_notice(self, to: Sequence[str], subject: str, text: str) -> None:
        """One plain message to staff (tick's reminders), through the same server and login."""
        _, sender = parseaddr(self.settings.sender)
        message = EmailMessage(policy=email_policy.SMTP)
        message["From"] = self.settings.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(_wrap(text), charset="utf-8")
        try:
            connection = self._connect()
        except _Unusable as exc:
            raise exc.error from None
        try:
            connection.send_message(message, from_addr=sender, to_addrs=list(to))
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError(f"the SMTP server refused {', '.join(exc.recipients)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(f"SMTP: {_describe(exc)}") from None
        finally:
            _quit(connection)

    def _open(self) -> tuple[smtplib.SMTP, bool]:
        """A connection kept from an earlier batch (True: its conversation starts with RSET,
        which clears a transaction a refused last message may have left open and shows the
        connection still answers; sent with the first envelope, not a round trip of its own),
        else a new one (False)."""
        with self._kept_lock:
            kept = self._kept.pop() if self._kept else None
        if kept is not None and kept.sock is not None:
            return kept, True
        return self._connect(), False

    def _keep(self, connection: smtplib.SMTP) -> None:
        with self._kept_lock:
            self._kept.append(connection)

    def batches_done(self) -> None:
        self._prepared.clear()
        self._taken, self._step = self._most(), 1  # a worker asks for all next time
        with self._kept_lock:
            kept, self._kept = self._kept, []
        for connection in kept:
            _quit(connection)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        timeout = self.context.timeout
        try:
            if s.security == "tls":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout,
                                                            context=self._tls())
            else:
                connection = smtplib.SMTP(s.host, s.port, timeout=timeout)
            if s.security == "starttls":
                connection.ehlo()
                if not connection.has_extn("starttls"):
                    raise _Unusable(PermanentDeliveryError(
                        f"{s.host}:{s.port} does not offer STARTTLS; set security = \"tls\" or \"none\""))
                connection.starttls(context=self._tls())
            connection.ehlo_or_helo_if_needed()
            username = self.context.secrets.get("BROADCASTER_SMTP_USERNAME")
            password = self.context.secrets.get("BROADCASTER_SMTP_PASSWORD")
            if username and password:
                connection.login(username.get_secret_value(), password.get_secret_value())
            return connection
        except ssl.SSLError as exc:
            error = PermanentDeliveryError(f"TLS with {s.host}:{s.port} failed: {exc.reason}")
            raise _Unusable(error) from None
        except smtplib.SMTPAuthenticationError:
            raise
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as exc:
            # An answer rather than silence: 421 where the greeting goes (a relay at its limit
            # of connections), a refused EHLO. 4xx is tried again, 5xx is not.
            error = _smtp_error(exc.smtp_code, exc.smtp_error, "turned the connection away")
            raise _Unusable(error) from None
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _Unusable(TransientDeliveryError(
                f"cannot reach the SMTP server {s.host}:{s.port}: {_describe(exc)}")) from None

    def _tls(self) -> ssl.SSLContext:
        ca_file = self.settings.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


#: A connection ready to send, and whether it was kept from an earlier batch.
_Opened = tuple[smtplib.SMTP, bool]
#: The placeholders of the personal parts, in the order `PreparedMessage.personal` gives their values.
_PERSONAL = (TO.encode(), MESSAGE_ID.encode(), THREAD_HEADERS, TOKEN.encode())
#: The personal parts of a prepared message, found in one pass.
_SLOTS = re.compile(b"(" + b"|".join(re.escape(p) for p in _PERSONAL) + b")")


@dataclass(frozen=True)
class PreparedMessage:
    """One (update × locale) message as bytes, with `%s` where each personal part goes.

    A recipient's copy is the template `%`-formatted with their values (its own `%` signs are
    doubled): one pass over a few kilobytes in C, where cutting the message at the placeholders
    and joining the pieces with the values between cost a list and its slots in Python (timed
    alone, a copy with its Message-ID and receipt: 1.86–1.97 µs joined, 1.62–1.77 formatted).
    """

    template: bytes
    #: Which personal part fills each `%s`, in order (indexes into `_PERSONAL`).
    slots: tuple[int, ...]
    sender: str
    update_id: str
    domain: str

    @classmethod
    def build(cls, post: Post, channel: EmailChannel) -> PreparedMessage:
        settings = channel.settings
        _, sender_address = parseaddr(settings.sender)
        domain = sender_address.rsplit("@", 1)[1]
        mailto = settings.unsubscribe_mailto or sender_address
        message = EmailMessage(policy=POLICY)
        message["From"] = settings.sender
        message["To"] = TO
        message["Subject"] = post.subject or ""
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = MESSAGE_ID
        message["In-Reply-To"] = THREAD
        message["References"] = THREAD
        message["List-Unsubscribe"] = (
            f"<{channel.unsubscribe_url(TOKEN)}>, <mailto:{mailto}?subject={quote('unsubscribe ' + TOKEN)}>"
        )
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Auto-Submitted"] = "auto-generated"
        message["X-Auto-Response-Suppress"] = "All"
        message.set_content(post.text, charset="utf-8", cte="8bit")
        message.add_alternative(post.html or "", subtype="html", charset="utf-8", cte="8bit")
        if post.locale:  # RFC 3282, for readers and translators (after set_content, which drops Content-*)
            message["Content-Language"] = post.locale
        # Dot-stuffed here, once, not per copy: no personal value starts a line (the address,
        # Message-ID and token sit inside header lines and URLs; the thread headers start with
        # "In-Reply-To"), so stuffing the template stuffs every copy.
        data = dot_stuffed(_fold_subject(message.as_bytes(), post.subject or ""))
        for placeholder in _PERSONAL:
            if placeholder not in data:  # would mean a personal part went missing or was folded
                raise RuntimeError(f"the prepared email lost its placeholder {placeholder!r}")
        parts = _SLOTS.split(data)  # fixed bytes and placeholders, in turn
        template = b"%s".join(fixed.replace(b"%", b"%%") for fixed in parts[0::2])
        slots = tuple(_PERSONAL.index(placeholder) for placeholder in parts[1::2])
        return cls(template, slots, sender_address, post.update_id, domain)

    def message_id(self, recipient: Recipient) -> str:
        """Stable for (update, subscriber): a re-send after a crash carries the same id."""
        digest = hashlib.sha256(f"{self.update_id}/{recipient.token}".encode()).hexdigest()[:24]
        return f"<{self.update_id}.{digest}@{self.domain}>"

    def personal(self, recipient: Recipient) -> tuple[bytes, Receipt]:
        """The recipient's copy as it goes after DATA (dot-stuffed, CRLF), and the receipt
        that records its Message-ID."""
        message_id = self.message_id(recipient)
        first = recipient.first.remote_id if recipient.first else None
        values = (  # in the order of _PERSONAL
            # The address was validated and normalised on import: an addr-spec is a valid To:.
            recipient.address.encode(),
            message_id.encode(),
            f"In-Reply-To: {first}\r\nReferences: {first}\r\n".encode() if first else b"",
            recipient.token.encode(),
        )
        data = self.template % tuple([values[slot] for slot in self.slots])
        return data, Receipt(remote_id=message_id)


def _options(recipient: Recipient, eight_bit: list[str]) -> list[str]:
    return eight_bit if recipient.address.isascii() else [*eight_bit, "SMTPUTF8"]


class _Share:
    """One connection's share of a batch: where it has got to, and how many connections in a
    row were lost before a message got through."""

    def __init__(self, recipients: Sequence[Recipient], report: Report) -> None:
        self.recipients = recipients
        self.report = report
        self.position = 0
        self.stalls = 0
        self.reused = False  # the lane's connection was kept from an earlier batch

    def give_up(self, position: int, error: DeliveryError) -> None:
        """No connection for the rest: each is reported with `error` (a transient one is retried)."""
        self.report([(r, error) for r in self.recipients[position:]])


class _Unusable(Exception):
    """The connection cannot be made or used at all: every remaining recipient gets `error`."""

    def __init__(self, error: PermanentDeliveryError | TransientDeliveryError) -> None:
        super().__init__(str(error))
        self.error = error


def _smtp_error(code: int, said: bytes | str, what: str, *,
                too_fast: bool = False) -> PermanentDeliveryError | TransientDeliveryError:
    text = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
    message = f"the SMTP server {what}: {code} {text}"
    if 500 <= code < 600:
        return PermanentDeliveryError(message)
    return TransientDeliveryError(message, too_fast=too_fast)


def _login_refused(exc: smtplib.SMTPAuthenticationError) -> DeliveryError:
    """A refused login is the person's to fix (5xx), unless the server says to come back later
    (454 "too many login attempts", a 4xx): that is tried again, not failed."""
    if 400 <= exc.smtp_code < 500:
        return _smtp_error(exc.smtp_code, exc.smtp_error, "put off the login")
    return PermanentDeliveryError(f"the SMTP server refused the login ({exc.smtp_code}): check "
                                  "BROADCASTER_SMTP_USERNAME and BROADCASTER_SMTP_PASSWORD")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _close(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()


def _quit(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        try:
            connection.quit()
        except (TimeoutError, smtplib.SMTPException, OSError):
            _close(connection)


def _fold_subject(data: bytes, subject: str) -> bytes:
    """The message with its Subject folded as RFC 5322 and 2047 say (encoded words, lines of
    at most 78): the message is built unfolded so its placeholders survive, and a long
    non-ASCII subject (240 CJK characters, 180 emoji) unfolded would exceed SMTP's 998 octets
    per line and be refused by the server."""
    start = data.index(b"\r\nSubject: ") + 2
    end = data.index(b"\r\n", start) + 2
    folded = email_policy.SMTP.fold_binary("Subject", email_policy.SMTP.header_factory("Subject", subject))
    return data[:start] + folded + data[end:]


def _wrap(text: str) -> str:
    """Plain text at 78 columns (RFC 5322's advice); long words and URLs are kept whole."""
    lines = []
    for line in text.splitlines():
        lines += textwrap.wrap(line, 78, break_long_words=False, break_on_hyphens=False) or [""]
    return _break_long_lines("\n".join(lines))


def _break_long_lines(text: str) -> str:
    """Keep every line under SMTP's limit, breaking at a space (HTML does not mind)."""
    out = []
    for line in text.splitlines():
        while len(line) > LINE_LIMIT:
            cut = line.rfind(" ", 0, LINE_LIMIT)
            if cut <= 0:
                raise InputError(f"a line of the email has {len(line)} characters without a space; "
                                 "SMTP allows 998")
            out.append(line[:cut])
            line = line[cut + 1:]
        out.append(line)
    return "\n".join(out) + "\n"
