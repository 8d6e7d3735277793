"""`broadcaster worker`: idle workers join a large fan-out, and a dead sender's batch is taken
over once its lease runs out; on SQLite (one machine) and PostgreSQL (a team) alike.

Every "host" is a process of its own with the same settings; the SMTP server is aiosmtpd in
this process, slowed down so that a fan-out lasts long enough to be shared or cut.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import BASE_SETTINGS, BIN, EMAIL_SECTION, ROOT, Project
from test_crashes_and_concurrency import CRASHING

from broadcaster import api
from broadcaster.ledger import open_ledger
from broadcaster.settings import load_settings

ADDRESSES = [f"user{n:04}@example.com" for n in range(400)]


@pytest.fixture(params=["sqlite", "postgresql"])
def crew(request: pytest.FixtureRequest, project: Project, inbox) -> Project:
    """A project on either store, with 400 subscribers and a slow SMTP server."""
    base = BASE_SETTINGS
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        base = base.replace('path = "state/ledger.db"', f'url = "{url}"')
    project.base = base  # type: ignore[attr-defined]
    project.inbox = inbox  # type: ignore[attr-defined]
    settle(project, lease=30)
    (project.root / "subscribers.csv").write_text("email\n" + "\n".join(ADDRESSES) + "\n")
    assert project.cli("subscribers", "import", str(project.root / "subscribers.csv")).exit_code == 0
    inbox.delay = 0.01
    return project


def settle(project: Project, *, lease: float, connections: int = 2, extra: str = "") -> None:
    project.write(EMAIL_SECTION.format(port=project.inbox.port, connections=connections)  # type: ignore[attr-defined]
                  + f"[worker]\nbatch = 20\nlease_seconds = {lease}\npoll_seconds = 0.1\n" + extra,
                  base=project.base)  # type: ignore[attr-defined]


def start(project: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "broadcaster"), "--config", str(project.config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def owners(project: Project) -> Counter:
    """How many of the update's emails each sender sent (a settled lease names who sent its run)."""
    with open_ledger(load_settings(project.config), read_only=True) as ledger:
        return Counter(ledger.senders("email"))


def everyone_once(project: Project) -> None:
    got = Counter(a for m in project.inbox.messages for a in m.envelope_to)  # type: ignore[attr-defined]
    assert sorted(got) == ADDRESSES and set(got.values()) == {1}, "nobody missed, nobody twice"


def test_idle_workers_join_a_large_fan_out_and_stop_cleanly(crew: Project):
    workers = [start(crew, "worker", "--json") for _ in range(2)]
    try:
        for p in workers:
            assert "started" in p.stderr.readline()  # type: ignore[union-attr]
        announced = crew.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                             "--yes", "--json")
        assert announced.exit_code == 0, announced.output
        outcome = json.loads(announced.stdout)
        assert {d["status"] for d in outcome["deliveries"]} == {"sent"}, "the report waits for every batch"
        assert outcome["recipients"] == {"email": {"sent": len(ADDRESSES)}}
        assert [d["channel"] for d in outcome["deliveries"]] == ["website", "email"], "the list in numbers"
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
    reports = []
    for p in workers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out))
    everyone_once(crew)
    claimed = owners(crew)
    assert sum(claimed.values()) == len(ADDRESSES) and len(claimed) >= 2, (
        f"the workers took part in the fan-out: {claimed}")
    assert sum(r["deliveries"] for r in reports) == sum(n for o, n in claimed.items()
                                                        if o in {r["worker"] for r in reports})


def test_a_worker_beside_the_command_shares_the_relays_rate(crew: Project):
    """`[channels.email] rate` is what the relay takes from this sender a second (Amazon SES's
    maximum send rate is the account's, whichever host sends). A worker that took batches of
    the list beside the command went at the whole rate too: the relay got twice as many a
    second, and put the excess off. Now each hears from the ledger how many hold batches of
    the channel's lists (at each claim, and four times a second) and goes at its share, on moments
    that interleave with the other's. Measured from what the server received: once the
    worker has joined (and been heard of), no two seconds hold more than the rate allows,
    with room for the moments this busy machine runs late and sends together."""
    rate = 40
    crew.write(EMAIL_SECTION.format(port=crew.inbox.port, connections=2) + f"rate = {rate}\n"  # type: ignore[attr-defined]
               + "[worker]\nbatch = 20\nlease_seconds = 30\npoll_seconds = 0.1\n", base=crew.base)  # type: ignore[attr-defined]
    worker = start(crew, "worker", "--json")
    try:
        assert "started" in worker.stderr.readline()  # type: ignore[union-attr]
        announced = crew.cli(*ANNOUNCE, "--json")
        assert announced.exit_code == 0, announced.output
        assert not [w for w in json.loads(announced.stdout)["warnings"] if w.startswith("email: ")]
    finally:
        worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)
    everyone_once(crew)
    claimed = owners(crew)
    assert len(claimed) == 2 and min(claimed.values()) >= 60, f"both sent a good share: {claimed}"
    taken = sorted(crew.inbox.taken_at)  # type: ignore[attr-defined]
    joined = taken[0] + 2.5  # the worker's first claim (polling every 0.1 s), then a second to be heard
    busiest = max(sum(1 for u in taken if t - 2 < u <= t) for t in taken if t >= joined + 2)
    assert busiest <= 2.5 * rate, f"{busiest} in two seconds: each at the whole rate would be {4 * rate}"
    assert taken[-1] - taken[0] >= 0.8 * len(ADDRESSES) / rate, "the list took as long as the rate says"


ANNOUNCE = ("announce", "--title", "Payments down", "--message", "Card payments fail.", "--yes")


def kill_mid_fan_out(project: Project, after: int, *command_line: str) -> int:
    """Run the command (an announcement unless told), and SIGKILL it once `after` more emails
    arrived; how many emails the server holds then."""
    before = len(project.inbox.messages)  # type: ignore[attr-defined]
    command = start(project, *(command_line or ANNOUNCE))
    deadline = time.monotonic() + 60
    while len(project.inbox.messages) < before + after:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline and command.poll() is None, "the fan-out did not start"
        time.sleep(0.02)
    command.kill()
    command.wait(timeout=30)
    cut = len(project.inbox.messages)  # type: ignore[attr-defined]
    assert cut < before + len(ADDRESSES), "killed mid-fan-out"
    return cut


def test_a_batch_that_takes_longer_than_its_lease_stays_with_its_sender(crew: Project):
    """Each sender renews the batch in hand (by its ids) while it sends: a batch of 20 at 0.06 s
    a message takes 1.2 s, longer than the 1 s lease, yet nobody takes it over (whoever did
    would send its unsent messages a second time)."""
    settle(crew, lease=1, connections=1)
    crew.inbox.delay = 0.06  # type: ignore[attr-defined]
    worker = start(crew, "worker", "--json")
    try:
        assert "started" in worker.stderr.readline()  # type: ignore[union-attr]
        announced = crew.cli(*ANNOUNCE, "--json")
        assert announced.exit_code == 0, announced.output
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    everyone_once(crew)
    assert len(owners(crew)) == 2, "both senders took batches"


def test_a_command_killed_mid_fan_out_is_finished_by_a_worker_when_its_lease_runs_out(crew: Project):
    settle(crew, lease=3, connections=1)
    cut = kill_mid_fan_out(crew, 30)

    worker = start(crew, "worker", "--once", "--json")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["deliveries"] >= len(ADDRESSES) - cut
    got = Counter(a for m in crew.inbox.messages for a in m.envelope_to)  # type: ignore[attr-defined]
    assert sorted(got) == ADDRESSES, "everyone got it, without anyone running retry"
    twice = [a for a, n in got.items() if n > 1]
    assert len(twice) <= 1, f"at most one message per connection of the dead sender again: {twice}"
    for address in twice:
        first, again = crew.inbox.to(address)  # type: ignore[attr-defined]
        assert first["Message-ID"] == again["Message-ID"], "sent again with its own Message-ID"
    shown = json.loads(crew.cli("show", json.loads(out)["updates"][0].rsplit("-", 1)[0], "--json").stdout)
    assert {d["status"] for u in shown["updates"] for d in u["deliveries"]} == {"sent"}


def test_a_worker_given_fewer_connections_than_it_asks_for_sends_over_those_and_says_so(crew: Project):
    """A worker is as `announce` against a relay at its limit of connections: the list goes over
    those the relay took, and its log says what to set (it has no report at the end to say it)."""
    settle(crew, lease=2, connections=1)
    cut = kill_mid_fan_out(crew, 30)
    crew.inbox.max_connections = 1  # type: ignore[attr-defined]
    settle(crew, lease=2, connections=3)
    worker = start(crew, "worker", "--once", "--json")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["deliveries"] >= len(ADDRESSES) - cut
    assert sorted(set(a for m in crew.inbox.messages for a in m.envelope_to)) == ADDRESSES  # type: ignore[attr-defined]
    assert "email: only 1 of the 3 SMTP connections asked for were opened" in err, err
    assert "connections = 1" in err


def test_a_follow_up_a_worker_finishes_is_threaded_under_each_subscribers_first_email(crew: Project):
    """The worker sends a later update's emails as the command does: each in reply to that
    subscriber's first email of the incident (the worker knows the incident from the ledger)."""
    announced = crew.cli(*ANNOUNCE, "--json")
    assert announced.exit_code == 0, announced.output
    incident = json.loads(announced.stdout)["incident_id"]
    first = {a: crew.inbox.to(a)[0]["Message-ID"] for a in ADDRESSES}  # type: ignore[attr-defined]
    before = len(crew.inbox.messages)  # type: ignore[attr-defined]
    settle(crew, lease=1, connections=1)
    cut = kill_mid_fan_out(crew, 10, "update", incident, "--status", "identified",
                           "--message", "A gateway certificate expired.", "--yes")
    worker = start(crew, "worker", "--once", "--json")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["deliveries"] >= before + len(ADDRESSES) - cut, "the worker sent the rest"
    later = crew.inbox.messages[before:]  # type: ignore[attr-defined]
    assert sorted({a for m in later for a in m.envelope_to}) == ADDRESSES
    unthreaded = [m.envelope_to[0] for m in later if m["In-Reply-To"] != first[m.envelope_to[0]]]
    assert unthreaded == [], f"not in reply to their first email: {unthreaded[:5]}"


def test_a_worker_told_to_stop_finishes_the_batch_in_hand_and_leaves_the_rest(crew: Project):
    settle(crew, lease=1, connections=1)
    cut = kill_mid_fan_out(crew, 10)
    worker = start(crew, "worker", "--json")
    deadline = time.monotonic() + 60
    while len(crew.inbox.messages) < cut + 30:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline and worker.poll() is None, "the worker did not take over"
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "stopping after the batch in hand" in err, err
    report = json.loads(out)
    stopped = len(crew.inbox.messages)  # type: ignore[attr-defined]
    assert stopped < len(ADDRESSES), "it did not go on to the whole list"
    assert report["deliveries"] % 20 == 0 or report["deliveries"] >= len(ADDRESSES) - cut, report
    assert crew.cli("retry").exit_code == 0
    got = Counter(a for m in crew.inbox.messages for a in m.envelope_to)  # type: ignore[attr-defined]
    assert sorted(got) == ADDRESSES and sum(got.values()) <= len(ADDRESSES) + 1


def test_a_statement_and_posts_left_by_a_killed_command_are_finished_by_a_worker(
    crew: Project, channel_factory,
):
    settle(crew, lease=3, connections=1, extra="[channels.chirp]\nenabled = true\n")
    code = CRASHING.format(tests=str(ROOT / "tests"), config=str(crew.config))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    script = channel_factory("chirp")
    report = api.worker(once=True, settings=crew.config)
    ((post, _, resumed),) = script.received
    assert resumed is True, "the channel is told the lost attempt may have been posted"
    assert "https://status.example.com/incidents/" in post.text
    assert len(report.incidents) == 1
    got = Counter(a for m in crew.inbox.messages for a in m.envelope_to)  # type: ignore[attr-defined]
    assert sorted(got) == ADDRESSES and sum(got.values()) <= len(ADDRESSES) + 1
    assert api.worker(once=True, settings=crew.config).deliveries == 0, "nothing twice"
    assert len(script.received) == 1
