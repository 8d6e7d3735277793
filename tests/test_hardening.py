"""The holes an attacker and a crash found, each tried again: kills during an email fan-out, a
ledger that cannot be written, addresses in other cases, long non-ASCII subjects, a busy
ledger at unsubscribe, links out of the templates and the site, secrets of disabled channels,
slow clients, alert floods and bad bytes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from conftest import BIN, EMAIL_SECTION, Inbox, Project

from broadcaster import api
from broadcaster.settings import load_settings

CONNECTIONS = 4


def subscribe(project: Project, count: int) -> list[str]:
    people = [f"person{n}@example.com" for n in range(count)]
    (project.root / "people.csv").write_text("email\n" + "\n".join(people) + "\n", encoding="utf-8")
    assert project.cli("subscribers", "import", str(project.root / "people.csv")).exit_code == 0
    return people


def copies(inbox: Inbox) -> Counter[str]:
    return Counter(m.envelope_to[0] for m in inbox.messages)


# -- a kill at any moment of an email fan-out ---------------------------------------------------


def kill_during_fan_out(project: Project, inbox: Inbox, seed: int, sig: signal.Signals) -> dict[str, int]:
    """Announce to 300 people, kill the process after a random number of emails, retry; the
    figures of that run."""
    people = subscribe(project, 300)
    stop_after = random.Random(seed).randrange(10, 280)
    process = subprocess.Popen(
        [str(BIN / "broadcaster"), "--config", str(project.config), "announce", "--title", "Down",
         "--message", "Payments fail.", "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(inbox.messages) < stop_after and process.poll() is None:
        assert time.monotonic() < deadline, "the fan-out did not start"
        time.sleep(0.002)
    process.send_signal(sig)
    process.wait(timeout=60)
    before = len(inbox.messages)
    outcomes = api.retry(settings=load_settings(project.config))
    assert all(o.exit_code == 0 for o in outcomes), outcomes
    got = copies(inbox)
    assert set(got) == set(people), "everyone got the announcement"
    again = sum(n - 1 for n in got.values())
    assert again <= CONNECTIONS, f"{again} copies sent twice; at most one per connection may be"
    ids = Counter(m["Message-ID"] for m in inbox.messages)
    assert all(ids[m["Message-ID"]] == got[m.envelope_to[0]] for m in inbox.messages), \
        "a copy sent again keeps its Message-ID"
    return {"killed_after": before, "sent_again": again}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_kill_during_a_fan_out_resends_at_most_one_message_per_connection(
        project: Project, inbox: Inbox, sig: signal.Signals):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=CONNECTIONS))
    kill_during_fan_out(project, inbox, seed=int(sig), sig=sig)


@pytest.mark.slow
def test_many_seeded_kills_during_fan_outs(tmp_path_factory):
    """`make test-slow`: KILL_SEEDS runs (default 40), SIGKILL and SIGTERM alternately."""
    from broadcaster.standins.smtp import SmtpStandIn

    runs = []
    for seed in range(int(os.environ.get("KILL_SEEDS", "40"))):
        project = Project(tmp_path_factory.mktemp(f"kill{seed}"))
        with SmtpStandIn() as inbox:
            project.write(EMAIL_SECTION.format(port=inbox.port, connections=CONNECTIONS))
            sig = signal.SIGKILL if seed % 2 == 0 else signal.SIGTERM
            runs.append(kill_during_fan_out(project, inbox, seed, sig))
    resent = [r["sent_again"] for r in runs]
    print(f"\nkills during fan-outs: {len(runs)} runs, sent again per run: max {max(resent)}, "
          f"total {sum(resent)} (bound {CONNECTIONS} per run)")


# -- a ledger that cannot be written ------------------------------------------------------------


FULL_DISK = textwrap.dedent("""
    import sqlite3, sys
    import psycopg
    from broadcaster import api
    from broadcaster.ledger.postgres.ledger import PostgresLedger
    from broadcaster.ledger.sqlite.ledger import SQLiteLedger

    calls = []

    def filling(real, full):
        def finish(self, sent, failed, skipped=()):
            calls.append(1)
            if len(calls) > 40:  # the disk fills up in the middle of the fan-out
                raise full
            return real(self, sent, failed, skipped)
        return finish

    # Each store's own `finish` (PostgreSQL writes results with a statement of its own).
    SQLiteLedger.finish = filling(SQLiteLedger.finish, sqlite3.OperationalError("database or disk is full"))
    PostgresLedger.finish = filling(PostgresLedger.finish,
                                    psycopg.errors.DiskFull("could not extend file: No space left on device"))
    from broadcaster.cli import main
    sys.argv = ["broadcaster", "--config", {config!r}, "announce", "--title", "Down", "--message", "M",
                "--yes", "--json"]
    main()
""")


def test_a_ledger_that_cannot_be_written_stops_the_sending_and_retry_finishes(project: Project, inbox: Inbox):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=CONNECTIONS))
    people = subscribe(project, 200)
    done = subprocess.run([sys.executable, "-c", FULL_DISK.format(config=str(project.config))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "ledger could not record" in done.stderr and "Traceback" not in done.stderr
    sent_before = len(inbox.messages)
    (incident,) = api.list_incidents(settings=load_settings(project.config))
    (shown,) = json.loads(project.cli("show", incident.incident.id, "--json").stdout)["updates"]
    recorded = shown["recipients"]["email"].get("sent", 0)
    # Sending stopped at the first failed write: beyond what the ledger holds, at most the one
    # message each connection had sent while that write was tried.
    assert recorded < sent_before <= recorded + CONNECTIONS < 200, (recorded, sent_before)
    outcomes = api.retry(settings=load_settings(project.config))
    assert all(o.exit_code == 0 for o in outcomes)
    got = copies(inbox)
    assert set(got) == set(people) and sum(n - 1 for n in got.values()) <= CONNECTIONS


# -- one person, one subscription ------------------------------------------------------------------


def test_addresses_differing_only_in_case_are_one_subscriber(project: Project, inbox: Inbox):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1))
    (project.root / "s.csv").write_text("email\nAna@Example.com\nana@example.com\nANA@EXAMPLE.COM\n",
                                        encoding="utf-8")
    result = project.cli("subscribers", "import", str(project.root / "s.csv"))
    assert "s.csv:3" in result.output and "already on line 2" in result.output
    assert [s["email"] for s in json.loads(project.cli("subscribers", "list", "--json").stdout)] == [
        "ana@example.com"]
    project.announce()
    assert len(inbox.messages) == 1
    assert project.cli("subscribers", "remove", "ANA@example.COM").exit_code == 0
    project.announce()
    assert len(inbox.messages) == 1, "an unsubscribe unsubscribes"


@pytest.mark.sqlite_only
def test_existing_duplicates_are_merged_keeping_the_unsubscribe(project: Project, monkeypatch):
    from broadcaster.ledger.sqlite import schema

    with monkeypatch.context() as patch:  # a ledger as the version before this one wrote it
        patch.setattr(schema, "SCHEMA_VERSION", 7)
        project.cli("subscribers", "add", "bob@example.com")
    db = sqlite3.connect(project.state / "ledger.db")
    now = "2026-01-01T00:00:00+00:00"
    db.executemany("INSERT INTO subscribers (email, locale, components, regions, postcodes, token, active,"
                   " created_at, updated_at) VALUES (?, 'en', '[]', '[]', '[]', ?, ?, ?, ?)",
                   [("Ana@Example.com", "t" * 32, 1, now, now), ("ana@example.com", "u" * 32, 0, now, now),
                    ("ANA@EXAMPLE.COM", "v" * 32, 1, "2026-02-01T00:00:00+00:00", now)])
    db.commit()
    db.close()
    project.cli("subscribers", "add", "carl@example.com")  # a write migrates
    rows = json.loads(project.cli("subscribers", "list", "--json").stdout)
    listed = {s["email"]: s["active"] for s in rows}
    assert listed == {"ana@example.com": False, "bob@example.com": True, "carl@example.com": True}


# -- long non-ASCII subjects -------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["決済障害" * 60, "🔥⚠️" * 90, "Interrupción prolongada " * 16],
                         ids=["240-cjk", "180-emoji", "accented"])
def test_a_long_non_ascii_subject_is_folded_and_sent(project: Project, inbox: Inbox, title: str):
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1))
    project.cli("subscribers", "add", "ana@example.com")
    result = project.cli("announce", "--title", title, "--message", "M", "--yes", "--json")
    assert result.exit_code == 0, result.output
    (mail,) = inbox.messages
    assert mail["Subject"].endswith(title.strip())
    raw = mail.as_bytes()
    header = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    assert max(len(line) for line in header.splitlines()) <= 998


# -- a busy ledger at unsubscribe ---------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_a_busy_ledger_makes_unsubscribe_answer_503_then_200_means_done(project: Project):
    from test_server import start

    project.cli("subscribers", "add", "ana@example.com")
    db = sqlite3.connect(project.state / "ledger.db", isolation_level=None)
    (token,) = db.execute("SELECT token FROM subscribers").fetchone()
    for server in start(project):
        db.execute("BEGIN IMMEDIATE")  # another broadcaster is writing
        one_click = "List-Unsubscribe=One-Click"
        busy = requests.post(f"{server.url}/unsubscribe/{token}", data=one_click, timeout=60)
        db.execute("ROLLBACK")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert db.execute("SELECT active FROM subscribers").fetchone() == (1,), "503 means not done"
        done = requests.post(f"{server.url}/unsubscribe/{token}", data=one_click, timeout=60)
        assert done.status_code == 200
        assert db.execute("SELECT active FROM subscribers").fetchone() == (0,), "200 means unsubscribed"


# -- links out of the templates and the site --------------------------------------------------------


def test_a_template_folder_with_a_link_leading_out_is_refused(project: Project):
    folder = project.root / "tpl" / "website"
    folder.mkdir(parents=True)
    (folder / "statement.html").symlink_to("/proc/self/environ")
    project.write(f'[templates]\ndir = "{project.root / "tpl"}"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2
    assert "templates" in result.output and "leads outside the templates folder" in result.output
    assert not project.public.exists()


def test_a_link_added_after_the_check_is_still_not_followed(project: Project):
    from broadcaster.render import Templates

    (project.root / "tpl" / "website").mkdir(parents=True)
    project.write(f'[templates]\ndir = "{project.root / "tpl"}"\n')
    settings = load_settings(project.config)
    (project.root / "tpl" / "website" / "statement.html").symlink_to("/etc/passwd")
    with pytest.raises(Exception, match="leads outside the templates folder"):
        Templates(settings).env.get_template("website/statement.html")


def test_the_site_is_never_written_through_a_link_leading_out(project: Project, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    project.public.mkdir(parents=True)
    (project.public / "incidents").symlink_to(outside)
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes", "--json")
    assert result.exit_code == 3
    website = json.loads(result.stdout)["deliveries"][0]
    assert "leads outside" in website["error"]
    assert list(outside.iterdir()) == [], "nothing was written outside the site"


# -- secrets of disabled channels ---------------------------------------------------------------------


def test_every_known_secret_is_masked_and_kept_from_publish_command(project: Project, monkeypatch):
    secrets = {"BROADCASTER_FACEBOOK_PAGE_TOKEN": "EAAB-disabled-SECRET-1",  # facebook is not enabled
               "BROADCASTER_HOOK_SECRET": "hook-SECRET-0123456789",
               "BROADCASTER_TWITTER_ACCESS_TOKEN": "x-disabled-SECRET-22"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    script = project.root / "publish.sh"
    script.write_text('#!/bin/sh\nenv > "$(dirname "$0")/seen-env"\nenv\nexit 1\n', encoding="utf-8")
    script.chmod(0o755)
    project.config.write_text(project.config.read_text().replace(
        'output_dir = "public"', f'output_dir = "public"\npublish_command = "{script}"'), encoding="utf-8")
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes", "--json")
    assert result.exit_code == 3
    seen = (project.root / "seen-env").read_text()
    ledger = b"".join(project.files().values()).decode("utf-8", "replace")  # the SQLite file, or every row
    everything = result.output + seen + ledger
    for value in secrets.values():
        assert value not in everything
    assert "PATH=" in seen, "the command still gets the rest of the environment"


# -- slow clients --------------------------------------------------------------------------------------


def test_a_thousand_slow_clients_do_not_stall_the_server(project: Project, tmp_path: Path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BROADCASTER_HOOK_SECRET": "test-hook-secret-0123456789abcdef"}
    server = subprocess.Popen([str(BIN / "broadcaster"), "--config", str(project.config), "serve",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"))  # noqa: SIM115
    clients: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        for _ in range(1000):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\nX-Broadcaster-Timestamp: 1\r\n"
                      b"X-Broadcaster-Signature: sha256=00\r\n\r\n{")
            clients.append(c)
        # The health check answers at once (best of three, so a busy CI core cannot fail it).
        waits = []
        for _ in range(3):
            started = time.monotonic()
            assert requests.get(url + "/healthz", timeout=10).status_code == 200
            waits.append(time.monotonic() - started)
        assert min(waits) < 1.0, waits
        # The trickling clients are cut off after the body deadline, with 408.
        clients[0].settimeout(30)
        assert b"408" in clients[0].recv(200)
    finally:
        for c in clients:
            c.close()
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "serve.log").stat().st_size < 200_000, "the log stays small"


# -- alert floods ---------------------------------------------------------------------------------------


def test_an_alert_flood_is_rate_limited_and_automatic_publication_is_capped(project: Project):
    from test_server import start

    project.write('[automation]\npublish_impacts = ["critical"]\nalerts_per_minute = 5\n'
                  'publish_per_hour = 2\n')
    for server in start(project):
        answers = [server.post("/hooks/generic", {"title": f"Alert {n}", "message": "Down.",
                                                  "impact": "critical", "dedupe_key": f"k{n}"})
                   for n in range(8)]
        codes = [a.status_code for a in answers]
        assert codes == [200] * 5 + [429] * 3, codes
        assert 1 <= int(answers[5].headers["Retry-After"]) <= 61
        actions = [a.json()["action"] for a in answers[:5]]
        assert actions == ["published", "published", "drafted", "drafted", "drafted"], actions
    assert len(list((project.state / "locks").glob("*.lock"))) <= 3, "lock files do not pile up"


def test_abandoned_drafts_expire(project: Project):
    from datetime import UTC, datetime, timedelta

    project.write("[automation]\ndraft_expiry_hours = 24\n")
    result = project.cli("announce", "--title", "Flapping", "--message", "x", "--draft", "--json")
    incident = json.loads(result.stdout)["incident_id"]
    report = api.tick(now=datetime.now(UTC) + timedelta(hours=23), settings=project.config)
    assert report.expired == []
    report = api.tick(now=datetime.now(UTC) + timedelta(hours=25), settings=project.config)
    assert report.expired == [f"{incident}-1"]
    assert incident not in project.cli("list").stdout


# -- bad bytes -----------------------------------------------------------------------------------------


def test_invalid_utf8_on_the_command_line_is_bad_input(project: Project):
    done = subprocess.run([str(BIN / "broadcaster"), "--config", str(project.config), "announce",
                           "--title", b"Pagos \xff".decode("utf-8", "surrogateescape"), "--message", "M",
                           "--yes"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not valid UTF-8" in done.stderr and "--title" in done.stderr
    assert not project.public.exists()


def test_deep_json_and_odd_timestamps_are_refused(project: Project):
    from test_server import SECRET, start

    from broadcaster.hooks import sign

    for server in start(project):
        nested = b"[" * 100_000 + b"]" * 100_000
        deep = b'{"title": "T", "message": "M", "dedupe_key": "k", "x": ' + nested + b"}"
        assert server.post("/hooks/generic", deep).status_code == 400
        body = json.dumps({"title": "T", "message": "M", "dedupe_key": "k"}).encode()
        now = str(int(time.time()))
        for stamp in (f"+{now}", f"{now[:3]}_{now[3:]}", f"0{now}"):
            answer = requests.post(server.url + "/hooks/generic", data=body, timeout=10, headers={
                "X-Broadcaster-Timestamp": stamp, "X-Broadcaster-Signature": sign(SECRET, stamp, body)})
            assert answer.status_code == 401 and "decimal" in answer.json()["error"], stamp


def test_message_text_cannot_trigger_personalisation(project: Project, inbox: Inbox):
    from broadcaster.channels import email as email_channel

    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1))
    project.cli("subscribers", "add", "ana@example.com")
    guesses = "BROADCASTER-TOKEN-PLACEHOLDER-7Q rcpt@placeholder.invalid <message@placeholder.invalid>"
    project.cli("announce", "--title", "T", "--message", guesses, "--yes")
    body = inbox.messages[0].get_body(("plain",)).get_content()
    assert "BROADCASTER-TOKEN-PLACEHOLDER-7Q" in body and "rcpt@placeholder.invalid" in body
    assert email_channel.TOKEN not in body, "this process's placeholder never appears in a message"
