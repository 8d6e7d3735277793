"""Dispatch: statement first, concurrent fan-out, tenacity retries, failures kept apart."""

from __future__ import annotations

import json
import threading
import time

import pytest

from broadcaster import api
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.settings import load_settings

SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture
def two_channels(project, channel_factory):
    chirp = channel_factory("chirp", secrets={"token": "BROADCASTER_CHIRP_TOKEN"})
    book = channel_factory("book")
    project.write("[channels.chirp]\nenabled = true\n[channels.book]\nenabled = true\n")
    return chirp, book


def run(project, *args, env=None):
    env = {"BROADCASTER_CHIRP_TOKEN": SECRET, **(env or {})}
    confirm = () if args[0] == "retry" else ("--yes",)
    result = project.cli(*args, *confirm, "--json", env=env)
    return result, json.loads(result.stdout)


def by_channel(data):
    return {d["channel"]: d for d in data["deliveries"]}


def test_every_channel_gets_the_post_with_the_statement_link(project, two_channels):
    result, data = run(project, "announce", "--title", "Down", "--message", "Payments fail.")
    assert result.exit_code == 0, result.output
    for script in two_channels:
        ((post, thread, resumed),) = script.received
        assert data["statement_url"] in post.text and post.link == data["statement_url"]
        assert thread == () and resumed is False
    assert set(by_channel(data)) == {"website", "chirp", "book"}


def test_updates_carry_the_incident_thread(project, two_channels):
    chirp, _ = two_channels
    _, data = run(project, "announce", "--title", "Down", "--message", "M")
    run(project, "update", data["incident_id"], "--status", "identified", "--message", "Cause found.")
    run(project, "resolve", data["incident_id"], "--message", "Fixed.")
    threads = [[r.remote_id for r in thread] for _, thread, _ in chirp.received]
    assert threads == [[], ["chirp-1"], ["chirp-1", "chirp-2"]]


def test_transient_errors_are_retried_until_they_succeed(project, two_channels):
    chirp, _book = two_channels
    chirp.faults = [TransientDeliveryError("503"), TransientDeliveryError("timeout")]
    result, data = run(project, "announce", "--title", "Down", "--message", "M")
    assert result.exit_code == 0
    assert by_channel(data)["chirp"]["attempts"] == 3
    assert len(chirp.received) == 1 and chirp.received[0][2] is True  # told it may be a re-send


def test_a_permanent_error_fails_fast_and_other_channels_still_deliver(project, two_channels):
    chirp, book = two_channels
    chirp.faults = [PermanentDeliveryError("401 Unauthorized: check the token")]
    result, data = run(project, "announce", "--title", "Down", "--message", "M")
    assert result.exit_code == 3
    deliveries = by_channel(data)
    assert deliveries["chirp"] == {**deliveries["chirp"], "status": "failed", "attempts": 1,
                                   "error": "401 Unauthorized: check the token"}
    assert deliveries["book"]["status"] == "sent" and len(book.received) == 1


def test_retry_finishes_only_what_failed_and_never_resends(project, two_channels):
    chirp, book = two_channels
    chirp.faults = [TransientDeliveryError("503")] * 3
    result, data = run(project, "announce", "--title", "Down", "--message", "M")
    assert result.exit_code == 3
    assert "gave up after 3 attempts" in by_channel(data)["chirp"]["error"]
    result, again = run(project, "retry", data["incident_id"])
    assert result.exit_code == 0, result.output
    assert [d["channel"] for d in again["deliveries"]] == ["chirp"]
    assert len(chirp.received) == 1 and len(book.received) == 1
    result, _third = run(project, "retry", data["incident_id"])
    assert result.exit_code == 0 and len(chirp.received) == 1


def test_nothing_else_goes_out_until_the_statement_is_published(project, two_channels):
    chirp, book = two_channels
    # A file where the site's folder should be: the website cannot write (even as root).
    project.public.write_text("not a folder")
    result, data = run(project, "announce", "--title", "Down", "--message", "M")
    assert result.exit_code == 3
    deliveries = by_channel(data)
    assert deliveries["website"]["status"] == "failed"
    assert "cannot write" in deliveries["website"]["error"]
    assert deliveries["chirp"]["status"] == "pending" and chirp.received == [] == book.received
    project.public.unlink()  # the operator fixes it
    result, _again = run(project, "retry")
    assert result.exit_code == 0, result.output
    assert len(chirp.received) == 1 == len(book.received)
    assert (project.public / "incidents" / data["incident_id"] / "index.html").exists()


def test_channels_are_sent_concurrently(project, two_channels):
    chirp, book = two_channels
    # Each channel waits for the other inside send: sequential sending would break the barrier.
    barrier = threading.Barrier(2, timeout=10)
    chirp.barrier = book.barrier = barrier
    result, _ = run(project, "announce", "--title", "Down", "--message", "M")
    assert result.exit_code == 0, result.output
    assert not barrier.broken


def test_a_rate_limit_reset_time_is_honoured_and_capped(project, channel_factory, monkeypatch):
    from broadcaster.dispatch import RetryPolicy

    script = channel_factory("chirp")
    project.write("[channels.chirp]\nenabled = true\n")
    settings = load_settings(project.config)
    waits: list[float] = []
    original = RetryPolicy.from_settings.__func__
    monkeypatch.setattr(RetryPolicy, "from_settings",
                        classmethod(lambda cls, retry: original(cls, retry, sleep=waits.append)))
    script.faults = [TransientDeliveryError("429", retry_at=time.time() + 3),
                     TransientDeliveryError("429", retry_at=time.time() + 3600)]
    outcome = api.announce("Down", "M", settings=settings)
    assert outcome.exit_code == 0
    assert 2 < waits[0] <= 3 and waits[1] == settings.retry.max_wait_seconds


def test_backoff_is_exponential_with_jitter_and_bounded():
    import tenacity

    from broadcaster.dispatch import RetryPolicy

    policy = RetryPolicy(attempts=8, initial_wait=1, max_wait=10)
    state = tenacity.RetryCallState(None, None, (), {})
    for number, ceiling in [(1, 1), (2, 2), (3, 4), (6, 10)]:
        state.attempt_number = number
        state.outcome = tenacity.Future.construct(number, TransientDeliveryError("x"), True)
        waits = {policy.wait(state) for _ in range(50)}
        assert all(0 <= w <= ceiling for w in waits) and len(waits) > 1


def test_a_failure_called_free_spends_no_attempt_and_does_not_widen_the_backoff():
    """A mailing list's round whose recipients were only put off for coming too fast is free
    (`AudienceBatch._free`): it does not count against [retry] attempts, and the wait after it
    is that of the attempts spent so far (the channel's pace spaces the texts, not the wait)."""
    from broadcaster.dispatch import RetryPolicy

    waits: list[float] = []
    policy = RetryPolicy(attempts=3, initial_wait=1, max_wait=100, sleep=waits.append)
    errors = iter([TransientDeliveryError("454 rate", too_fast=True)] * 5
                  + [TransientDeliveryError("451 local error")] * 3)
    tries = 0
    with pytest.raises(TransientDeliveryError, match="451"):
        for attempt in policy.retrying(free=lambda error: getattr(error, "too_fast", False)):
            with attempt:
                tries += 1
                raise next(errors)
    assert tries == 5 + 3, "five free rounds, then the three attempts"
    assert len(waits) == 7 and all(0 <= w <= 1 for w in waits[:6]) and 0 <= waits[6] <= 2, waits

    plain = iter([TransientDeliveryError("454 rate", too_fast=True)] * 5)
    tries = 0
    with pytest.raises(TransientDeliveryError):
        for attempt in policy.retrying():
            with attempt:
                tries += 1
                raise next(plain)
    assert tries == 3, "without `free`, every failure counts"


def test_a_post_over_the_limit_or_without_the_link_stops_everything(project, two_channels):
    chirp, book = two_channels
    book.text = lambda page: "x" * 281 + " " + page.statement_url
    chirp.text = lambda page: "no link here"
    result = project.cli("announce", "--title", "Down", "--message", "M", "--yes",
                         env={"BROADCASTER_CHIRP_TOKEN": SECRET})
    assert result.exit_code == 2
    assert "book (en): 330/280 characters" in result.output
    assert "chirp (en): the text does not link to the statement" in result.output
    assert chirp.received == [] == book.received and project.files() == {}


def test_secrets_never_appear_in_errors_or_output(project, two_channels):
    chirp, _ = two_channels
    chirp.faults = [PermanentDeliveryError(f"401 for https://api.example/?token={SECRET}")]
    result, data = run(project, "announce", "--title", "Down", "--message", "M")
    assert SECRET not in result.output
    assert "token=********" in by_channel(data)["chirp"]["error"]
    shown = project.cli("show", data["incident_id"], "--json").output
    assert SECRET not in shown and "********" in shown


def test_a_group_commit_gathers_every_connections_result_into_one_write():
    """Four senders, each waiting for its result to be written before it sends again (the
    promise of at most one unrecorded message per connection). Without gathering, the first
    sender back wrote alone and the other three after it (groups of 1, 3, 1, 3); gathering,
    one write covers all four. A sender waits for the others at most as long as the last write
    took, here 20 ms, forty times their 0.5 ms, so a busy machine only slows it."""
    from broadcaster.dispatch import GroupCommit
    from broadcaster.model import Receipt

    groups: list[int] = []

    def write(sent, failed):
        groups.append(len(sent) + len(failed))
        time.sleep(0.02)  # an fsync

    commit = GroupCommit(write, gather=0.5)

    def sender(lane: int) -> None:
        for n in range(40):
            time.sleep(0.0005)  # the next message's round trip
            commit.record(sent=[(lane * 100 + n, Receipt(f"m{lane}-{n}"))])

    threads = [threading.Thread(target=sender, args=(lane,)) for lane in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(groups) == 160
    assert groups.count(4) >= 36, groups  # gather=0: [1, 3, 1, 3, …], no write of 4


def test_a_group_commit_does_not_wait_for_a_sender_out_of_step():
    """A sender that is not back within the time the last write took is left for the next
    write. Here a quick sender (a result every millisecond, writes of 10 ms) shares the ledger
    with a slow one (a result at once, then every 300 ms: a connection far away). Waiting the
    whole `gather` whenever the slow one was in the last write, the quick one fell into its
    step: one result per 300 ms, three by the time the slow one is done. Waiting at most a
    write's time, it records about fifty in those 0.6 s."""
    from broadcaster.dispatch import GroupCommit
    from broadcaster.model import Receipt

    def write(sent, failed):
        time.sleep(0.01)

    commit = GroupCommit(write, gather=0.5)
    quick_done: list[int] = []

    def quick() -> None:
        for n in range(150):
            time.sleep(0.001)
            commit.record(sent=[(n, Receipt(f"q{n}"))])
            quick_done.append(n)

    def slow() -> None:
        for n in range(3):
            time.sleep(0.3 if n else 0.01)
            commit.record(sent=[(1000 + n, Receipt(f"s{n}"))])

    threads = [threading.Thread(target=quick), threading.Thread(target=slow)]
    for t in threads:
        t.start()
    threads[1].join()
    by_then = len(quick_done)
    threads[0].join()
    assert by_then >= 20, by_then
