"""The pipelining SMTP client (channels/smtp_pipelining.py) against aiosmtpd and Postfix's
smtp-sink: one round trip per message, each recipient's result kept, refusals alone, a
dropped connection reported with the message in doubt, and servers that do not pipeline."""

from __future__ import annotations

import smtplib
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from broadcaster.channels.smtp_pipelining import Lost, Refusal, dot_stuffed, send_pipelined
from broadcaster.standins.smtp import SmtpSink, SmtpStandIn

SENDER = "status@example.com"


def message(to: str, body: str = "Card payments fail.\r\n") -> bytes:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: Payments\r\n\r\n{body}").encode()


class Writes(smtplib.SMTP):
    """smtplib's connection, counting the writes it makes (one per round trip when pipelined)."""

    writes = 0

    def send(self, s: bytes | str) -> None:
        self.writes += 1
        super().send(s)


def run(port: int, addresses: list[str], body: str = "Card payments fail.\r\n", start: int = 0,
        ) -> tuple[dict[str, Refusal | None], Writes]:
    results: dict[str, Refusal | None] = {}
    connection = Writes("127.0.0.1", port, timeout=30)
    connection.ehlo()
    assert connection.has_extn("pipelining")
    send_pipelined(connection, SENDER, addresses, start, address=lambda a: a, options=lambda a: [],
                   data=lambda a: message(a, body), result=results.__setitem__)
    connection.quit()
    return results, connection


@pytest.fixture
def server() -> Iterator[SmtpStandIn]:
    with SmtpStandIn() as box:
        yield box


def test_each_message_is_one_round_trip_and_arrives_whole(server: SmtpStandIn):
    addresses = [f"p{n}@example.com" for n in range(50)]
    results, connection = run(server.port, addresses, body="Line one.\r\n.starts with a dot\r\n..two\r\n")
    assert results == dict.fromkeys(addresses)
    # EHLO, the first envelope, then one write per message (its text with the next envelope), QUIT.
    assert connection.writes == 1 + 1 + len(addresses) + 1
    assert sorted(m.envelope_to[0] for m in server.messages) == sorted(addresses)
    assert {m.get_content() for m in server.messages} == {"Line one.\r\n.starts with a dot\r\n..two\r\n"}


def test_a_refused_recipient_fails_alone_and_the_next_goes_out(server: SmtpStandIn):
    server.refuse["bob@example.com"] = "550 5.1.1 no such user"
    server.refuse["dan@example.com"] = "452 4.2.2 mailbox full"
    addresses = ["ana@example.com", "bob@example.com", "carl@example.com", "dan@example.com",
                 "eve@example.com"]
    results, _ = run(server.port, addresses)
    assert results["bob@example.com"] == Refusal(550, "5.1.1 no such user", "RCPT")
    assert results["dan@example.com"] == Refusal(452, "4.2.2 mailbox full", "RCPT")
    assert {a for a, r in results.items() if r is None} == {"ana@example.com", "carl@example.com",
                                                           "eve@example.com"}
    assert sorted(m.envelope_to[0] for m in server.messages) == ["ana@example.com", "carl@example.com",
                                                                 "eve@example.com"]


def test_a_message_refused_after_its_text_fails_alone(server: SmtpStandIn):
    server.refuse_data["bob@example.com"] = "554 5.7.1 rejected as spam"
    results, _ = run(server.port, ["ana@example.com", "bob@example.com", "carl@example.com"])
    assert results == {"ana@example.com": None, "carl@example.com": None,
                       "bob@example.com": Refusal(554, "5.7.1 rejected as spam", "message")}


@pytest.mark.parametrize("stored", [True, False])
def test_a_connection_dropped_mid_pipeline_names_the_message_in_doubt(server: SmtpStandIn, stored: bool):
    if stored:
        server.drop_after_storing = 1
    else:
        server.drop_before_storing = 1
    addresses = ["ana@example.com", "bob@example.com", "carl@example.com"]
    results: dict[str, Refusal | None] = {}
    connection = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
    connection.ehlo()
    with pytest.raises(Lost) as lost:
        send_pipelined(connection, SENDER, addresses, 0, address=lambda a: a, options=lambda a: [],
                       data=message, result=results.__setitem__)
    connection.close()
    # The first message's text went out and its answer never came: it may have arrived.
    assert lost.value.in_doubt == "ana@example.com" and lost.value.resume_at == 1
    assert results == {}, "nothing is reported as sent or refused without the server's word"
    assert len(server.messages) == int(stored)
    # On a new connection the rest goes on from where it stopped.
    again, _ = run(server.port, addresses, start=lost.value.resume_at)
    assert again == {"bob@example.com": None, "carl@example.com": None}


def test_dot_stuffing_and_the_final_line_ending():
    assert dot_stuffed(b"a\r\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n"


def test_thousands_of_messages_through_postfix_smtp_sink():
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump"
        try:
            sink = SmtpSink("-D", str(dump))
        except RuntimeError as exc:
            pytest.skip(str(exc))
        with sink:
            addresses = [f"s{n}@example.com" for n in range(2000)]
            results, connection = run(sink.port, addresses)
        assert results == dict.fromkeys(addresses)
        assert connection.writes == len(addresses) + 3
        kept = dump.read_bytes()
        assert all(f"To: {a}\n".encode() in kept for a in (addresses[0], addresses[999], addresses[-1]))


def test_smtp_sink_hanging_up_after_the_dot_leaves_that_message_in_doubt():
    try:
        sink = SmtpSink("-q", ".")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with sink:
        connection = smtplib.SMTP("127.0.0.1", sink.port, timeout=30)
        connection.ehlo()
        with pytest.raises(Lost) as lost:
            send_pipelined(connection, SENDER, ["a@example.com", "b@example.com"], 0, address=lambda a: a,
                           options=lambda a: [], data=message, result=lambda a, r: None)
        connection.close()
    assert (lost.value.in_doubt, lost.value.resume_at) == ("a@example.com", 1)


def three_lanes(server: SmtpStandIn, addresses: list[str], pipelining: bool) -> list:
    """Three connections to `server`, each with a third of `addresses` (every third one) to send."""
    from broadcaster.channels.smtp_pipelining import Lane, conversation

    lanes = []
    for share in (addresses[0::3], addresses[1::3], addresses[2::3]):
        connection = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
        connection.ehlo()
        assert connection.has_extn("pipelining") == pipelining
        talk = conversation(connection, SENDER, share, 0, address=lambda a: a, options=lambda a: [],
                            data=lambda a: dot_stuffed(message(a)))
        lanes.append(Lane(connection, talk))
    return lanes


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one command at a time"])
def test_many_connections_from_one_thread_each_waits_for_its_result_to_be_recorded(
        server: SmtpStandIn, pipelining: bool):
    """`converse` drives several connections from one thread and hands the results of all that
    answered to `record` together. When `record` fails, nothing more is sent: the server holds
    the recorded messages and at most one more per connection (its text went before the write)."""
    from broadcaster.channels.smtp_pipelining import converse

    server.pipelining = pipelining
    addresses = [f"p{n}@example.com" for n in range(90)]
    lanes, recorded = three_lanes(server, addresses, pipelining), []

    def record(results) -> None:
        if len(recorded) >= 40:
            raise OSError("the disk is full")
        recorded.extend(r.item for r in results if r.refusal is None)

    with pytest.raises(OSError):
        converse(lanes, record, timeout=30)
    for lane in lanes:
        lane.connection.close()
    delivered = {m.envelope_to[0] for m in server.messages}
    assert set(recorded) <= delivered
    assert len(delivered - set(recorded)) <= len(lanes), "at most one unrecorded message per connection"


def test_a_pace_gives_moments_an_interval_apart_and_no_burst_after_a_pause():
    """Each message's moment is 1/rate after the one before, never before it asks: a sender
    that paused does not make up for it with a burst the relay would refuse."""
    from broadcaster.channels.smtp_pipelining import Pace

    pace = Pace(4)  # an interval of 0.25 s
    assert [pace.reserve(now) for now in (10.0, 10.0, 10.1, 10.9)] == [10.0, 10.25, 10.5, 10.9]
    assert [pace.reserve(now) for now in (30.0, 30.0)] == [30.0, 30.25], "after a pause, spaced again"


def against(relay: tuple[int, float], messages: int, rate: float | None = None, *,
            senders: int = 1, shared: bool = True, start: float = 0.0) -> tuple[float, int, float]:
    """`Pace`s driven in simulated time (no clock, no sockets; from `start` on the monotonic
    clock) by 16 connections each, one pace a sender (`senders` processes sending one list,
    told of each other if `shared`), against a relay that takes `count` messages in any
    `seconds` and puts the rest off, each answer half a millisecond after its text, each
    put-off message sent again: (the moment the last was taken, how many were put off, the
    fastest the senders went together, by their paces)."""
    import heapq
    from collections import deque

    from broadcaster.channels.smtp_pipelining import Pace

    (count, seconds), window = relay, deque[float]()
    paces = [Pace(rate) for _ in range(senders)]
    if shared:
        for rank, pace in enumerate(paces):
            pace.share(senders, rank, start)
    todo, put_off, fastest, clock = messages, 0, 0.0, start
    # (when, a text reaching the relay (1) or a connection ready to send its next (0), which)
    events = [(start, 0, lane) for lane in range(16 * senders)]
    while todo:
        at, text, lane = heapq.heappop(events)
        pace = paces[lane % senders]
        if not text:  # its moment taken: the text reaches the relay then, in order with the others'
            heapq.heappush(events, (pace.reserve(at) if pace.interval else at, 1, lane))
            continue
        while window and window[0] <= at - seconds:
            window.popleft()
        taken = len(window) < count
        if taken:
            window.append(at)
            todo -= 1
        put_off += not taken
        clock = at + 0.0005
        pace.heard(clock, int(taken), int(not taken))
        fastest = max(fastest, sum(p.rate or 0.0 for p in paces))
        heapq.heappush(events, (clock, 0, lane))
    return clock - start, put_off, fastest


@pytest.mark.parametrize("relay, messages, speed, most_put_off", [
    ((20, 1.0), 2000, 0.85, 0.1),  # Amazon SES with a maximum send rate of 20 a second
    ((100, 1.0), 5000, 0.85, 0.1),
    ((10, 2.0), 400, 0.75, 0.25),  # a relay that counts over two seconds
    ((600, 60.0), 6000, 0.75, 1.5),  # Postfix's anvil: 600 a minute, a burst and then nothing
], ids=["20 a second", "100 a second", "5 a second, counted over 2 s", "600 a minute"])
def test_without_a_rate_the_pace_finds_what_the_relay_takes(relay: tuple[int, float], messages: int,
                                                             speed: float, most_put_off: float):
    """Without `rate`, sending as fast as the relay answers until it puts messages off, then
    at what it takes: the whole list goes in not much longer than the relay's rate allows, and
    few are put off (before, at full speed, the excess of every round was: 20 of 400 went in
    three rounds against a relay taking 20 a second). A relay that counts by the minute spends
    its burst at once and then refuses everything until the minute is over: the pace must not
    take that for a relay that takes nothing, and ends near its rate."""
    clock, put_off, _ = against(relay, messages)
    count, seconds = relay
    ideal = (messages - count) * seconds / count  # its burst at once, then its rate
    assert ideal / clock >= speed, f"{clock:.1f} s against {ideal:.1f} s at the relay's rate"
    assert put_off <= most_put_off * messages, f"{put_off} put off"


def test_a_pace_goes_no_faster_than_a_rate_that_was_set_and_without_refusals_never_waits():
    from broadcaster.channels.smtp_pipelining import Pace

    assert against((20, 1.0), 400, rate=10) == (pytest.approx(39.9, abs=0.1), 0, 10), "taken: kept as it is"
    _, put_off, fastest = against((20, 1.0), 400, rate=40)
    assert fastest == 40 and 0 < put_off <= 40, "slowed, then faster again, never past 40"
    free = Pace(None)
    for n in range(1000):
        assert not free.heard(n / 100, 16, 0)
    assert free.rate is None and free.interval == 0


@pytest.mark.parametrize("relay, rate, senders", [
    ((14, 1.0), 14, 2),  # Amazon SES with a maximum send rate of 14 a second, that rate set
    ((20, 1.0), 19, 3),
    ((100, 1.0), 95, 4),
    ((1, 2.0), 0.45, 3),  # Exchange Online: 30 a minute
], ids=["SES at 14, 2 senders", "20 a second, 3", "100 a second, 4", "30 a minute, 3"])
def test_senders_of_one_list_share_the_relays_rate(relay: tuple[int, float], rate: float, senders: int):
    """A rate is the relay's (Amazon SES's maximum send rate is the account's), not each
    sender's. `broadcaster worker`s taking batches of a list beside the command each went at
    the whole rate, and the relay put the excess off all along (each pace slowed, sped up
    again and was refused again: 34 to 268 put off here). Told how many send and which of
    them each is (`share`), each goes at its share, on moments that interleave with the
    others': the relay sees one stream at the rate, and puts nothing off."""
    messages = max(20, int(20 * rate))
    start = 1234.567  # any moment of the monotonic clock
    took, put_off, fastest = against(relay, messages, rate=rate, senders=senders, start=start)
    assert put_off == 0 and fastest == pytest.approx(rate)
    assert took == pytest.approx((messages - 1) / rate, abs=1 / rate), "at the rate, all along"
    _, alone_put_off, alone_fastest = against(relay, messages, rate=rate, senders=senders, shared=False)
    assert alone_put_off > 30 and alone_fastest >= rate * senders * 0.99, "each at the whole rate"


def test_a_pace_shared_is_scaled_and_given_back_when_alone_again():
    from broadcaster.channels.smtp_pipelining import Pace

    pace = Pace(10)
    pace.share(2, 1, 0.0)
    assert (pace.rate, pace.interval, pace.most) == (5, 0.2, 5), "half each"
    first, second = pace.reserve(100.0), pace.reserve(100.0)
    assert second - first == pytest.approx(0.2) and 0 <= first - 100.0 < 0.2
    other = Pace(10)
    other.share(2, 0, 0.0)
    theirs = other.reserve(100.0)
    assert abs(theirs - first) == pytest.approx(0.1, abs=1e-6), "the two interleave, a tenth apart"
    pace.share(1, 0, 2.0)
    assert (pace.rate, pace.most) == (10, 10), "alone again: the whole rate"
    assert not pace.heard(2.5, 4, 1), "a refusal within the spell the change began: acted on at its end"
    assert pace.heard(3.5, 6, 0) and pace.rate == pytest.approx(10 / 1.5), "slowed to what it took"
    pace.share(3, 2, 10.0)
    assert pace.rate == pytest.approx(10 / 4.5) and pace.most == pytest.approx(10 / 3), "a third of that"
    assert pace.reserve(200.0) == 200.0, "slowed below its share: its own moments, not the shared ones"
    pace.share(1, 0, 20.0)
    assert pace.rate == pytest.approx(10 / 1.5), "what it had learnt, no more"

    learnt = Pace(None)
    assert not learnt.heard(0.0, 30, 0) and learnt.heard(0.5, 0, 2) and learnt.rate == 30
    learnt.share(2, 0, 1.0)
    assert learnt.rate == 15 and learnt.most is None, "what it learnt alone, shared: no bound"
    free = Pace(None)
    free.share(4, 1, 0.0)
    assert free.rate is None and free.interval == 0, "nothing set or learnt: as fast as the relay answers"


def test_refusals_just_after_the_pace_changed_answer_texts_sent_before_it():
    """The texts in flight when the pace slows are refused too: that is the same news, not a
    sign that the new pace is still too fast."""
    from broadcaster.channels.smtp_pipelining import Pace

    pace = Pace(None)
    pace.heard(0.000, 20, 0)
    assert pace.heard(0.010, 0, 16) and pace.rate == 20, "what it took in the last second"
    assert not pace.heard(0.012, 0, 15), "the rest of the 16 in flight: the same news"
    assert not pace.heard(1.000, 19, 0) and pace.rate == 20, "a spell at the new pace"
    assert not pace.heard(1.020, 1, 0) and pace.rate == pytest.approx(22), "none refused: a tenth faster"
    assert not pace.heard(1.500, 10, 2), "refused within the spell: counted, acted on at its end"
    assert pace.heard(2.100, 6, 0) and pace.rate == pytest.approx(17 / 1.08), "what it took since it sped up"


def test_a_pace_refused_before_the_relay_took_anything_starts_at_one_a_second():
    """A relay whose burst another sender spent (or the last command) refuses the first texts:
    a measure of nothing is not a rate of nothing; the pace starts at one a second."""
    from broadcaster.channels.smtp_pipelining import Pace

    pace = Pace(None)
    assert pace.heard(0.001, 0, 16) and pace.rate == 1
    now = 0.001
    while now < 60:  # the relay takes each as it comes: a tenth faster after each spell
        now = pace.reserve(now)
        pace.heard(now, 1, 0)
    assert pace.rate > 10, pace.rate


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one command at a time"])
def test_paced_texts_go_no_faster_than_the_rate_over_every_connection(server: SmtpStandIn, pipelining: bool):
    """With a pace, the texts of all the connections together go at most `rate` a second:
    the last of N cannot reach the server before (N - 1) / rate after the first could go (a
    bound the mechanism guarantees however busy the machine), and each is recorded."""
    import time

    from broadcaster.channels.smtp_pipelining import Pace, converse

    server.pipelining = pipelining
    addresses = [f"p{n}@example.com" for n in range(12)]
    lanes, recorded = three_lanes(server, addresses, pipelining), []
    began = time.monotonic()
    converse(lanes, lambda results: recorded.extend(r.item for r in results if r.refusal is None),
             timeout=30, pace=Pace(20))
    for lane in lanes:
        lane.connection.quit()
    assert sorted(recorded) == sorted(addresses)
    assert sorted(m.envelope_to[0] for m in server.messages) == sorted(addresses)
    assert server.taken_at[-1] - began >= 11 / 20, "12 texts at 20 a second span at least 0.55 s"


def test_a_connection_that_closes_while_its_text_waits_for_its_moment_has_nothing_in_doubt():
    """A paced text waits for its moment; if the server hangs up meanwhile, the text never
    went: the connection is lost with nothing in doubt, to start again at that message (on a
    socket pair, so the order is certain)."""
    import socket
    import time

    from broadcaster.channels.smtp_pipelining import Lane, Pace, conversation, converse

    client, server_side = socket.socketpair()
    server_side.sendall(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n")
    server_side.shutdown(socket.SHUT_WR)  # then hangs up
    connection = smtplib.SMTP()
    connection.sock, connection.file = client, None
    connection.does_esmtp, connection.esmtp_features = True, {"pipelining": ""}
    talk = conversation(connection, SENDER, ["ana@example.com"], 0, address=lambda a: a,
                        options=lambda a: [], data=lambda a: dot_stuffed(message(a)))
    pace = Pace(0.5)
    pace.reserve(time.monotonic())  # another message took this moment: ana's is 2 s away
    try:
        with pytest.raises(Lost) as lost:
            converse([Lane(connection, talk)], lambda results: None, timeout=30, pace=pace)
        client.shutdown(socket.SHUT_WR)
        received = server_side.makefile("rb").read()
    finally:
        client.close()
        server_side.close()
    assert (lost.value.in_doubt, lost.value.resume_at) == (None, 0)
    assert received == b"MAIL FROM:<status@example.com>\r\nRCPT TO:<ana@example.com>\r\nDATA\r\n"


def test_a_server_that_stops_answering_is_lost_once_the_timeout_passes(server: SmtpStandIn):
    server.delay = 5  # DATA's answer comes long after the client's timeout
    results: dict[str, Refusal | None] = {}
    connection = smtplib.SMTP("127.0.0.1", server.port, timeout=0.5)
    connection.ehlo()
    with pytest.raises(Lost) as lost:
        send_pipelined(connection, SENDER, ["ana@example.com", "bob@example.com"], 0, address=lambda a: a,
                       options=lambda a: [], data=message, result=results.__setitem__)
    connection.close()
    assert isinstance(lost.value.cause, TimeoutError)
    # Its text went and no answer came: it may have arrived, and nothing is reported for it.
    assert (lost.value.in_doubt, lost.value.resume_at) == ("ana@example.com", 1)
    assert results == {}


def test_a_server_slower_than_the_checks_but_within_the_timeout_is_kept(server: SmtpStandIn):
    """The loop looks for silent servers every eighth of the timeout: a reply that takes
    several of those looks, but less than the timeout, is waited for, not taken for silence."""
    server.delay = 0.4  # each answer: over three looks at a timeout of 1 s
    results: dict[str, Refusal | None] = {}
    connection = smtplib.SMTP("127.0.0.1", server.port, timeout=1.0)
    connection.ehlo()
    send_pipelined(connection, SENDER, ["ana@example.com", "bob@example.com"], 0, address=lambda a: a,
                   options=lambda a: [], data=message, result=results.__setitem__)
    connection.quit()
    assert results == {"ana@example.com": None, "bob@example.com": None}
    assert sorted(m.envelope_to[0] for m in server.messages) == ["ana@example.com", "bob@example.com"]


def test_connections_that_answer_while_the_others_are_read_join_the_same_write():
    """Before each write, `converse` looks once more, without waiting, for connections that
    answered while it read the others: their results go in the same write (one fsync) rather
    than the next. Scripted on socket pairs, so the order is certain: the second server
    answers only once the first connection's text has gone, after the loop's wait returned."""
    import socket

    from broadcaster.channels.smtp_pipelining import Lane, conversation, converse

    replies = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n250 2.0.0 Queued\r\n"
    first, first_server = socket.socketpair()
    second, second_server = socket.socketpair()
    first_server.sendall(replies)  # the first server has answered everything already

    class Scripted(smtplib.SMTP):
        """A connection on a socket pair; the first one's text wakes the second server."""

        def send(self, s: bytes | str) -> None:
            super().send(s)
            if self.sock is first and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
                second_server.sendall(replies)

    lanes = []
    for sock, address in ((first, "ana@example.com"), (second, "bob@example.com")):
        connection = Scripted()
        connection.sock, connection.file = sock, None
        connection.does_esmtp, connection.esmtp_features = True, {"pipelining": ""}
        talk = conversation(connection, SENDER, [address], 0, address=lambda a: a, options=lambda a: [],
                            data=lambda a: dot_stuffed(message(a)))
        lanes.append(Lane(connection, talk))
    writes: list[list[str]] = []
    try:
        converse(lanes, lambda results: writes.append([r.item for r in results]), timeout=30)
    finally:
        for sock in (first, first_server, second, second_server):
            sock.close()
    assert writes == [["ana@example.com", "bob@example.com"]]


def gathered(answers: dict[str, list[float]]) -> tuple[list[list[str]], dict[str, float]]:
    """`converse` with `gather` over one scripted server per share (its addresses are the share
    and a number; each message's answer takes the seconds given, envelopes are answered at
    once), on socket pairs, each write taking 0.3 s (the first: none). What each write held,
    and when each message's text went."""
    import socket
    import threading
    import time

    from broadcaster.channels.smtp_pipelining import Lane, conversation, converse

    def serve(sock: socket.socket, delays: list[float]) -> None:
        replies = {b"MAIL": b"250 2.1.0 Ok\r\n", b"RCPT": b"250 2.1.5 Ok\r\n", b"RSET": b"250 Ok\r\n"}
        in_text, n = False, 0
        with suppress(OSError):
            for line in sock.makefile("rb"):
                if in_text:
                    if line == b".\r\n":
                        in_text = False
                        time.sleep(delays[n])
                        n += 1
                        sock.sendall(b"250 2.0.0 Queued\r\n")
                elif line[:4] == b"DATA":
                    in_text = True
                    sock.sendall(b"354 Go ahead\r\n")
                else:
                    sock.sendall(replies[line[:4]])

    went: dict[str, float] = {}

    def text(address: str) -> bytes:
        went[address] = time.monotonic()
        return dot_stuffed(message(address))

    writes: list[list[str]] = []

    def record(results) -> None:
        writes.append([r.item for r in results])
        if len(writes) > 1:
            time.sleep(0.3)

    lanes, sockets = [], []
    try:
        for share, delays in answers.items():
            client, server = socket.socketpair()
            sockets += [client, server]
            threading.Thread(target=serve, args=(server, delays), daemon=True).start()
            connection = smtplib.SMTP()
            connection.sock, connection.file = client, None
            connection.does_esmtp, connection.esmtp_features = True, {"pipelining": ""}
            addresses = [f"{share}{n}@example.com" for n in range(1, len(delays) + 1)]
            talk = conversation(connection, SENDER, addresses, 0, address=lambda a: a,
                                options=lambda a: [], data=text)
            lanes.append(Lane(connection, talk))
        converse(lanes, record, timeout=30, gather=5.0)
    finally:
        for sock in sockets:
            sock.close()
    assert sorted(a for w in writes for a in w) == sorted(went)
    return writes, went


def test_a_write_waits_for_the_connections_whose_answer_is_due():
    """With `gather`, a write waits (never longer than the last write took) for connections
    whose text has gone and whose answer is due by then, as fast as their fastest yet: one
    write for both rather than one each. Here "a" answers in 0.02 s and "b" in 0.08 s; a write
    takes 0.3 s. Without the wait "a" is always written alone and "b" after it: 12 writes."""
    writes, _ = gathered({"a": [0.02] * 6, "b": [0.08] * 6})
    together = [w for w in writes if len({a[0] for a in w}) == 2]
    assert len(together) >= 3, writes
    assert len(writes) <= 9, writes


def test_a_write_does_not_wait_for_a_connection_whose_answer_is_a_round_trip_away():
    """A connection that has never answered faster than 1 s is not waited for when its next
    text has just gone, even though it happens to answer this one in 0.1 s, within the
    0.3 s the write may wait: waiting for a relay out of step would be lost time every write."""
    writes, went = gathered({"a": [0.02] * 8, "b": [1.0, 0.1]})
    # The texts of "a" that went with "b2" (both released by the write that recorded "b1"):
    beside = [a for a, at in went.items() if a.startswith("a") and abs(at - went["b2@example.com"]) < 0.05]
    assert beside, went
    written_with_b2 = next(w for w in writes if "b2@example.com" in w)
    assert not set(beside) & set(written_with_b2), writes
