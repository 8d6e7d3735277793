"""A killed process, and two operators at once: the ledger stays right and retry finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import BIN, ROOT

from broadcaster import api
from broadcaster.settings import load_settings
from broadcaster.standins.server import Fault

CRASHING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import Script, recorder
    from broadcaster import api, registry

    def die():
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-send: the answer is never recorded

    script = Script(on_send=die)
    registry.register(recorder("chirp", script))
    api.announce("Down", "Payments fail.", settings={config!r})
""")


def test_a_killed_process_leaves_work_that_retry_finishes_exactly_once(project, channel_factory):
    project.write("[channels.chirp]\nenabled = true\n")
    code = CRASHING.format(tests=str(ROOT / "tests"), config=str(project.config))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    states = dict(project.rows("SELECT channel, state FROM deliveries"))
    assert states == {"website": "sent", "chirp": "in_flight"}

    script = channel_factory("chirp")
    (outcome,) = api.retry(settings=load_settings(project.config))
    assert outcome.exit_code == 0
    ((post, _, resumed),) = script.received
    assert resumed is True  # the channel is told the lost attempt may have been posted
    assert outcome.statement_url in post.text
    assert api.retry(settings=load_settings(project.config)) == []
    assert len(script.received) == 1


def test_operators_updating_one_incident_at_once_all_land_in_order(project):
    incident = project.announce()
    operators = [
        subprocess.Popen(
            [str(BIN / "broadcaster"), "--config", str(project.config), "update", incident,
             "--status", "identified", "--message", f"Update from operator {n}.", "--yes", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(4)
    ]
    results = [(p.wait(timeout=60), *p.communicate()) for p in operators]
    assert all(code == 0 for code, _, _ in results), results
    update_ids = sorted(json.loads(out)["update_id"] for _, out, _ in results)
    assert update_ids == [f"{incident}-{n}" for n in (2, 3, 4, 5)]
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert [u["id"] for u in shown["updates"]] == [f"{incident}-{n}" for n in range(1, 6)]
    assert all(u["deliveries"][0]["status"] == "sent" for u in shown["updates"])
    page = (project.public / "incidents" / incident / "index.html").read_text()
    assert all(f"Update from operator {n}." in page for n in range(4))


def test_a_process_killed_after_x_and_facebook_posted_is_finished_without_posting_twice(social):
    """SIGKILL while both platforms have acted but not yet answered; retry settles it."""
    social.x.fail("create_tweet", Fault.latency(60))
    social.graph.fail("create_post", Fault.latency(60))
    command = [str(BIN / "broadcaster"), "--config", str(social.project.config), "announce",
               "--title", "Payments down", "--message", "Card payments fail.", "--yes"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (social.x.posted() and social.graph.feed()):
            assert time.monotonic() < deadline and process.poll() is None, "nothing was posted"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    states = dict(social.project.rows("SELECT channel, state FROM deliveries"))
    assert states == {"website": "sent", "twitter": "in_flight", "facebook": "in_flight"}

    done = social.project.cli("retry", "--json")
    assert done.exit_code == 0, done.output
    assert len(social.x.posted()) == 1 and len(social.graph.feed()) == 1
    assert [c.status for c in social.x.calls("create_tweet")] == [201, 403], "settled by X's duplicate check"
    assert len(social.graph.calls("create_post")) == 1, "found by the Graph lookup"
    receipts = dict(social.project.rows("SELECT channel, remote_id FROM deliveries"))
    assert receipts["twitter"] == social.x.posted()[0].id
    assert receipts["facebook"] == social.graph.feed()[0].id


def test_two_operators_at_once_on_x_keep_one_thread_in_order(social):
    outcome = social.run("announce", "--title", "Payments down", "--message", "Card payments fail.",
                         "--channel", "twitter")
    incident = outcome["incident_id"]
    operators = [
        subprocess.Popen(
            [str(BIN / "broadcaster"), "--config", str(social.project.config), "update", incident,
             "--status", "identified", "--message", f"Operator {n} says hello.", "--channel", "twitter",
             "--yes", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in operators]
    assert sorted(r["update_id"] for r in results) == [f"{incident}-2", f"{incident}-3"]
    tweets = social.x.posted()
    chain = social.x.thread(tweets[0].id)
    assert len(tweets) == 3 and [t.id for t in chain] == [t.id for t in tweets], "one thread, in order"


def test_concurrent_announces_of_different_incidents_all_stay_on_the_status_page(project):
    """Ten operators announce ten incidents at once: the shared pages and JSON list all ten.

    Before the site lock, the last writer's view won and 3–7 of 10 went missing.
    """
    announce_at_once(project, 10)


@pytest.mark.slow
def test_many_rounds_of_concurrent_announces(tmp_path_factory):
    """`make test-slow`: CONCURRENCY_ROUNDS rounds (default 10) of 2 to 10 announces at once."""
    from conftest import Project

    rounds = int(os.environ.get("CONCURRENCY_ROUNDS", "10"))
    for number in range(rounds):
        project = Project(tmp_path_factory.mktemp(f"round{number}"))
        project.write()
        announce_at_once(project, 2 + number % 9)
    print(f"\nconcurrent announces: {rounds} rounds, every incident listed on every page")


def announce_at_once(project, count: int) -> None:
    announcers = [
        subprocess.Popen(
            [str(BIN / "broadcaster"), "--config", str(project.config), "announce", "--title",
             f"Outage number {n}", "--message", "Down.", "--message-es", "Caído.", "--yes", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(count)
    ]
    outcomes = [json.loads(p.communicate(timeout=240)[0]) for p in announcers]
    failed = [o for o in outcomes if "incident_id" not in o]
    assert not failed, f"announces that failed: {failed}"  # what they said, should one fail
    ids = {o["incident_id"] for o in outcomes}
    assert len(ids) == count and all(p.returncode == 0 for p in announcers)
    public = project.public
    for page in ("index.html", "es/index.html", "feed.atom", "es/feed.atom"):
        text = (public / page).read_text()
        assert all(i in text for i in ids), f"{page} lost {[i for i in ids if i not in text]}"
    for api_file in ("summary.json", "incidents/unresolved.json", "incidents.json"):
        listed = {i["id"] for i in json.loads((public / "api" / "v2" / api_file).read_text())["incidents"]}
        assert listed == ids, api_file
    assert all((public / "incidents" / i / "index.html").exists() for i in ids), "every listed page exists"
    leftover = [p.stem for p in (project.state / "locks").glob("*.lock") if p.stem in ids]
    assert leftover == [], "incident lock files do not pile up"


def test_a_ledger_another_command_is_creating_reads_as_empty(project):
    """SQLite: the ledger's file appears before the transaction that makes its tables commits.
    A command that only reads (a preview, `list`, `show`) arriving in between reads an empty
    ledger and writes nothing, rather than failing with "no such table" (one of ten announces
    at a time started on a new ledger did, about once in 500)."""
    import sqlite3

    if project.url:
        pytest.skip("PostgreSQL: a database without the schema is an empty view already")
    project.write()
    path = project.state / "ledger.db"
    path.parent.mkdir(parents=True)
    creating = sqlite3.connect(path, isolation_level=None)  # another command, about to migrate
    creating.execute("PRAGMA journal_mode = WAL")
    try:
        listed = project.cli("list", "--json")
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.stdout) == []
        preview = project.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                              "--dry-run")
        assert preview.exit_code == 0, preview.output
        assert "Payments down" in preview.stdout
        assert creating.execute("SELECT name FROM sqlite_master").fetchall() == [], "nothing written"
    finally:
        creating.close()
    project.announce()  # the first command that writes makes the tables, as before
    assert project.rows("SELECT COUNT(*) FROM incidents") == [(1,)]
