"""The ledger's promises (broadcaster/ledger/__init__.py), checked on every implementation.

Each test takes the `ledger` fixture, parametrised over IMPLEMENTATIONS: a new store joins by
adding one factory here and passing these tests unchanged.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broadcaster.errors import LedgerBusyError, UnknownIncidentError
from broadcaster.ledger import Ledger, NewDelivery, SubscriberSelection, open_ledger
from broadcaster.ledger.interface import Claimed
from broadcaster.model import (
    DeliveryState,
    Impact,
    Kind,
    Receipt,
    Status,
    Subscriber,
    SubscriptionRequest,
    Text,
    Update,
    new_incident_id,
)
from broadcaster.settings import Settings, settings_from_dict


def settings_with(folder: Path, state: dict[str, str]) -> Settings:
    return settings_from_dict({
        "organization": {"name": "Contract", "locales": ["en", "es"]},
        "site": {"base_url": "https://status.example.com", "output_dir": str(folder / "site")},
        "state": state,
    }, environ={})


def sqlite_store(folder: Path, request: pytest.FixtureRequest) -> Settings:
    return settings_with(folder, {"path": str(folder / "state" / "ledger.db")})


def postgresql_store(folder: Path, request: pytest.FixtureRequest) -> Settings:
    return settings_with(folder, {"url": request.getfixturevalue("postgres_databases")()})


#: name -> settings for a fresh, empty store (a folder to use, the test's request for fixtures).
IMPLEMENTATIONS: dict[str, Callable[[Path, pytest.FixtureRequest], Settings]] = {
    "sqlite": sqlite_store, "postgresql": postgresql_store}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return IMPLEMENTATIONS[request.param](tmp_path, request)


def nothing_written(store: Settings) -> bool:
    """Whether the store holds nothing of broadcaster's (not even an empty schema)."""
    if store.state.url is None:
        return not store.state.path.exists()
    import psycopg

    with psycopg.connect(store.state.url, password=os.environ["BROADCASTER_STATE_PASSWORD"]) as db:
        return db.execute("SELECT to_regclass('broadcaster_schema')").fetchone()[0] is None


@pytest.fixture
def ledger(store: Settings) -> Iterator[Ledger]:
    with open_ledger(store) as opened:
        yield opened


def an_update(incident_id: str | None = None, seq: int = 1, *, kind: Kind = Kind.ANNOUNCE,
              status: Status = Status.INVESTIGATING, draft: bool = False, **extra: object) -> Update:
    incident_id = incident_id or new_incident_id()
    return Update(
        id=f"{incident_id}-{seq}", incident_id=incident_id, seq=seq, kind=kind, status=status,
        impact=Impact.MAJOR, components=("Payments API",), regions=("Madrid",),
        texts={"en": Text("Card payments failing", "Some fail.", guidance="Pay by transfer."),
               "es": Text("Fallan los pagos", "Algunos fallan — «ñ» 🚨")},
        created_at=datetime.now(UTC), draft=draft, **extra,  # type: ignore[arg-type]
    )


def test_an_update_reads_back_as_it_was_recorded(ledger: Ledger):
    promised = datetime(2031, 5, 1, 10, 30, tzinfo=UTC)
    update = an_update(next_update_at=promised, starts_at=promised, ends_at=promised + timedelta(hours=2),
                       apology_waived=True)
    ledger.record(update, [])
    incident = ledger.incident(update.incident_id)
    assert incident.updates == (update,)
    assert incident.created_at == update.created_at


def test_an_unknown_incident_is_an_error_that_says_so(ledger: Ledger):
    with pytest.raises(UnknownIncidentError, match="no incident"):
        ledger.incident("abcdefghjk")


def test_deliveries_are_recorded_pending_with_their_update(ledger: Ledger):
    update = an_update()
    ledger.record(update, [NewDelivery("website", "en"), NewDelivery("email", "es", "ana@example.com")])
    found = ledger.deliveries(update_id=update.id)
    assert [(d.channel, d.locale, d.recipient, d.state) for d in found] == [
        ("website", "en", "", DeliveryState.PENDING),
        ("email", "es", "ana@example.com", DeliveryState.PENDING)]
    assert ledger.unfinished_incidents() == [update.incident_id]


def test_a_sent_delivery_is_never_attempted_again(ledger: Ledger):
    update = an_update()
    ledger.record(update, [NewDelivery("twitter", "en")])
    (delivery,) = ledger.deliveries(update_id=update.id)
    ledger.start_attempt(delivery.id)
    (flying,) = ledger.deliveries(update_id=update.id)
    assert flying.state is DeliveryState.IN_FLIGHT and flying.attempts == 1
    ledger.mark_sent(delivery.id, Receipt("123", "https://x.example/123", {"parts": ["123"]}))
    with pytest.raises(RuntimeError, match="already sent"):
        ledger.start_attempt(delivery.id)
    (sent,) = ledger.deliveries(update_id=update.id)
    assert (sent.state, sent.remote_id, sent.meta) == (DeliveryState.SENT, "123", {"parts": ["123"]})
    assert ledger.deliveries(unfinished=True) == [] and ledger.unfinished_incidents() == []


def test_a_batch_finishes_in_one_go_and_skipped_counts_as_done(ledger: Ledger):
    update = an_update()
    people = [f"p{n}@example.com" for n in range(3)]
    ledger.record(update, [NewDelivery("email", "en", p) for p in people])
    ids = [c.id for c in ledger.claim("me", update_id=update.id, channel="email", limit=3, lease_seconds=60)]
    assert [d.attempts for d in ledger.deliveries(update_id=update.id)] == [0, 0, 0], "a claim writes none"
    assert {d.state for d in ledger.deliveries(update_id=update.id)} == {DeliveryState.IN_FLIGHT}
    ledger.finish([(ids[0], Receipt("m1"))], [(ids[1], "mailbox full")], [(ids[2], "left the list")])
    states = [d.state for d in ledger.deliveries(update_id=update.id)]
    assert states == [DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED]
    # The result counts the attempt; skipped: not sent after all (they left the list), none.
    assert [d.attempts for d in ledger.deliveries(update_id=update.id)] == [1, 1, 0]
    assert [d.id for d in ledger.deliveries(unfinished=True)] == [ids[1]]
    with pytest.raises(RuntimeError):
        ledger.start_attempts(ids)  # two of them are done: none is marked, not even the failed one
    assert [(d.state, d.attempts) for d in ledger.deliveries(update_id=update.id)] == [
        (DeliveryState.SENT, 1), (DeliveryState.FAILED, 1), (DeliveryState.SKIPPED, 0)]
    # What each result leaves in its row (PostgreSQL writes the three kinds in one statement).
    assert [(d.remote_id, d.url, dict(d.meta), d.error) for d in ledger.deliveries(update_id=update.id)] == [
        ("m1", None, {}, None), (None, None, {}, "mailbox full"), (None, None, {}, "left the list")]
    # The failed one, again: in flight first (`start_attempts` counts it), then sent, with a whole
    # receipt; its error goes, and the attempt is not counted twice.
    ledger.start_attempts([ids[1]])
    ledger.finish([(ids[1], Receipt("m2", "https://example.com/m2", {"thread": "t1"}))], [])
    again = ledger.deliveries(update_id=update.id)[1]
    assert (again.state, again.attempts, again.remote_id, again.url, dict(again.meta), again.error) == (
        DeliveryState.SENT, 2, "m2", "https://example.com/m2", {"thread": "t1"}, None)


def test_a_write_of_results_that_waits_too_long_says_the_ledger_is_busy_and_changes_nothing(store: Settings):
    """Another process holds what the write needs (SQLite: the write lock; PostgreSQL: the
    delivery's row) for longer than the ledger waits: the write says the ledger is busy, in the
    store's words, and records nothing (PostgreSQL's `finish` is a statement of its own)."""
    update = an_update()
    with open_ledger(store) as ledger:
        ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(2)])
        ids = [c.id for c in ledger.claim("me", update_id=update.id, channel="email", limit=2,
                                          lease_seconds=60)]
    with open_ledger(store, busy_wait=0.3) as ledger, holding(store, ids[1]), \
            pytest.raises(LedgerBusyError, match="is busy"):
        ledger.finish([(ids[0], Receipt("m1"))], [(ids[1], "mailbox full")])
    with open_ledger(store, read_only=True) as ledger:
        assert {d.state for d in ledger.deliveries(update_id=update.id)} == {DeliveryState.IN_FLIGHT}


@contextmanager
def holding(store: Settings, delivery_id: int) -> Iterator[None]:
    """Another connection holding the store's lock on a delivery, in a transaction left open."""
    if store.state.url is None:
        other = sqlite3.connect(store.state.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        other = psycopg.connect(store.state.url, password=os.environ["BROADCASTER_STATE_PASSWORD"])
        other.execute("SELECT id FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,))
    try:
        yield
    finally:
        other.rollback()
        other.close()


def test_a_nul_in_what_a_platform_answered_is_recorded_as_u_fffd_on_both_stores(ledger: Ledger):
    """What a relay, a platform or an endpoint answered is stored as it came: an error, a post's
    id or address. A NUL may come with it (a webhook's response body is a partner's to write, a
    Mastodon or Bluesky server anyone's to run). PostgreSQL's text refuses NUL: left in, the
    write of a whole group of results failed and the fan-out stopped, and a post made was left
    unrecorded. The ledger keeps U+FFFD in its place, on both stores alike; a receipt's meta is
    JSON, where a NUL is already written as an escape."""
    update = an_update()
    people = [f"p{n}@example.com" for n in range(4)]
    ledger.record(update, [NewDelivery("email", "en", p) for p in people])
    ids = [c.id for c in ledger.claim("me", update_id=update.id, channel="email", limit=4, lease_seconds=60)]
    odd = Receipt("id\x00", "https://x.example/\x00", {"k": "v\x00"})
    ledger.finish([(ids[0], Receipt("m1")), (ids[3], odd)], [(ids[1], "550 no\x00such user")],
                  [(ids[2], "left\x00")])
    rows = ledger.deliveries(update_id=update.id)
    assert [(d.state, d.remote_id, d.url, d.meta, d.error) for d in rows] == [
        (DeliveryState.SENT, "m1", None, {}, None),
        (DeliveryState.FAILED, None, None, {}, "550 no\ufffdsuch user"),
        (DeliveryState.SKIPPED, None, None, {}, "left\ufffd"),
        (DeliveryState.SENT, "id\ufffd", "https://x.example/\ufffd", {"k": "v\x00"}, None)]
    ledger.mark_failed(ids[0], "HTTP 400: {\"detail\": \"bad\x00\"}")
    assert ledger.deliveries(update_id=update.id)[0].error == 'HTTP 400: {"detail": "bad\ufffd"}'
    post = an_update()
    ledger.record(post, [NewDelivery("mastodon", "en")])
    (delivery_id,) = [d.id for d in ledger.deliveries(update_id=post.id)]
    ledger.start_attempt(delivery_id)
    ledger.mark_sent(delivery_id, Receipt("109\x00", "https://social.example/@corp/109\x00", {"n": "\x00"}))
    (made,) = ledger.deliveries(update_id=post.id)
    assert (made.state, made.remote_id, made.url, made.meta) == (
        DeliveryState.SENT, "109\ufffd", "https://social.example/@corp/109\ufffd", {"n": "\x00"})


def test_a_selection_of_subscribers_is_recorded_set_based_in_their_locale_or_the_default(ledger: Ledger):
    people = [
        Subscriber("all-en@example.com", "en", (), (), "t1", True),
        Subscriber("all-fr@example.com", "fr", (), (), "t2", True),  # not a locale of the site: en
        Subscriber("all-es@example.com", "es", (), (), "t3", True),
        Subscriber("left@example.com", "en", (), (), "t4", True),
        Subscriber("api-only@example.com", "es", ("API",), (), "t5", True),
        Subscriber("north@example.com", "en", (), ("North",), "t6", True),
        Subscriber("postcode@example.com", "en", (), (), "t7", True, ("SW1",)),
    ]
    ledger.save_subscribers(people, [])
    ledger.unsubscribe(email="left@example.com")
    assert ledger.subscriber_locales() == {"en": 3, "fr": 1, "es": 2}
    assert ledger.subscriber_locales(unfiltered_only=True) == {"en": 1, "fr": 1, "es": 1}
    assert [s.email for s in ledger.each_subscriber(active_only=True, filtered_only=True)] == [
        "api-only@example.com", "north@example.com", "postcode@example.com"]

    def recorded(update: Update) -> set[tuple[str, str]]:
        listed = ledger.each_delivery(update_id=update.id, channels=["email"])
        return {(d.recipient, d.locale) for d in listed}

    scoped = an_update()
    counted = ledger.record(scoped, [NewDelivery("website", "en")],
                            [SubscriberSelection("email", ("en", "es"), ("en", "es"), everyone=False)])
    assert counted == {"email": 3}  # how many each mailing list got; posts are not counted
    assert recorded(scoped) == {("all-en@example.com", "en"), ("all-fr@example.com", "en"),
                                ("all-es@example.com", "es")}
    everyone = an_update()
    spanish = SubscriberSelection("email", ("en", "es"), ("es",), everyone=True)
    assert ledger.record(everyone, [], [spanish]) == {"email": 2}
    assert recorded(everyone) == {("all-es@example.com", "es"), ("api-only@example.com", "es")}
    assert ledger.channel_kinds() == {"website": False, "email": True}  # email is a mailing list


def test_a_mailing_list_is_recorded_streamed_from_the_subscribers_and_read_back_in_numbers(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    from broadcaster.ledger import sql

    monkeypatch.setattr(sql, "CHUNK", 7)  # several chunks in each direction
    people = [Subscriber(f"p{n:02}@example.com", "es" if n % 3 else "en", (), (), f"token-{n}", True)
              for n in range(30)]
    ledger.save_subscribers(people, [])
    ledger.unsubscribe(email="p04@example.com")
    assert [s.email for s in ledger.each_subscriber(active_only=True)] == [
        p.email for p in people if p.email != "p04@example.com"]
    assert len(list(ledger.each_subscriber())) == 30
    update = an_update()
    # Read from the same ledger while its own transaction writes, as an announcement does.
    streamed = (NewDelivery("email", s.locale, s.email, listed=True)
                for s in ledger.each_subscriber(active_only=True))
    assert ledger.record(update, itertools.chain([NewDelivery("website", "en")], streamed)) == {"email": 29}
    assert [d.recipient for d in ledger.each_delivery(update_id=update.id, channels=["email"])] == [
        p.email for p in people if p.email != "p04@example.com"]
    (website,) = ledger.deliveries(update_id=update.id, excluded=["email"])
    ids = [c.id for c in ledger.claim("me", update_id=update.id, channel="email", limit=5, lease_seconds=60)]
    ledger.finish([(i, Receipt(f"m{i}")) for i in ids[:3]], [(ids[3], "mailbox full")], [(ids[4], "left")])
    counts = {(c.locale, c.state.value): (c.count, c.attempts)
              for c in ledger.delivery_counts(channels=["email"], update_id=update.id)}
    expected: dict[tuple[str, str], tuple[int, int]] = {}
    by_address = {p.email: p.locale for p in people}
    states = ["sent", "sent", "sent", "failed", "skipped"]
    for d in ledger.deliveries(update_id=update.id, channels=["email"]):
        state = states[ids.index(d.id)] if d.id in ids else "pending"
        count, attempts = expected.get((by_address[d.recipient], state), (0, 0))
        tried = d.id in ids and state != "skipped"  # skipped: not sent after all, not an attempt
        expected[by_address[d.recipient], state] = (count + 1, max(attempts, int(tried)))
    assert counts == expected and sum(n for n, _ in counts.values()) == 29 and website.recipient == ""
    page = ledger.deliveries(update_id=update.id, channels=["email"], after_id=ids[1], limit=2)
    assert [d.id for d in page] == ids[2:4]
    assert ledger.deliveries(update_id=update.id, channels=[]) == []
    assert ledger.delivery_counts(channels=[], update_id=update.id) == []


def test_an_incidents_lists_are_counted_per_update_channel_locale_and_state_in_that_order(ledger: Ledger):
    """The counts of an incident: each update's lists on each channel asked for, in the order
    of (update, channel, locale, state); another incident's lists and channels not asked for
    are not counted, and recipients held by a live claim read as in flight."""
    first = an_update()
    ledger.record(first, [NewDelivery("email", loc, f"{loc}{n}@example.com", listed=True)
                          for n in range(3) for loc in ("es", "en")]
                  + [NewDelivery("slack", "en", "#ops", listed=True), NewDelivery("website", "en")])
    second = an_update(first.incident_id, 2, kind=Kind.UPDATE, status=Status.IDENTIFIED)
    ledger.record(second, [NewDelivery("email", "en", "en0@example.com", listed=True)])
    other = an_update()
    ledger.record(other, [NewDelivery("email", "en", "en0@example.com", listed=True)])
    held = ledger.claim("me", update_id=first.id, channel="email", limit=2, lease_seconds=60)
    ledger.finish([(held[0].id, Receipt("m1"))], [])
    (later,) = ledger.claim("me", update_id=second.id, channel="email", limit=1, lease_seconds=60)
    ledger.finish([], [(later.id, "mailbox full")])
    counts = [(c.update_id, c.channel, c.locale, c.state.value, c.count, c.attempts)
              for c in ledger.delivery_counts(channels=["slack", "email"], incident_id=first.incident_id)]
    locales = {c.id: c.locale for c in held}
    assert counts == sorted([
        (first.id, "email", "en", "pending", 3 - list(locales.values()).count("en"), 0),
        (first.id, "email", "es", "pending", 3 - list(locales.values()).count("es"), 0),
        (first.id, "email", locales[held[0].id], "sent", 1, 1),
        (first.id, "email", locales[held[1].id], "in_flight", 1, 0),
        (first.id, "slack", "en", "pending", 1, 0),
        (second.id, "email", "en", "failed", 1, 1),
    ], key=lambda c: (c[0], c[1], c[2], c[3])), counts
    assert [c.update_id for c in ledger.delivery_counts(channels=["email"], update_id=other.id)] == [other.id]


def test_the_ledger_remembers_each_channels_kind_and_an_incidents_channels(ledger: Ledger):
    """`show` learns which channels are mailing lists from the ledger, not from channel code,
    and which channels an incident used without reading every recipient."""
    assert ledger.channel_kinds() == {}
    first = an_update()
    ledger.record(first, [NewDelivery("website", "en"), NewDelivery("webhook", "en", "ops"),
                          NewDelivery("webhook", "en", "partners"),
                          *(NewDelivery("email", "en", f"p{n}@example.com", listed=True) for n in range(50))])
    assert ledger.channel_kinds() == {"website": False, "webhook": False, "email": True}
    later = an_update(first.incident_id, seq=2)
    ledger.record(later, [NewDelivery("slack", "en")])
    assert ledger.channels_of(first.incident_id) == ["email", "slack", "webhook", "website"]
    other = an_update()
    ledger.record(other, [NewDelivery("pigeonpost", "en", "coop-1", listed=True)])
    assert ledger.channels_of(other.incident_id) == ["pigeonpost"]
    assert ledger.channel_kinds()["pigeonpost"] is True
    draft = an_update(draft=True)
    ledger.record(draft, [])
    assert ledger.channels_of(draft.incident_id) == []


def test_a_mailing_list_is_claimed_in_disjoint_batches_under_leases(store: Settings, ledger: Ledger):
    update = an_update()
    people = [f"p{n}@example.com" for n in range(10)]
    ledger.record(update, [NewDelivery("website", "en"), *(NewDelivery("email", "en", p) for p in people)])

    def claim(on: Ledger, owner: str, limit: int = 10, lease: float = 3600, **more: object) -> list[int]:
        return [d.id for d in on.claim(owner, update_id=update.id, channel="email", limit=limit,
                                       lease_seconds=lease, **more)]  # type: ignore[arg-type]

    with open_ledger(store) as other:  # another process
        a, b = claim(ledger, "a", 4), claim(other, "b", 4)
        c = claim(other, "c", 4, lease=-1)  # a holder whose lease has already run out
    assert len(a) == len(b) == 4 and len(c) == 2 and sorted(a + b + c) == a + b + c, "disjoint, in order"
    (website,) = ledger.open_groups(["website"])
    assert (website.update_id, website.free, website.leased) == (update.id, 1, 0)
    (group,) = ledger.open_groups(["email"], update_id=update.id)
    assert (group.seq, group.free, group.leased) == (1, 2, 8), "an expired lease is free again"
    assert claim(ledger, "d") == c and claim(ledger, "e") == []

    assert ledger.renew("a", 3600, a) == 4
    ledger.finish([(a[0], Receipt("m0"))], [(a[1], "mailbox full")])
    assert ledger.renew("a", 3600, a) == 2, "what is settled is no longer held"
    ledger.release("b", b)
    assert claim(ledger, "f", states=("pending", "in_flight", "failed")) == [a[1], *b], (
        "given back, and a failed delivery binds nobody")
    assert claim(ledger, "g", after_id=b[-1], lease=-1) == []


def test_leases_are_renewed_and_given_back_by_the_ids_in_hand(ledger: Ledger):
    """A sender renews the batch in hand by its ids: the whole lease over them, however few of
    them are left unsettled; someone else's lease among the ids is left alone. Giving back part
    of a batch frees that part (in doubt: a copy may have gone) and keeps the rest held."""
    update = an_update()
    ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(12)])

    def claim(owner: str, lease: float, limit: int = 4) -> list[int]:
        return [c.id for c in ledger.claim(owner, update_id=update.id, channel="email", limit=limit,
                                           lease_seconds=lease)]

    a = claim("a", 1)  # a lease about to run out
    b = claim("b", 3600)
    ledger.finish([(a[0], Receipt("m0"))], [])
    assert ledger.renew("a", 3600, [a[1], *b]) == 1, "a's one among them, none of b's"
    c = claim("c", 1)  # another about to run out, not renewed
    time.sleep(1.2)
    (group,) = ledger.open_groups(["email"], update_id=update.id)
    assert (group.free, group.leased) == (4, 7), "c's ran out; a's renewed whole, and b's"
    assert ledger.sending("email") == ["a", "b"] and ledger.sending("slack") == [], (
        "who shares the relay: the live leases' holders, not c, whose lease ran out")
    ledger.release("a", [a[1]])
    taken = ledger.claim("d", update_id=update.id, channel="email", limit=10, lease_seconds=3600)
    assert [(t.id, t.resumed) for t in taken] == [(i, True) for i in [a[1], *c]], (
        "the one given back and the four run out, each in doubt")
    assert ledger.renew("a", 3600, a) == 2 and ledger.renew("b", 3600, []) == 0
    ledger.finish([(i, Receipt(f"m{i}")) for i in a[2:]], [])
    ledger.release("a", a)
    ledger.release("b", b)
    (group,) = ledger.open_groups(["email"], update_id=update.id)
    assert (group.free, group.leased) == (4, 5), "a's done; b's given back; d's held"
    assert ledger.sending("email") == ["d"], "a settled its lease, b gave its back"
    given_back = {d.state for d in ledger.deliveries(update_id=update.id) if d.id in b}
    assert given_back == {DeliveryState.IN_FLIGHT}, "given back, unsent: in flight (in doubt) until sent"


def test_a_batch_cut_short_is_given_back_when_its_sender_stops(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    """A sender whose batch stops half-way (the disk filled) gives its leases back as it stops,
    so another sender takes the batch over at once rather than when the lease runs out."""
    from broadcaster.dispatch import AudienceBatch, Dispatcher, RetryPolicy, Sharing
    from broadcaster.errors import LedgerWriteError

    update = an_update()
    ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(6)])
    batches: list[list[int]] = []

    def run(batch: AudienceBatch) -> None:
        batches.append([c.id for c in batch.claimed])
        if len(batches) == 2:
            raise LedgerWriteError("the disk is full")
        ledger.finish([(c.id, Receipt(f"m{c.id}")) for c in batch.claimed], [])

    monkeypatch.setattr(AudienceBatch, "run", run)
    sender = Dispatcher(ledger, RetryPolicy(1, 0, 0), [], sharing=Sharing("me", batch=3, lease_seconds=3600))
    channel = types.SimpleNamespace(spec=types.SimpleNamespace(name="email"))
    with pytest.raises(LedgerWriteError), sender.leases():
        sender.fan_out(channel, update.incident_id, update.id, update.seq, {"en": None},  # type: ignore[arg-type]
                       total=6, wait_for_others=False)
    assert len(batches) == 2
    (group,) = ledger.open_groups(["email"], update_id=update.id)
    assert (group.free, group.leased) == (3, 0), "the second batch is free again, not held for an hour"


def test_a_sender_holding_a_batch_hears_who_else_sends_while_it_sends(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch):
    """The relay's rate is shared by the senders holding batches of the channel's lists: one
    that joins while this sender is in the middle of its batch is heard of within
    `SHARE_EVERY` (not only at this sender's next claim), and so is one that leaves. A count
    the ledger cannot give (busy a moment) leaves the share as it was and the sending going."""
    from broadcaster import defaults
    from broadcaster.channels.base import AudienceChannel
    from broadcaster.dispatch import AudienceBatch, Dispatcher, RetryPolicy, Sharing

    monkeypatch.setattr(defaults, "SHARE_EVERY", 0.05)
    update = an_update()
    ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(6)])
    heard: list[tuple[int, int]] = []

    class Paced(AudienceChannel):
        spec = types.SimpleNamespace(name="email")  # type: ignore[assignment]

        def __init__(self) -> None:
            pass

        def send_batch(self, post, recipients, report) -> None:  # type: ignore[no-untyped-def]
            raise AssertionError("not sent here")

        def shared_by(self, senders: int, rank: int) -> None:
            heard.append((senders, rank))

    def until(what: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not what():
            assert time.monotonic() < deadline, heard
            time.sleep(0.01)

    def run(batch: AudienceBatch) -> None:
        assert heard == [(1, 0)], "at the claim: alone"
        other = ledger.claim("b-other", update_id=update.id, channel="email", limit=3, lease_seconds=60)
        until(lambda: heard[-1] == (2, 0))  # "a-me" sorts first
        ledger.finish([(c.id, Receipt(f"m{c.id}")) for c in other], [])
        ledger.release("b-other", [c.id for c in other])
        until(lambda: heard[-1] == (1, 0))
        with monkeypatch.context() as busy:
            busy.setattr(type(ledger), "sending", lambda self, channel: 1 / 0)
            count = len(heard)
            time.sleep(0.3)
            assert len(heard) == count, "a count that failed tells nothing"
        until(lambda: len(heard) > count)  # and the counting goes on
        ledger.finish([(c.id, Receipt(f"m{c.id}")) for c in batch.claimed], [])

    monkeypatch.setattr(AudienceBatch, "run", run)
    sender = Dispatcher(ledger, RetryPolicy(1, 0, 0), [], sharing=Sharing("a-me", batch=3, lease_seconds=60))
    with sender.leases():
        handled = sender.fan_out(Paced(), update.incident_id, update.id, update.seq, {"en": None},  # type: ignore[dict-item]
                                 total=6, wait_for_others=False)
    assert handled == 3 and heard[0] == (1, 0)


def test_a_claim_brings_each_subscribers_token_and_none_for_who_left(ledger: Ledger):
    """The token each copy's unsubscribe link carries is read with the claim: someone who left
    after the update was recorded (or who is no subscriber at all) comes with none, and is
    skipped rather than sent."""
    ledger.save_subscribers([Subscriber(f"p{n}@example.com", "en", (), (), f"token-{n}", True)
                             for n in range(4)], [])
    update = an_update()
    listed = ("p0@example.com", "p1@example.com", "p2@example.com", "nobody@example.com")
    ledger.record(update, [NewDelivery("email", "en", a, listed=True) for a in listed])
    ledger.unsubscribe(email="p1@example.com")
    claimed = ledger.claim("me", update_id=update.id, channel="email", limit=2, lease_seconds=60)
    assert [(c.recipient, c.token) for c in claimed] == [("p0@example.com", "token-0"),
                                                         ("p1@example.com", None)]
    ledger.unsubscribe(email="p2@example.com")  # between one batch and the next
    rest = ledger.claim("me", update_id=update.id, channel="email", limit=5, lease_seconds=60,
                        after_id=claimed[-1].id)
    assert [(c.recipient, c.token) for c in rest] == [("p2@example.com", None), ("nobody@example.com", None)]


def test_a_claim_says_who_each_recipient_is_and_how_often_they_were_tried(ledger: Ledger):
    """What sending needs comes back with the claim, in the order recorded: the recipient, the
    locale of their post, and whether a copy may already have reached them. The claim writes no
    delivery (they read as in flight under its lease); the attempts are counted with the
    results, or when a batch given back is claimed again (in doubt)."""
    update = an_update()
    people = [(f"p{n}@example.com", "es" if n % 2 else "en") for n in range(6)]
    ledger.record(update, [NewDelivery("email", locale, p, listed=True) for p, locale in people])
    first = ledger.claim("a", update_id=update.id, channel="email", limit=6, lease_seconds=3600)
    assert [(c.recipient, c.locale, c.resumed) for c in first] == [(p, loc, False) for p, loc in people]
    assert [c.id for c in first] == sorted(c.id for c in first)
    delivered = ledger.deliveries(update_id=update.id)
    assert {(d.state, d.attempts) for d in delivered} == {(DeliveryState.IN_FLIGHT, 0)}
    ledger.start_attempts([first[1].id, first[4].id], claimed=True)  # a second round for two of them
    assert [d.attempts for d in ledger.deliveries(update_id=update.id)] == [0, 2, 0, 0, 2, 0]
    ledger.release("a", [c.id for c in first])
    again = ledger.claim("b", update_id=update.id, channel="email", limit=6, lease_seconds=3600)
    assert again == [c._replace(resumed=True) for c in first]
    ledger.finish([(c.id, Receipt(f"m{c.id}")) for c in again], [])
    assert [d.attempts for d in ledger.deliveries(update_id=update.id)] == [2, 3, 2, 2, 3, 2]


def test_a_batch_given_back_is_exported_in_flight_and_a_settled_one_names_its_sender(ledger: Ledger):
    """Leases stay in the store they were taken in: an export writes what a lease covers as in
    flight (in doubt in the other store too). A batch whose results are all recorded is settled
    by its sender and kept as who sent it."""
    update = an_update()
    ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com", listed=True) for n in range(6)])
    sent = [c.id for c in ledger.claim("a", update_id=update.id, channel="email", limit=3, lease_seconds=60)]
    held = [c.id for c in ledger.claim("b", update_id=update.id, channel="email", limit=3, lease_seconds=60)]
    ledger.finish([(i, Receipt(f"m{i}")) for i in sent], [])
    ledger.release("a", sent)
    exported = {row["id"]: row["state"] for table, row in ledger.export_rows() if table == "deliveries"}
    assert exported == {**dict.fromkeys(sent, "sent"), **dict.fromkeys(held, "in_flight")}
    assert ledger.senders("email") == {"a": 3}


def test_a_lease_that_ran_out_is_forgotten_once_another_sender_finished_its_batch(ledger: Ledger):
    """A lease that ran out puts its batch in doubt only while some of it is unsettled: once
    another sender finished it, the next claim on the list forgets it. The taker's lease,
    settled, stays as who sent the batch."""
    update = an_update()
    ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(3)])

    def claim(owner: str, lease: float, limit: int) -> list[Claimed]:
        return ledger.claim(owner, update_id=update.id, channel="email", limit=limit, lease_seconds=lease)

    dead = claim("dead", -1, 2)  # its sender stopped: the lease has run out
    taken = claim("taker", 60, 2)
    assert [c.id for c in taken] == [c.id for c in dead] and all(c.resumed for c in taken)
    ledger.finish([(c.id, Receipt(f"m{c.id}")) for c in taken], [])
    ledger.release("taker", [c.id for c in taken])
    (last,) = claim("next", 60, 10)
    assert not last.resumed, "not in doubt: the lease that ran out never covered it"
    leases = ledger.query("SELECT owner, settled_at IS NOT NULL FROM leases ORDER BY id")  # type: ignore[attr-defined]
    assert [(owner, bool(settled)) for owner, settled in leases] == [("taker", True), ("next", False)]


@pytest.mark.sqlite_only
def test_a_batch_leased_row_by_row_before_the_upgrade_is_honoured_then_resumed(
        tmp_path: Path, request: pytest.FixtureRequest):
    """SQLite: deliveries a sender from before leases had their table left in flight, each
    with its own lease, are nobody else's until that lease runs out; then they are claimed in
    doubt, and their earlier attempt stays counted."""
    with open_ledger(sqlite_store(tmp_path, request)) as ledger:
        update = an_update()
        ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(4)])
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat(timespec="microseconds")
        ledger._db.execute(  # type: ignore[attr-defined]
            "UPDATE deliveries SET state = 'in_flight', attempts = 1, lease_owner = 'old', lease_until = ?"
            " WHERE id IN (SELECT id FROM deliveries ORDER BY id LIMIT 2)", (soon,))

        def claim() -> list[tuple[str, bool]]:
            return [(c.recipient, c.resumed) for c in ledger.claim(
                "new", update_id=update.id, channel="email", limit=10, lease_seconds=60)]

        assert claim() == [("p2@example.com", False), ("p3@example.com", False)]
        time.sleep(1.1)
        assert claim() == [("p0@example.com", True), ("p1@example.com", True)]
        ledger.finish([(d.id, Receipt("m")) for d in ledger.deliveries(update_id=update.id)], [])
        assert [d.attempts for d in ledger.deliveries(update_id=update.id)] == [2, 2, 1, 1]


def test_a_claim_reads_its_batch_not_the_whole_list(tmp_path: Path, request: pytest.FixtureRequest):
    """SQLite: what one claim costs, counted in SQLite's virtual-machine steps (the same on any
    machine), does not grow with the list. It used to read every delivery of the update back to
    find the batch: at a million subscribers, a million rows for each batch of 500."""

    def steps(size: int) -> int:
        with open_ledger(sqlite_store(tmp_path / str(size), request)) as ledger:
            update = an_update()
            ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(size)])
            counted = [0]

            def step() -> int:
                counted[0] += 1
                return 0

            ledger._db.set_progress_handler(step, 100)  # type: ignore[attr-defined]
            batch = ledger.claim("a", update_id=update.id, channel="email", limit=50, lease_seconds=60)
            ledger._db.set_progress_handler(None, 100)  # type: ignore[attr-defined]
            assert len(batch) == 50
            return counted[0]

    small, large = steps(200), steps(4_000)
    assert large < small * 1.5, f"{small:,} hundred steps for a list of 200, {large:,} for 4,000"


def test_the_unfinished_deliveries_have_one_index_and_every_query_for_them_reads_it(
        tmp_path: Path, request: pytest.FixtureRequest):
    """SQLite: a claim, the open groups and `retry`'s search read the one partial index of
    unfinished deliveries. SQLite uses a partial index only when the query repeats its condition
    word for word, so a query reworded carelessly would read a million rows instead; and a
    second index over the same rows would be rewritten for each recipient claimed and sent."""
    with open_ledger(sqlite_store(tmp_path, request)) as ledger:
        db = ledger._db  # type: ignore[attr-defined]
        update = an_update()
        ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(300)])
        indexes = [sql for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'"
            " AND sql LIKE '%state%'")]
        assert indexes == ["CREATE INDEX deliveries_unfinished ON deliveries (update_id, channel, id)"
                           " WHERE state NOT IN ('sent', 'skipped')"]
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        ledger.claim("a", update_id=update.id, channel="email", limit=50, lease_seconds=60)
        ledger.open_groups(["email"])
        ledger.open_groups(["email"], update_id=update.id)
        ledger.unfinished_incidents()
        db.set_trace_callback(None)
        reads = [s for s in statements if s.lstrip().startswith(("SELECT", "UPDATE")) and "deliveries" in s]
        assert len(reads) == 6  # the claim, each open-group query twice (the leases' share), retry's
        for statement in reads:
            plan = " / ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement))
            assert "USING INDEX deliveries_unfinished" in plan, f"{statement[:80]}…: {plan}"


def test_the_thread_is_the_earlier_sent_posts_in_order(ledger: Ledger):
    first = an_update()
    ledger.record(first, [NewDelivery("twitter", "en"), NewDelivery("email", "en", "ana@example.com")])
    for d in ledger.deliveries(update_id=first.id):
        ledger.mark_sent(d.id, Receipt(f"{d.channel}-1"))
    second = an_update(first.incident_id, 2, kind=Kind.UPDATE, status=Status.IDENTIFIED)
    ledger.record(second, [NewDelivery("twitter", "en"), NewDelivery("email", "en", "ana@example.com")])
    assert ledger.thread(first.incident_id, "twitter", 2) == [Receipt("twitter-1")]
    assert ledger.thread(first.incident_id, "twitter", 1) == []
    assert ledger.first_receipts(first.incident_id, "email", 2, ["ana@example.com", "bob@example.com"]) == {
        "ana@example.com": Receipt("email-1")}
    assert ledger.first_receipts(first.incident_id, "email", 2, ["bob@example.com"]) == {}
    assert ledger.incident(first.incident_id).status is Status.IDENTIFIED


def test_each_recipients_first_email_is_from_the_earliest_update_that_reached_them(ledger: Ledger):
    """Email threads: per recipient, their first sent delivery of the incident, however many
    updates came before and however many recipients are asked for at once (more than one
    query's worth of them)."""
    first = an_update()
    many = [f"p{n:04}@example.com" for n in range(1200)]
    everyone = [*many, "ana@example.com", "bob@example.com"]
    ledger.record(first, [NewDelivery("email", "en", a) for a in everyone])
    for d in ledger.deliveries(update_id=first.id):
        if d.recipient == "bob@example.com":  # the first email to bob failed
            ledger.mark_failed(d.id, "refused")
        else:
            ledger.mark_sent(d.id, Receipt(f"<1.{d.recipient}>"))
    second = an_update(first.incident_id, 2, kind=Kind.UPDATE, status=Status.IDENTIFIED)
    ledger.record(second, [NewDelivery("email", "en", a) for a in ("ana@example.com", "bob@example.com",
                                                                     "cy@example.com")])
    for d in ledger.deliveries(update_id=second.id):
        ledger.mark_sent(d.id, Receipt(f"<2.{d.recipient}>", meta={"kept": d.recipient}))
    asked = ["bob@example.com", *many, "ana@example.com", "cy@example.com", "dee@example.com"]
    found = ledger.first_receipts(first.incident_id, "email", 3, asked)
    assert found == {**{a: Receipt(f"<1.{a}>") for a in many},
                     "ana@example.com": Receipt("<1.ana@example.com>"),
                     "bob@example.com": Receipt("<2.bob@example.com>", meta={"kept": "bob@example.com"}),
                     "cy@example.com": Receipt("<2.cy@example.com>", meta={"kept": "cy@example.com"})}
    assert ledger.first_receipts(first.incident_id, "email", 2, ["bob@example.com", "cy@example.com"]) == {}
    assert ledger.first_receipts(first.incident_id, "twitter", 3, ["ana@example.com"]) == {}


def test_drafts_stay_out_of_sight_until_published(ledger: Ledger):
    draft = an_update(draft=True)
    ledger.record(draft, [])
    assert ledger.incidents() == [] and ledger.months() == []
    assert [i.id for i in ledger.incidents(include_drafts=True)] == [draft.incident_id]
    assert [i.id for i in ledger.incidents_with_drafts()] == [draft.incident_id]
    revised = draft._replace(texts={"en": Text("Revised", "Worse.")})
    ledger.revise_draft(revised)
    assert ledger.incident(draft.incident_id).updates[0].texts["en"].title == "Revised"
    (published,) = ledger.publish(draft.incident_id, [NewDelivery("website", "en")])
    assert not published.draft and ledger.incidents_with_drafts() == []
    assert [i.id for i in ledger.incidents()] == [draft.incident_id]
    assert len(ledger.deliveries(update_id=published.id)) == 1
    with pytest.raises(UnknownIncidentError, match="not a draft"):
        ledger.revise_draft(published)


def test_a_discarded_incident_is_kept_but_shown_nowhere(ledger: Ledger):
    draft = an_update(draft=True)
    ledger.record(draft, [])
    assert ledger.discard_drafts(draft.incident_id) == [draft.id]
    assert ledger.incidents(include_drafts=True) == []
    with pytest.raises(UnknownIncidentError, match="discarded"):
        ledger.incident(draft.incident_id)


def test_a_discarded_follow_up_keeps_its_number_and_the_next_update_takes_the_one_after(ledger: Ledger):
    first = an_update()
    ledger.record(first, [])
    ledger.record(an_update(first.incident_id, 2, kind=Kind.UPDATE, draft=True), [])
    ledger.discard_drafts(first.incident_id)
    incident = ledger.incident(first.incident_id)
    assert [u.seq for u in incident.updates] == [1] and incident.next_seq == 3
    ledger.record(an_update(first.incident_id, 3, kind=Kind.UPDATE), [])
    assert [u.seq for u in ledger.incident(first.incident_id).updates] == [1, 3]


def test_months_count_published_incidents_by_when_they_started(ledger: Ledger):
    updates = [an_update() for _ in range(2)]
    for update in updates:
        ledger.record(update, [])
    month = updates[0].created_at.strftime("%Y-%m")
    assert ledger.months() == [(month, 2)]
    assert {i.id for i in ledger.incidents_of_month(month)} == {u.incident_id for u in updates}
    assert ledger.incidents(limit=1) and len(ledger.incidents(limit=1)) == 1


def test_subscribers_are_added_changed_and_unsubscribed_by_token(ledger: Ledger):
    ana = Subscriber("ana@example.com", "es", ("Payments API",), ("Madrid",), "tok-ana-0123456789", True,
                     ("28013",))
    ledger.save_subscribers([ana], [])
    assert ledger.subscriber(email="ana@example.com") == ana
    assert ledger.subscriber(token="tok-ana-0123456789") == ana
    many = [f"nobody{n}@example.com" for n in range(600)]  # read a few hundred at a time
    assert ledger.subscribers_by_email([*many, "ana@example.com"]) == {"ana@example.com": ana}
    moved = Subscriber("ana@example.com", "en", regions=("Sevilla",))
    ledger.save_subscribers([], [moved])
    (now,) = list(ledger.each_subscriber(active_only=True))
    assert (now.locale, now.regions, now.token) == ("en", ("Sevilla",), "tok-ana-0123456789")
    assert ledger.unsubscribe(token="tok-ana-0123456789") == now
    assert ledger.unsubscribe(token="tok-ana-0123456789") is None, "already out"
    assert list(ledger.each_subscriber(active_only=True)) == []
    assert [s.active for s in list(ledger.each_subscriber())] == [False], "kept on file, inactive"
    assert ledger.subscribers_by_email(["ana@example.com", "bob@example.com"]).keys() == {"ana@example.com"}


def a_request(email: str = "ana@example.com", hours: float = 48) -> SubscriptionRequest:
    now = datetime.now(UTC)
    return SubscriptionRequest(Subscriber(email, "es", ("Checkout",), ("Madrid",), postcodes=("28004",),
                                          active=False),
                               {"at": now.isoformat(), "shown": "words", "ip_hash": "ab" * 16},
                               now, now + timedelta(hours=hours))


def test_a_subscription_request_is_confirmed_once_and_before_it_expires(ledger: Ledger):
    request = a_request()
    ledger.add_subscription_request("hash-1", request)
    ledger.add_subscription_request("hash-old", a_request(hours=-1))
    assert ledger.subscription_request("hash-1") == request
    assert [r.subscriber.email for r in ledger.subscription_requests(pending_at=datetime.now(UTC))] == [
        "ana@example.com"], "the expired one is not pending"
    assert list(ledger.each_subscriber()) == [], "a request is not a subscription"
    assert ledger.confirm_subscription("hash-old", "tok-new-0123456789", datetime.now(UTC)) is None
    ana = ledger.confirm_subscription("hash-1", "tok-new-0123456789", datetime.now(UTC))
    assert ana == Subscriber("ana@example.com", "es", ("Checkout",), ("Madrid",), "tok-new-0123456789", True,
                             ("28004",))
    assert ledger.confirm_subscription("hash-1", "tok-other-0123456789", datetime.now(UTC)) is None, "once"
    assert ledger.subscription_request("hash-1").confirmed_at is not None
    assert ledger.subscription_requests(pending_at=datetime.now(UTC)) == []
    assert ledger.subscriber_counts() == {"active": 1, "unsubscribed": 0}
    # Unsubscribed, then confirmed again: active with the new choices, and the same token.
    ledger.unsubscribe(token="tok-new-0123456789")
    assert ledger.subscriber_counts() == {"active": 0, "unsubscribed": 1}
    assert not ledger.update_preferences("tok-new-0123456789", Subscriber("ana@example.com", "en")), "left"
    ledger.add_subscription_request("hash-2", a_request())
    again = ledger.confirm_subscription("hash-2", "tok-ignored-0123456789", datetime.now(UTC))
    assert again.token == "tok-new-0123456789" and again.active
    assert ledger.update_preferences("tok-new-0123456789", Subscriber("ana@example.com", "en", ("Payments",)))
    assert ledger.subscriber(email="ana@example.com").components == ("Payments",)
    consent = ledger.person("ana@example.com")["subscribers"][0]["consent"]
    assert '"confirmed_at"' in consent and '"ip_hash"' in consent


def test_rate_limit_windows_count_and_reset(ledger: Ledger):
    assert [ledger.hit("ip:x", limit=2, window=60, now=1000.0) for _ in range(2)] == [None, None]
    assert ledger.hit("ip:x", limit=2, window=60, now=1010.0) == 50.0, "until the window ends"
    assert ledger.hit("ip:y", limit=2, window=60, now=1010.0) is None, "each key on its own"
    assert ledger.hit("ip:x", limit=2, window=60, now=1060.0) is None, "a new window"


def test_erasing_a_person_keeps_sent_records_under_an_alias(ledger: Ledger):
    update = an_update()
    ledger.record(update, [NewDelivery("email", "es", "ana@example.com"),
                           NewDelivery("email", "es", "bob@example.com")])
    sent, bob = sorted(ledger.deliveries(update_id=update.id), key=lambda d: d.recipient)
    ledger.mark_sent(sent.id, Receipt("<m@example.com>"))
    ledger.mark_failed(bob.id, "the SMTP server refused bob@example.com")
    later = an_update(update.incident_id, 2, kind=Kind.UPDATE, status=Status.IDENTIFIED)
    ledger.record(later, [NewDelivery("email", "es", "ana@example.com")])
    ledger.save_subscribers([Subscriber("ana@example.com", "es", token="tok-ana-0123456789")], [])
    ledger.add_subscription_request("hash-1", a_request())
    ledger.hit("address:k", limit=1, window=60, now=time.time())
    held = ledger.person("ana@example.com")
    assert [len(held[t]) for t in ("subscribers", "subscription_requests", "deliveries")] == [1, 1, 2]
    assert "tok-ana-0123456789" not in repr(held), "no secrets in an export"
    counts = ledger.erase_person("ana@example.com", "erased-1", ["address:k"])
    assert counts == {"subscribers": 1, "subscription_requests": 1, "deliveries_cancelled": 1,
                      "deliveries": 2}
    assert ledger.person("ana@example.com") == {"subscribers": [], "subscription_requests": [],
                                                "deliveries": []}
    states = {(d.update_id, d.recipient): d.state
              for d in ledger.deliveries(incident_id=update.incident_id)}
    assert states == {(update.id, "erased-1"): DeliveryState.SENT,
                      (later.id, "erased-1"): DeliveryState.SKIPPED,
                      (update.id, "bob@example.com"): DeliveryState.FAILED}
    ledger.erase_person("bob@example.com", "erased-2", [])
    (bob,) = [d for d in ledger.deliveries(update_id=update.id) if d.recipient == "erased-2"]
    assert bob.state == DeliveryState.SKIPPED and bob.error == "the recipient was erased"
    assert "bob@example.com" not in repr(list(ledger.export_rows())), "not even in an error message"
    assert ledger.hit("address:k", limit=1, window=60, now=time.time()) is None, "its counter is gone"


def test_alert_groups_and_automatic_publications_are_remembered(ledger: Ledger):
    update = an_update()
    ledger.record(update, [])
    assert ledger.hook_incident("alertmanager:g1") is None
    ledger.save_hook_key("alertmanager:g1", update.incident_id, auto_published=True)
    ledger.save_hook_key("generic:k2", update.incident_id, auto_published=False)
    assert ledger.hook_incident("alertmanager:g1") == update.incident_id
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert ledger.auto_published_since(hour_ago) == 1
    assert ledger.auto_published_since(datetime.now(UTC) + timedelta(seconds=5)) == 0


def test_a_signature_is_accepted_once_until_it_is_forgotten_or_too_old(ledger: Ledger):
    now = time.time()
    assert ledger.remember_signature("sha256=aa", now, 600)
    assert not ledger.remember_signature("sha256=aa", now + 1, 600), "a replay"
    ledger.forget_signature("sha256=aa")
    assert ledger.remember_signature("sha256=aa", now + 2, 600)
    assert ledger.remember_signature("sha256=aa", now + 700, 600), "older than the window: pruned"


def test_a_reminder_is_claimed_once_and_can_be_given_back(ledger: Ledger):
    update = an_update()
    ledger.record(update, [])
    now = datetime.now(UTC)
    assert ledger.claim_reminder(update.id, now)
    assert not ledger.claim_reminder(update.id, now)
    ledger.release_reminder(update.id)
    assert ledger.claim_reminder(update.id, now)


def test_an_incident_is_held_by_one_ledger_at_a_time(store: Settings):
    order: list[str] = []
    incident_id = new_incident_id()
    with open_ledger(store) as first, open_ledger(store) as second:
        held = first.incident_lock(incident_id)
        held.__enter__()

        def other() -> None:
            with second.incident_lock(incident_id):
                order.append("second holds it")

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.3)  # it must still be waiting: the first holds the incident
        order.append("first lets go")
        held.__exit__(None, None, None)
        thread.join(30)
    assert order == ["first lets go", "second holds it"]


def test_a_service_lock_is_one_per_kind_of_work(store: Settings):
    with open_ledger(store) as first, open_ledger(store) as second:
        locks: list[AbstractContextManager[None]] = [first.service_lock("tick"), second.service_lock("site")]
        for lock in locks:
            lock.__enter__()  # different kinds do not wait for each other
        for lock in reversed(locks):
            lock.__exit__(None, None, None)


def test_a_read_only_view_writes_nothing_not_even_the_store(store: Settings):
    with open_ledger(store, read_only=True) as view:
        assert view.incidents() == [] and list(view.each_subscriber()) == []
        assert view.subscribers_by_email(["ana@example.com"]) == {}
        view.ping()
    assert nothing_written(store)
    with open_ledger(store) as ledger:
        ledger.record(an_update(), [])
    with open_ledger(store, read_only=True) as view:
        assert len(view.incidents()) == 1


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A second, empty store of each kind: where an export goes."""
    return IMPLEMENTATIONS[request.param](tmp_path / "target", request)


def test_an_export_imports_whole_into_any_store(store: Settings, target: Settings, tmp_path: Path):
    from broadcaster import api

    with open_ledger(store) as ledger:
        first = an_update()
        ledger.record(first, [NewDelivery("twitter", "en"), NewDelivery("email", "es", "ana@example.com")])
        for d in ledger.deliveries(update_id=first.id):
            ledger.mark_sent(d.id, Receipt(f"{d.channel}-1", "https://x.example/1", {"parts": ["1"]}))
        ledger.record(an_update(draft=True), [])
        ledger.save_subscribers([Subscriber("ana@example.com", "es", token="tok-ana-0123456789",
                                            postcodes=("28013",))], [])
        ledger.save_hook_key("generic:k", first.incident_id, auto_published=True)
        ledger.claim_reminder(first.id, datetime.now(UTC))
        ledger.add_subscription_request("hash-1", a_request("bob@example.com"))
        ledger.add_subscription_request("hash-2", a_request("cy@example.com"))
        ledger.confirm_subscription("hash-2", "tok-cy-0123456789", datetime.now(UTC))
        before = list(ledger.export_rows())
    exported = api.export_state(tmp_path / "ledger.jsonl", settings=store)
    assert (tmp_path / "ledger.jsonl").stat().st_mode & 0o777 == 0o600, "tokens inside: owner only"
    imported = api.import_state(tmp_path / "ledger.jsonl", settings=target)
    assert exported.counts == imported.counts == {
        "incidents": 2, "updates": 2, "deliveries": 2, "subscribers": 2, "subscription_requests": 2,
        "hook_keys": 1, "reminders": 1}
    with open_ledger(target) as ledger:
        assert list(ledger.export_rows()) == before
        assert ledger.incident(first.incident_id).updates == (first,)
        assert ledger.subscriber(token="tok-ana-0123456789").postcodes == ("28013",)
        assert not ledger.claim_reminder(first.id, datetime.now(UTC)), "the reminder stays claimed"
        later = an_update(first.incident_id, 2, kind=Kind.UPDATE, status=Status.IDENTIFIED)
        ledger.record(later, [NewDelivery("twitter", "en")])  # new deliveries are numbered after
        assert len({d.id for d in ledger.deliveries(incident_id=first.incident_id)}) == 3
        assert ledger.thread(first.incident_id, "twitter", 2)[0].remote_id == "twitter-1"


def a_list(ledger: Ledger, people: int, subscribers: int) -> None:
    """An update with `people` on its mailing list, and `subscribers` on file."""
    ledger.record(an_update(), [NewDelivery("email", "en", f"p{n:02}@example.com", listed=True)
                                for n in range(people)])
    ledger.save_subscribers([Subscriber(f"s{n:02}@example.com", "en", token=f"tok-{n:02}-0123456789")
                             for n in range(subscribers)], [])


def test_an_export_is_read_a_chunk_at_a_time_all_from_one_moment(store: Settings, monkeypatch):
    """Each table is read by its key, a chunk at a time (4 here), in one snapshot: an update
    recorded and a subscriber added while the export is halfway through its deliveries are in
    none of it, and every row before them comes once, in order. (Read table by table without
    the snapshot, the later pages took both.)"""
    import broadcaster.ledger.sql as sql

    monkeypatch.setattr(sql, "CHUNK", 4)
    with open_ledger(store) as ledger:
        a_list(ledger, people=10, subscribers=9)
        whole = list(ledger.export_rows())
    assert [t for t, _ in whole].count("deliveries") == 10 and [t for t, _ in whole].count("subscribers") == 9
    with open_ledger(store) as reader, open_ledger(store) as writer:
        rows = reader.export_rows()
        head = [next(rows) for _ in range(6)]  # the incident, its update, a first page of deliveries
        assert [t for t, _ in head].count("deliveries") == 4
        later = an_update()
        writer.record(later, [NewDelivery("email", "en", "late@example.com", listed=True)])
        writer.save_subscribers([Subscriber("a-late@example.com", "en", token="tok-late-0123456789")], [])
        assert [*head, *rows] == whole
        assert any(row["id"] == later.id for table, row in writer.export_rows() if table == "updates")


def test_an_export_that_fails_halfway_leaves_no_file_and_the_ledger_as_it_was(store: Settings, tmp_path: Path,
                                                                             monkeypatch):
    """The disk fills while an export is halfway through (here at its 8th row, 4 rows a read): the
    error says so, no file or partial file is left, and its snapshot has ended, so the same ledger
    records an update and exports it whole afterwards."""
    import broadcaster.ledger.export as export
    import broadcaster.ledger.sql as sql

    monkeypatch.setattr(sql, "CHUNK", 4)
    real, written = export.json.dumps, []

    def filling(item: object, **options: object) -> str:
        written.append(item)
        if len(written) == 8:
            raise OSError(28, "No space left on device")
        return real(item, **options)  # type: ignore[arg-type]

    with open_ledger(store) as ledger:
        a_list(ledger, people=10, subscribers=9)
        monkeypatch.setattr(export.json, "dumps", filling)
        # The error is kept, as a caller that reports it later keeps it: its traceback holds the
        # export's frames, so the snapshot must end without waiting for them to be collected.
        with pytest.raises(OSError, match="No space left") as failed:
            export.write(ledger, tmp_path / "ledger.jsonl", "any")
        monkeypatch.setattr(export.json, "dumps", real)
        assert not list(tmp_path.glob("*ledger.jsonl*")), "neither the file nor its partial is left"
        later = an_update()
        ledger.record(later, [NewDelivery("twitter", "en")])
        assert export.write(ledger, tmp_path / "ledger.jsonl", "any")["updates"] == 2
        assert failed.value.errno == 28


def test_an_import_writes_as_it_reads_and_a_bad_row_late_leaves_nothing(store: Settings, target: Settings,
                                                                      monkeypatch):
    """Rows are written a chunk at a time as they are read (never more than a chunk behind),
    all in one transaction: a file that turns out bad after several chunks were written leaves
    the ledger empty, and a good one comes in whole."""
    import broadcaster.ledger.sql as sql
    from broadcaster.errors import InputError

    monkeypatch.setattr(sql, "CHUNK", 4)
    with open_ledger(store) as ledger:
        a_list(ledger, people=10, subscribers=9)
        rows = list(ledger.export_rows())
    with open_ledger(target) as ledger:
        behind: list[int] = []

        def read(bad_at: int | None = None) -> Iterator[tuple[str, dict]]:
            for n, row in enumerate(rows):
                if n == bad_at:
                    raise InputError(f"ledger.jsonl:{n + 2}: a bad row")
                written = sum(ledger.query(f"SELECT COUNT(*) FROM {table}")[0][0]  # type: ignore[attr-defined]
                              for table in ("incidents", "updates", "deliveries", "subscribers"))
                behind.append(n - written)
                yield row

        with pytest.raises(InputError, match="a bad row"):
            ledger.import_rows(read(bad_at=len(rows) - 2))
        assert max(behind) <= 4 and ledger.is_empty() and list(ledger.export_rows()) == []
        counts = ledger.import_rows(read())
        assert counts == {"incidents": 1, "updates": 1, "deliveries": 10, "subscribers": 9}
        assert list(ledger.export_rows()) == rows



def test_sqlite_switching_to_wal_waits_out_a_locked_answer():
    """Ten processes creating one new ledger: a WAL switch may answer "locked" at once,
    without SQLite's busy handler; the store tries again until its busy timeout."""
    import sqlite3

    from broadcaster.ledger.sqlite.ledger import use_wal

    class Racing:
        def __init__(self, locked: int) -> None:
            self.locked, self.calls = locked, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.calls <= self.locked:
                raise sqlite3.OperationalError("database is locked")

    db = Racing(locked=3)
    use_wal(db, wait=5, pause=0)  # type: ignore[arg-type]
    assert db.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(Racing(locked=10**9), wait=0.05, pause=0.01)  # type: ignore[arg-type]
    broken = Racing(locked=0)
    broken.execute = lambda sql: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error"))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        use_wal(broken, wait=5)  # type: ignore[arg-type]


@pytest.mark.sqlite_only
def test_recording_deliveries_and_their_results_builds_no_temporary_table(tmp_path: Path,
                                                                          request: pytest.FixtureRequest):
    """SQLite: the deliveries' check on `state` once read `state IN (five values)`, which SQLite
    checks by building a temporary B-tree of the five for every row written (an OpenEphemeral
    in the loop of each statement): a third of the CPU of recording an email's result. Every
    statement that records deliveries or their results is checked here with `EXPLAIN`."""
    with open_ledger(sqlite_store(tmp_path, request)) as ledger:
        db = ledger._db  # type: ignore[attr-defined]
        written: list[str] = []
        db.set_trace_callback(written.append)
        update = an_update()
        ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(3)])
        ids = [d.id for d in ledger.deliveries(update_id=update.id)]
        ledger.finish([(ids[0], Receipt("<m@example.com>"))], [(ids[1], "550 no such user")],
                      [(ids[2], "unsubscribed before this was sent")])
        db.set_trace_callback(None)
        writing = ("INSERT INTO DELIVERIES", "UPDATE DELIVERIES")
        writes = [s for s in written if s.lstrip().upper().startswith(writing)]
        assert len(writes) >= 4, written
        for statement in writes:
            program = [row[1] for row in db.execute("EXPLAIN " + statement)]
            assert "OpenEphemeral" not in program, statement
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            db.execute("UPDATE deliveries SET state = 'lost' WHERE id = ?", (ids[0],))


@pytest.mark.sqlite_only
def test_a_ledger_from_schema_14_gets_the_state_check_as_comparisons(tmp_path: Path,
                                                                     request: pytest.FixtureRequest):
    """The check's text is changed in place (the schema version bumped): every delivery stays,
    a state outside the five is still refused, and a connection opened before the change reads
    the new schema at its next statement."""
    from broadcaster.ledger.sqlite.schema import STATE_COMPARED, STATE_IN

    settings = sqlite_store(tmp_path, request)
    with open_ledger(settings) as ledger:
        update = an_update()
        ledger.record(update, [NewDelivery("email", "en", f"p{n}@example.com") for n in range(3)])
    path = tmp_path / "state" / "ledger.db"
    old = sqlite3.connect(path, isolation_level=None)  # as broadcaster 14 left it
    version = old.execute("PRAGMA schema_version").fetchone()[0]
    old.executescript(f"""PRAGMA writable_schema = ON;
        UPDATE sqlite_master SET sql = replace(sql, "{STATE_COMPARED.replace('"', '""')}",
                                               "{STATE_IN.replace('"', '""')}") WHERE name = 'deliveries';
        PRAGMA schema_version = {version + 1}; PRAGMA writable_schema = OFF; PRAGMA user_version = 14;""")
    old.execute("SELECT COUNT(*) FROM deliveries").fetchone()
    assert STATE_IN in old.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'").fetchone()[0]

    with open_ledger(settings) as ledger:
        assert ledger.query("PRAGMA user_version") == [(15,)]  # type: ignore[attr-defined]
        (sql,) = ledger.query("SELECT sql FROM sqlite_master WHERE name = 'deliveries'")[0]  # type: ignore[attr-defined]
        assert STATE_COMPARED in sql and STATE_IN not in sql
        assert [d.state for d in ledger.deliveries(update_id=update.id)] == [DeliveryState.PENDING] * 3
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        old.execute("UPDATE deliveries SET state = 'lost'")
    program = [row[1] for row in old.execute("EXPLAIN UPDATE deliveries SET state = 'sent' WHERE id = 1")]
    assert "OpenEphemeral" not in program, "the connection from before reads the schema again"
    old.close()


@pytest.mark.sqlite_only
def test_an_sqlite_that_refuses_schema_edits_keeps_the_check_as_it_was(tmp_path: Path):
    """An SQLite built defensive (SQLITE_DBCONFIG_DEFENSIVE) refuses writes to sqlite_master:
    the step leaves the check as it was (slower, as strict), turns writable_schema off again,
    bumps nothing, and the ledger opens."""
    from broadcaster.ledger.sqlite.schema import STATE_IN, _state_compared

    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute(f"CREATE TABLE deliveries (id INTEGER PRIMARY KEY, state TEXT NOT NULL {STATE_IN})")
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    said: list[str] = []

    class Defensive:
        def execute(self, statement: str, params: tuple = ()) -> sqlite3.Cursor:
            said.append(statement)
            if statement.startswith("UPDATE sqlite_master"):
                raise sqlite3.OperationalError("table sqlite_master may not be modified")
            return db.execute(statement, params)

    _state_compared(Defensive())  # type: ignore[arg-type]
    assert said[-1] == "PRAGMA writable_schema = OFF"
    assert db.execute("PRAGMA schema_version").fetchone()[0] == version
    assert STATE_IN in db.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'").fetchone()[0]
