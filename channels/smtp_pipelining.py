"""SMTP over many connections from one thread, pipelined (RFC 2920) when the server allows.

Sent one command at a time, a message costs four round trips (MAIL, RCPT, DATA, the message).
A server that offers PIPELINING lets the client send MAIL, RCPT and DATA together, and the end
of one message together with the next one's MAIL, RCPT and DATA, so each message costs one
round trip. Against a relay 2 ms away that is the difference between about 125 and about 500
messages a second per connection.

The connections are smtplib's, already opened, secured and logged into (TLS, AUTH and EHLO stay
smtplib's); this module holds each one's conversation and drives them all from one thread,
reading whichever connection has answered. One thread rather than one per connection because
of the promise the email channel makes: a message's text is sent only after the result of the
previous message on its connection is recorded, so a crash leaves at most one message per
connection sent but unrecorded. With a thread per connection each recording was a hand-off
between threads and the results of four connections rarely met in one write; here the results
of every connection that answered go to `record` together, one write for all of them, and
each connection's next text goes out as soon as that write returns. Only the next envelope
(MAIL, RCPT, DATA: nothing a recipient sees) travels ahead of its result.

Each conversation is a generator that says what it needs (`Write`, `Read`, `Result`), so the
order of an SMTP transaction reads as straight code; `converse` does the waiting. What the
server answers is kept per message: a refused MAIL or RCPT fails that message alone (RSET
clears the transaction before the next one); a dropped connection is a `Lost`, which says
where to start again on a new connection and whether a message is in doubt.
"""

from __future__ import annotations

import math
import re
import selectors
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

#: A line starting with "." is sent as ".." (RFC 5321 §4.5.2): the server takes it off.
_LEADING_DOT = re.compile(rb"(?m)^\.")
#: A reply line longer than this is not SMTP (smtplib allows 8,192; RFC 5321 says 512).
_LONGEST_LINE = 65536


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


class Write(NamedTuple):
    """Send `payload`; if that fails, items[index] on are still to do (`in_doubt` sent)."""

    payload: bytes
    index: int
    in_doubt: object


class Read(NamedTuple):
    """Wait for `count` replies: the conversation is resumed with [(code, text), ...]."""

    count: int
    index: int
    in_doubt: object


class Result(NamedTuple):
    """`item` is settled (`refusal` None: accepted). The conversation goes on once it is recorded."""

    item: object
    refusal: Refusal | None


Conversation = Generator["Write | Read | Result", "list[tuple[int, str]] | None", None]


def dot_stuffed(data: bytes) -> bytes:
    """The message as it goes after DATA: CRLF lines, leading dots doubled, ending in CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data)


def _command(text: str, options: Sequence[str]) -> bytes:
    return text.encode("utf-8" if "SMTPUTF8" in options else "ascii")


def _mail_from(sender: str, options: Sequence[str]) -> str:
    return f"MAIL FROM:<{sender}>{''.join(f' {o}' for o in options)}\r\n"


def envelope(sender: str, address: str, options: Sequence[str], *, reset: bool = False) -> bytes:
    """MAIL, RCPT and DATA for one message, sent together (RSET first after a failed one)."""
    commands = f"{_mail_from(sender, options)}RCPT TO:<{address}>\r\nDATA\r\n"
    return _command("RSET\r\n" + commands if reset else commands, options)


def conversation(
    connection: smtplib.SMTP, sender: str, items: Sequence[T], start: int, *,
    address: Callable[[T], str], options: Callable[[T], Sequence[str]], data: Callable[[T], bytes],
    reset: bool = False,
) -> Conversation:
    """`items[start:]` on `connection`: pipelined if the server offers it, else one command at
    a time (the server's EHLO answer, read by smtplib, says which). `data(item)` is the text as
    it goes after DATA (`dot_stuffed`): stuffing a prepared message once, rather than each
    copy, took an eighth of the sender's time. `reset`: begin with RSET (a connection used
    before, which may hold a transaction a refused message left open)."""
    talk = _pipelined if connection.has_extn("pipelining") else _one_at_a_time
    return talk(sender, items, start, address, options, data, reset)


def _pipelined(sender: str, items: Sequence[T], start: int, address: Callable[[T], str],
               options: Callable[[T], Sequence[str]], data: Callable[[T], bytes],
               reset: bool) -> Conversation:
    """One round trip a message: its text, the dot and the next envelope in one write."""
    if start >= len(items):
        return
    index = start
    yield Write(envelope(sender, address(items[index]), options(items[index]), reset=reset), index, None)
    while True:
        item = items[index]
        replies = yield Read(4 if reset else 3, index, None)
        assert replies is not None
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
            text = data(item) if refusal is None else b""
            doubt = item if refusal is None else None
            ahead = b""
            if following is not None:
                nxt = items[following]
                ahead = envelope(sender, address(nxt), options(nxt), reset=reset)
            yield Write(text + b".\r\n" + ahead, index, doubt)
            answer = yield Read(1, index, doubt)
            assert answer is not None
            ((end, end_text),) = answer
            if refusal is None and end != 250:
                refusal = Refusal(end, end_text, "message")
        elif following is not None:  # nothing went ahead: the next envelope goes now
            nxt = items[following]
            yield Write(envelope(sender, address(nxt), options(nxt), reset=True), following, None)
            reset = True
        yield Result(item, refusal)
        if 421 in (mail, rcpt, go, end):  # the server is going away: the rest needs a new connection
            raise Lost("the server closed the connection (421)", index + 1, None)
        if following is None:
            return
        index = following


def _one_at_a_time(sender: str, items: Sequence[T], start: int, address: Callable[[T], str],
                   options: Callable[[T], Sequence[str]], data: Callable[[T], bytes],
                   reset: bool) -> Conversation:
    """A server without PIPELINING: each command waits for the answer to the one before."""
    if reset and start < len(items):
        yield Write(b"RSET\r\n", start, None)
        yield Read(1, start, None)
    for index in range(start, len(items)):
        item = items[index]
        opts = options(item)
        refusal = None
        codes = []
        steps = ((_mail_from(sender, opts), (250,), "MAIL"),
                 (f"RCPT TO:<{address(item)}>\r\n", (250, 251), "RCPT"),
                 ("DATA\r\n", (354,), "DATA"))
        for command, accepted, stage in steps:
            yield Write(_command(command, opts), index, None)
            answer = yield Read(1, index, None)
            assert answer is not None
            ((code, text),) = answer
            codes.append(code)
            if code not in accepted:
                refusal = Refusal(code, text, stage)
                break
        else:
            yield Write(data(item) + b".\r\n", index, item)
            answer = yield Read(1, index, item)
            assert answer is not None
            ((code, text),) = answer
            codes.append(code)
            if code != 250:
                refusal = Refusal(code, text, "message")
        yield Result(item, refusal)
        if 421 in codes:
            raise Lost("the server closed the connection (421)", index + 1, None)
        if refusal is not None and refusal.stage != "message":
            yield Write(b"RSET\r\n", index + 1, None)  # clear the half-made transaction
            yield Read(1, index + 1, None)


class Pace:
    """Messages spaced evenly, `rate` a second over every connection, for a relay that limits
    how fast one client sends (Amazon SES answers the text of a message over its account's rate
    with 454 "Throttling failure: Maximum sending rate exceeded"; Exchange Online takes 30 a
    minute from a mailbox). Sent faster, the excess is refused and waits a whole round; paced,
    none is. Spaced rather than let through in bursts: a relay that counts by the second sees
    no second with more than `rate`.

    The pace also follows what the relay says (`heard`). Without a rate nothing waits until
    the relay puts messages off for coming too fast; from then on, and with a rate it does not
    take, the pace slows on each refusal to what the relay took since the pace last changed,
    and speeds up again by a tenth after a spell with none (never past a rate that was set). A
    relay that counts by the minute (Postfix's anvil, Exchange) refuses everything for the rest
    of its minute once its burst is spent: the spells between slowings double while refusals go
    on, so that the measure comes to span the relay's own period and find its rate.

    A rate that was set is the relay's, whoever sends (Amazon SES's is the account's): when
    several senders take batches of the channel's lists (`broadcaster worker`s beside the
    command), each is told how many they are and which of them it is (`share`), and goes at
    its share, on moments of the wall clock that interleave with the others' (the relay sees
    one stream spaced 1/`rate` apart, not several whose moments may meet).
    """

    #: The slowest a pace goes: one message a minute (a relay slower than that is a quota,
    #: not a rate, and no spacing of this fan-out's would help).
    SLOWEST = 1 / 60
    #: Where a pace starts that was refused before the relay took anything (its burst spent
    #: by another sender): one a second, then faster by a tenth a spell.
    AFRESH = 1.0
    #: The shortest spell the pace holds before it changes again, in seconds...
    SPELL = 1.0
    #: ...or this many messages' spacing at the pace, if longer.
    SPACINGS = 4
    #: A spell with no refusal, the pace used to the full, speeds it up by this much.
    FASTER = 1.1
    #: Refusals this soon after a change answer texts that went before it (a round trip).
    GRACE = 0.2
    #: How long `counts` goes back, in seconds (`SPACINGS` messages at the slowest pace).
    KEPT = SPACINGS / SLOWEST
    #: Where the wall clock's shared moments are counted from (2023-11-14), so that they are
    #: counted exactly (a float's step at 1.7e9 seconds times a rate is too coarse).
    EPOCH = 1.7e9

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.set = rate  # the rate that was set: the relay's, shared by every sender (`share`)
        self.most = rate  # never faster than this (this sender's share of it), None: no bound
        #: How many send to the relay now and which of them this one is (`share`); the wall
        #: clock (from EPOCH) less the monotonic one, on which their moments interleave (read
        #: again at each `share`, so a clock that NTP moved is followed).
        self.senders, self.rank = 1, 0
        self.wall = self._wall()
        self.interval = 1.0 / rate if rate else 0.0  # 0: nothing waits
        self.next = 0.0  # the earliest moment (time.monotonic) the next message may go
        self.lock = threading.Lock()
        self.taken = 0  # how many messages the relay has taken, in all
        #: `taken` as it was at moments a tenth of a second apart or more (the last `KEPT` s).
        self.counts: deque[tuple[float, int]] = deque()
        #: When the pace last changed and `taken` then (None: nothing heard yet); until when it
        #: holds; how long that spell is; whether the last change was a slowing.
        self.mark: tuple[float, int] | None = None
        self.until = 0.0
        self.spell = self.SPELL
        self.slowing = False
        self.refused = False  # a refusal counted since the last change

    def reserve(self, now: float) -> float:
        """The moment the caller's message may go (`now` or later), taken for it: each moment
        is `interval` after the one before, and never before `now` (no burst after a pause)."""
        with self.lock:
            slot = max(self.next, now)
            if self.senders > 1 and self.set is not None and self.rate == self.most:
                slot = self._placed(slot)
            self.next = slot + self.interval
            return slot

    @classmethod
    def _wall(cls) -> float:
        """The wall clock (from EPOCH) less the monotonic one."""
        return time.time() - cls.EPOCH - time.monotonic()

    def _placed(self, moment: float) -> float:
        """The first of this sender's moments at or after `moment`: of the relay's moments,
        1/`set` apart on the wall clock, every `senders`th from the `rank`th."""
        assert self.set is not None
        step = 1.0 / self.set
        k = math.ceil((moment + self.wall) / step - 1e-3)  # one a thousandth of a step early: on it
        k += (self.rank - k) % self.senders
        return k * step - self.wall

    def share(self, senders: int, rank: int, now: float) -> None:
        """`senders` send to the relay now, this one the `rank`th of them (counting from 0):
        the other commands and `worker`s taking batches of the channel's lists. A rate that was
        set is divided among them, and one learnt from the relay (this sender's share of it
        then) is scaled by how their number changed; the new pace holds for a spell."""
        senders = max(1, senders)
        with self.lock:
            self.rank = rank % senders
            self.wall = self._wall()  # as the clock is now (NTP may have moved it)
            if senders == self.senders:
                return
            before, self.senders = self.senders, senders
            if self.rate is None:  # nothing set, nothing learnt: as fast as the relay answers
                return
            at_most = self.set is not None and self.rate == self.most  # not slowed by the relay
            if self.set is not None:
                self.most = self.set / senders
            scaled = max(min(self.rate * before / senders, self.most or math.inf), self.SLOWEST)
            self.rate = self.most if at_most else scaled
            self.interval = 1.0 / self.rate
            self.mark = (now, self.taken)
            self.until = now + max(self.spell, self.SPACINGS * self.interval)

    def heard(self, now: float, taken: int, put_off: int) -> bool:
        """The relay took `taken` messages and put `put_off` off for coming too fast; True if
        the pace slowed.

        The pace holds for a spell after each change; refusals in its first `GRACE` seconds
        answer texts that went before it and are not counted. At the first refusal counted
        (and at the end of a spell that had one) it slows to what the relay took since the
        pace last changed (at least over the last `SPELL`), but to no less than half and no
        more than nine tenths of the old rate. After a spell with none, in which the pace was
        used to the full, it speeds up by `FASTER`, never past a rate that was set."""
        with self.lock:
            self.taken += taken
            counts = self.counts
            if not counts or now - counts[-1][0] >= 0.1:
                counts.append((now, self.taken))
                while len(counts) > 2 and counts[1][0] < now - self.KEPT:
                    counts.popleft()
            if self.mark is None:
                self.mark = (now, 0)
            if put_off and now >= self.mark[0] + (self.GRACE if self.rate is not None else 0.0):
                self.refused = True
            if now < self.until or not (self.refused or self.rate not in (None, self.most)):
                return False
            since = min(self.mark[0], now - self.SPELL)  # at least a spell: the news may be fresh
            before = next((count for at, count in reversed(counts) if at <= since), 0)
            measured = (self.taken - before) / (now - since)
            if self.refused:
                if self.rate is None:  # the first: what it took, or one a second if nothing
                    rate = measured or self.AFRESH
                else:
                    rate = min(0.9 * self.rate, max(measured, self.rate / 2))
                self.spell = min(2 * self.spell, self.KEPT) if self.slowing else self.SPELL
                self.slowing = True
            elif measured >= 0.8 * self.rate:  # limited by the pace, not refused: try faster
                rate = min(self.FASTER * self.rate, self.most or float("inf"))
                self.spell, self.slowing = self.SPELL, False
            else:  # sending slower than the pace anyway: nothing learnt
                self.mark, self.until = (now, self.taken), now + self.SPELL
                return False
            slowed, self.refused = self.refused, False
            self.rate = max(rate, self.SLOWEST)
            self.interval = 1.0 / self.rate
            self.mark = (now, self.taken)
            self.until = now + max(self.spell, self.SPACINGS * self.interval)
            return slowed


class Lane:
    """One connection and the conversation it holds: the replies read so far, and what the
    conversation waits for."""

    def __init__(self, connection: smtplib.SMTP, talk: Conversation) -> None:
        self.connection = connection
        self.talk = talk
        self.replies: deque[tuple[int, str]] = deque()
        self.partial = b""  # the start of a line not ended yet
        self.lines: list[bytes] = []  # the lines of a multi-line reply so far
        self.closed: BaseException | None = None  # why nothing more will come
        self.last = time.monotonic()  # when something was last sent or received
        self.holding = False  # a Result is being recorded: the conversation waits for it
        self.done = False
        self.request: Write | Read | Result | None = None
        #: Spaces the messages' texts, if the relay limits how fast a client sends (`converse`
        #: sets it), and the moment this lane's next text may go (taken from it, not yet used).
        self.pace: Pace | None = None
        self.slot: float | None = None
        self.text_at: float | None = None  # when the text awaiting its answer went
        self.fastest = float("inf")  # the quickest a text has been answered on this connection
        #: When the server had not yet sent what was read last (see `receive`).
        self.quiet_at = 0.0
        if connection.file is None:  # smtplib reads through it; so does this (it may hold bytes)
            connection.file = connection.sock.makefile("rb")

    def fileno(self) -> int:
        return self.connection.sock.fileno()

    def receive(self, quiet_at: float = 0.0) -> None:
        """Read what the server has sent (the selector said it is there) and split it into
        replies; a closed or broken connection is kept in `closed` for when a reply is needed.
        `quiet_at`: when the connection was last seen with nothing to read, so what is read now
        came after it (read after a write, it may have come long before it was read)."""
        file, sock = self.connection.file, self.connection.sock
        try:
            chunk = file.read1(65536)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():  # decrypted, not yet read
                chunk += file.read1(65536)
        except (OSError, ValueError) as exc:
            self.closed = self.closed or exc
            return
        if not chunk:
            self.closed = self.closed or smtplib.SMTPServerDisconnected("the server closed the connection")
            return
        self.last, self.quiet_at = time.monotonic(), quiet_at
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        if len(self.partial) > _LONGEST_LINE:
            too_long = smtplib.SMTPServerDisconnected("the server sent a line of over 64 KiB")
            self.closed = self.closed or too_long
            return
        for line in complete:
            line = line.rstrip(b"\r")
            self.lines.append(line[4:].strip(b" \t"))
            if line[3:4] != b"-":  # the last line of a reply
                try:
                    code = int(line[:3])
                except ValueError:
                    code = -1  # as smtplib says of a reply without a number
                self.replies.append((code, b"\n".join(self.lines).decode("utf-8", "replace")))
                self.lines = []

    def advance(self) -> Result | None:
        """Carry the conversation on as far as the replies in hand allow. A Result when one
        is ready to be recorded (call `recorded` once it is); None when it waits for the
        server, for its `slot` (a message's text, paced), or is done. Raises Lost when the
        connection failed where it mattered."""
        while not self.done and not self.holding:  # holding: `recorded` goes on, nothing else
            request = self.request
            answer: list[tuple[int, str]] | None = None
            if isinstance(request, Read):
                if len(self.replies) < request.count:
                    if self.closed is not None:
                        raise self._lost(self.closed, request)
                    return None
                answer = [self.replies.popleft() for _ in range(request.count)]
            elif isinstance(request, Write):
                if request.in_doubt is not None and self.pace is not None and self.pace.interval:  # a text
                    if self.closed is not None:  # gone while it waited: the text never went
                        raise Lost(self.closed, request.index, None)
                    now = time.monotonic()
                    if self.slot is None:
                        self.slot = self.pace.reserve(now)
                    if self.slot > now:
                        return None  # `converse` comes back at the slot
                    self.slot = None
                try:
                    self.connection.send(request.payload)
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    raise self._lost(exc, request) from None
                self.last = time.monotonic()
                if request.in_doubt is not None:  # a message's text
                    self.text_at = self.last
            elif isinstance(request, Result):
                if self.text_at is not None:
                    # When it was answered is known to lie between the last quiet look and the read:
                    # the earlier, so an answer read late after a write does not look slow.
                    answered = self.quiet_at if self.quiet_at > self.text_at else self.last
                    self.fastest = min(self.fastest, answered - self.text_at)
                    self.text_at = None
                self.holding = True
                return request
            try:
                self.request = self.talk.send(answer) if request is not None else next(self.talk)
            except StopIteration:
                self.done = True
        return None

    def recorded(self) -> Result | None:
        """The last Result is in the ledger: go on (as `advance`)."""
        self.holding = False
        try:
            self.request = self.talk.send(None)
        except StopIteration:
            self.done = True
        return self.advance()

    def due(self, by: float) -> bool:
        """Whether the answer to the text in flight may come by `by`, as fast as any before."""
        return self.text_at is not None and not self.holding and self.text_at + self.fastest <= by

    def waited(self, timeout: float, now: float) -> bool:
        """Whether the conversation has waited on the server for longer than `timeout`."""
        return isinstance(self.request, Read) and not self.holding and now - self.last > timeout

    def timed_out(self) -> Lost:
        assert isinstance(self.request, Read)
        return self._lost(TimeoutError("timed out"), self.request)

    @staticmethod
    def _lost(cause: BaseException, request: Write | Read) -> Lost:
        resume = request.index + 1 if request.in_doubt is not None else request.index
        return Lost(cause, resume, request.in_doubt)


def converse(lanes: Iterable[Lane], record: Callable[[list[Result]], None], *, timeout: float,
             lost: Callable[[Lane, Lost], Lane | None] | None = None, gather: float = 0.0,
             pace: Pace | None = None) -> None:
    """Run every lane's conversation to its end, from this thread.

    The Results of every lane that answered are handed to `record` together, with those of the
    lanes that answered while the others were read (one more look, without waiting, before each
    write: at 16 connections on loopback, 8 results a write became 13); each of those
    lanes goes on once it returns (whatever it raises stops everything at once: nothing more is
    sent). A lane whose connection fails goes to `lost`, which may give a lane to go on with
    (a new connection); without `lost`, the Lost is raised.

    With `gather`, the write also waits for the lanes whose answer is due before it would have
    ended: for at most `gather` seconds and never longer than the last write took, for each lane
    whose text has gone and would be answered by then if as quickly as its fastest answer yet.
    A write costs the same whatever it holds (an fsync), and a lane that answers just after it
    starts waits for it to end and then for one of its own: waiting at most as long as a write
    takes costs the lanes that came first no more than that, and saves a write. Lanes whose
    answer is a round trip away (a relay out of step) are not waited for: that wait would
    be lost every time.

    With `pace`, each message's text waits for its moment (`Pace.reserve`); the lanes waiting
    so are woken at theirs, while the others are read as usual.
    """
    selector = selectors.DefaultSelector()
    results: list[Result] = []
    holding: list[Lane] = []
    paced: set[Lane] = set()  # lanes whose next text waits for its slot
    # Lanes are checked for a server that stopped answering every eighth of the timeout, not
    # after every reply (a look at every lane each time cost more than reading the reply): one
    # is dropped between `timeout` and 1.125 × `timeout` after it last heard anything.
    check_every = timeout / 8
    next_check = time.monotonic() + check_every
    took = 0.0  # how long the last write took (seconds)
    quiet_at = looked_at = 0.0  # when the look before the last, and the last, returned

    def look(wait: float) -> Iterator[Lane]:
        """The lanes with something to read, waiting at most `wait` seconds for one."""
        nonlocal quiet_at, looked_at
        ready = selector.select(wait)
        quiet_at, looked_at = looked_at, time.monotonic()
        return (key.fileobj for key, _ in ready)  # type: ignore[misc]

    def drop(lane: Lane, why: Lost) -> None:
        """The lane's connection failed: `lost` may give one to go on with."""
        selector.unregister(lane)
        paced.discard(lane)
        if lost is None:
            raise why
        again = lost(lane, why)
        if again is not None:
            start(again)

    def run(lane: Lane, step: Callable[[], Result | None]) -> None:
        try:
            result = step()
        except Lost as exc:
            drop(lane, exc)
            return
        if result is not None:
            results.append(result)
            holding.append(lane)
        elif lane.done:
            selector.unregister(lane)
        if lane.slot is not None:
            paced.add(lane)
        elif paced:
            paced.discard(lane)

    def start(lane: Lane) -> None:
        lane.pace = pace
        selector.register(lane, selectors.EVENT_READ)
        run(lane, lane.advance)

    def take(ready: Iterable[Lane]) -> None:
        """Read what the ready lanes' servers said, then carry each conversation on (a lane
        holding a result only keeps what it read: its next envelope is answered early)."""
        ready = list(ready)
        for lane in ready:
            lane.receive(quiet_at)
        for lane in ready:
            if not lane.holding:
                run(lane, lane.advance)

    try:
        for lane in lanes:
            start(lane)
        while selector.get_map():
            if holding:
                # Before writing, one look (without waiting) for the lanes that answered while
                # the others were read: their results join this write rather than the next.
                # Then, with `gather`, wait a little for the lanes whose answer is due.
                until, wait = time.monotonic() + min(gather, took), 0.0
                while True:
                    take(look(wait))
                    wait = until - time.monotonic()
                    talking = (key.fileobj for key in selector.get_map().values())
                    if wait <= 0 or not any(lane.due(until) for lane in talking):  # type: ignore[attr-defined]
                        break
                began = time.monotonic()
                record(results)
                took = time.monotonic() - began
                settled, results[:], holding[:] = list(holding), [], []
                for lane in settled:
                    run(lane, lane.recorded)
                continue
            wake = next_check
            if paced:  # the first slot due, if before the next look for silent servers
                wake = min([wake, *(lane.slot for lane in paced if lane.slot is not None)])
            take(look(max(0.0, wake - time.monotonic())))
            now = time.monotonic()
            for lane in [lane for lane in paced if lane.slot is not None and lane.slot <= now]:
                run(lane, lane.advance)  # its moment has come: the text goes
            if now < next_check:
                continue
            next_check = now + check_every
            for lane in [k.fileobj for k in list(selector.get_map().values())]:
                assert isinstance(lane, Lane)
                if lane.waited(timeout, now):
                    drop(lane, lane.timed_out())
    finally:
        selector.close()


def send_pipelined(
    connection: smtplib.SMTP, sender: str, items: Sequence[T], start: int, *,
    address: Callable[[T], str], options: Callable[[T], Sequence[str]], data: Callable[[T], bytes],
    result: Callable[[T, Refusal | None], None],
) -> None:
    """`items[start:]` on one connection; `result(item, None)` when the server accepted an item,
    `result(item, Refusal)` when it did not. Raises `Lost` if the connection drops; whatever
    `result` raises stops the loop at once (nothing more is sent)."""
    talk = conversation(connection, sender, items, start, address=address, options=options,
                        data=lambda item: dot_stuffed(data(item)))

    def record(results: list[Result]) -> None:
        for r in results:
            result(r.item, r.refusal)  # type: ignore[arg-type]

    converse([Lane(connection, talk)], record, timeout=connection.timeout or 60.0)
