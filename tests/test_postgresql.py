"""A team on one PostgreSQL ledger: every "host" is a process with the same settings.

These run when a PostgreSQL server is reachable (BROADCASTER_TEST_POSTGRES_URL, which
`scripts/postgres start` prints and .ci/run sets); elsewhere they skip and say why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import BASE_SETTINGS, BIN, EMAIL_SECTION, ROOT, Project
from test_crashes_and_concurrency import CRASHING

from broadcaster import api
from broadcaster.ledger.postgres.schema import SCHEMA_VERSION
from broadcaster.settings import load_settings

STAFF = 'staff = ["oncall@example.com"]\n'


@pytest.fixture
def team(project: Project, postgres_url: str) -> Project:
    """A project whose ledger is a fresh PostgreSQL database."""
    project.url = postgres_url  # type: ignore[attr-defined]
    project.write(base=shared(postgres_url))
    return project


def shared(url: str, organization: str = "") -> str:
    return BASE_SETTINGS.replace('path = "state/ledger.db"', f'url = "{url}"').replace(
        'locales = ["en", "es"]\n', 'locales = ["en", "es"]\n' + organization)


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, password=os.environ["BROADCASTER_STATE_PASSWORD"]) as db:
        return db.execute(sql).fetchall()


def cli(project: Project, *args: str) -> subprocess.Popen:
    """The command on another "host": its own process, the same settings."""
    return subprocess.Popen([str(BIN / "broadcaster"), "--config", str(project.config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_operators_on_several_hosts_update_one_incident_and_all_land_in_order(team: Project):
    incident = team.announce()
    assert not (team.state / "ledger.db").exists(), "nothing in SQLite: the team's ledger is PostgreSQL"
    operators = [cli(team, "update", incident, "--status", "identified", "--message",
                     f"Update from operator {n}.", "--yes", "--json") for n in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in operators]
    assert all(code == 0 for code, _, _ in results), results
    assert sorted(json.loads(out)["update_id"] for _, out, _ in results) == [
        f"{incident}-{n}" for n in (2, 3, 4, 5)]
    shown = json.loads(team.cli("show", incident, "--json").stdout)
    assert [u["id"] for u in shown["updates"]] == [f"{incident}-{n}" for n in range(1, 6)]
    assert all(u["deliveries"][0]["status"] == "sent" for u in shown["updates"])
    page = (team.public / "incidents" / incident / "index.html").read_text()
    assert all(f"Update from operator {n}." in page for n in range(4))


def test_a_draft_from_one_host_is_listed_revised_and_published_from_another(team: Project):
    drafted = cli(team, "announce", "--title", "Search slow", "--message", "Searches time out.",
                  "--draft", "--json")
    incident = json.loads(drafted.communicate(timeout=60)[0])["incident_id"]
    listed = json.loads(team.cli("list", "--drafts", "--json").stdout)
    assert [i["id"] for i in listed] == [incident] and listed[0]["draft"]
    revised = cli(team, "update", incident, "--status", "investigating", "--message", "Searches fail.",
                  "--draft", "--json")
    assert json.loads(revised.communicate(timeout=60)[0])["revised"] is True
    published = cli(team, "publish", incident, "--yes", "--json")
    _, err = published.communicate(timeout=60)
    assert published.returncode == 0, err
    assert "Searches fail." in (team.public / "incidents" / incident / "index.html").read_text()
    assert json.loads(team.cli("list", "--drafts", "--json").stdout) == []


def test_a_process_killed_on_one_host_is_finished_from_another_exactly_once(team: Project, channel_factory):
    team.write("[channels.chirp]\nenabled = true\n", base=shared(team.url))  # type: ignore[attr-defined]
    code = CRASHING.format(tests=str(ROOT / "tests"), config=str(team.config))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    states = dict(rows(team.url, "SELECT channel, state FROM deliveries"))  # type: ignore[attr-defined]
    assert states == {"website": "sent", "chirp": "in_flight"}

    script = channel_factory("chirp")
    (outcome,) = api.retry(settings=load_settings(team.config))
    assert outcome.exit_code == 0
    ((post, _, resumed),) = script.received
    assert resumed is True and outcome.statement_url in post.text
    assert api.retry(settings=load_settings(team.config)) == [] and len(script.received) == 1


def test_ticks_from_every_host_at_once_remind_staff_once(team: Project, inbox):
    team.write(EMAIL_SECTION.format(port=inbox.port, connections=1),
               base=shared(team.url, STAFF))  # type: ignore[attr-defined]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    api.announce("Payments down", "Card payments fail.", next_update=soon, settings=team.config)
    time.sleep(2.5)
    ticks = [cli(team, "tick", "--json") for _ in range(3)]
    reports = [json.loads(t.communicate(timeout=60)[0]) for t in ticks]
    assert sorted(len(r["reminded"]) for r in reports) == [0, 0, 1]
    assert len(inbox.messages) == 1


def test_the_schema_is_migrated_once_when_hosts_start_together(team: Project):
    migrations = [cli(team, "state", "migrate", "--json") for _ in range(3)]
    reports = [json.loads(p.communicate(timeout=60)[0]) for p in migrations]
    assert sorted(r["migrated"] for r in reports) == [False, False, True]
    assert {(r["store"], r["schema"]) for r in reports} == {("postgresql", SCHEMA_VERSION)}
    assert rows(team.url, "SELECT version FROM broadcaster_schema") == [(SCHEMA_VERSION,)]  # type: ignore[attr-defined]
    again = team.cli("state", "migrate")
    assert again.exit_code == 0 and f"already at schema {SCHEMA_VERSION}; nothing to do" in again.stdout


def test_a_password_in_the_file_is_refused_and_a_wrong_one_is_never_shown(team: Project, monkeypatch):
    url = team.url.replace("://broadcaster@", "://broadcaster:hunter2hunter2@")  # type: ignore[attr-defined]
    team.write(base=shared(url))
    result = team.cli("list")
    assert result.exit_code == 2
    assert "settings.toml:12: state.url: holds a password: remove it from the file" in result.output
    assert "hunter2hunter2" not in result.output

    team.write(base=shared(team.url))  # type: ignore[attr-defined]
    monkeypatch.setenv("BROADCASTER_STATE_PASSWORD", "not-the-password-at-all")
    result = team.cli("announce", "--title", "Down", "--message", "Broken.", "--yes")
    assert result.exit_code == 2
    assert "state.url: cannot open the ledger at 127.0.0.1:" in result.output
    assert "password authentication failed" in result.output
    assert "not-the-password-at-all" not in result.output
    assert not (team.public / "index.html").exists(), "nothing was published"


def test_serve_with_a_wrong_password_refuses_to_start_and_says_why(team: Project, monkeypatch):
    monkeypatch.setenv("BROADCASTER_STATE_PASSWORD", "not-the-password-at-all")
    monkeypatch.setenv("BROADCASTER_HOOK_SECRET", "s" * 40)
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.run([str(BIN / "broadcaster"), "--config", str(team.config), "serve", "--port",
                             str(port)], capture_output=True, text=True, timeout=60)
    assert server.returncode != 0
    assert "cannot open the ledger at 127.0.0.1:" in server.stderr
    assert "password authentication failed" in server.stderr
    assert "not-the-password-at-all" not in server.stderr + server.stdout


def test_a_path_and_a_url_together_are_refused(team: Project):
    both = shared(team.url).replace("[state]\n", '[state]\npath = "state/sqlite.db"\n')  # type: ignore[attr-defined]
    team.write(base=both)
    result = team.cli("list")
    assert result.exit_code == 2
    assert "give path (SQLite, one machine) or url (PostgreSQL, a team), not both" in result.output


def test_a_laptops_ledger_moves_to_the_team_and_the_incident_goes_on_there(project: Project, postgres_url):
    incident = project.announce()
    assert project.cli("subscribers", "add", "ana@example.com", "--locale", "es").exit_code == 0
    export = project.root / "ledger.jsonl"
    moved = project.cli("state", "export", str(export))
    assert moved.exit_code == 0 and "holds every subscriber's unsubscribe token" in moved.output
    project.write(base=shared(postgres_url))
    imported = json.loads(project.cli("state", "import", str(export), "--json").stdout)
    assert imported["store"] == "postgresql" and imported["rows"]["incidents"] == 1
    update = project.cli("update", incident, "--status", "identified", "--message", "Found it.", "--yes")
    assert update.exit_code == 0, update.output
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert [u["id"] for u in shown["updates"]] == [f"{incident}-1", f"{incident}-2"]
    listed = json.loads(project.cli("subscribers", "list", "--json").stdout)
    assert [(s["email"], s["locale"]) for s in listed] == [("ana@example.com", "es")]


def test_serve_borrows_from_a_few_kept_connections_however_many_requests(team: Project):
    import requests
    from test_server import start

    from broadcaster import defaults

    assert team.cli("subscribers", "add", "ana@example.com").exit_code == 0
    ((token,),) = rows(team.url, "SELECT token FROM subscribers")  # type: ignore[attr-defined]
    ours = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'broadcaster'")
    for server in start(team):
        for _ in range(30):
            assert requests.get(server.url + "/healthz", timeout=30).json() == {"status": "ok"}
        left = requests.post(f"{server.url}/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                             timeout=30)
        assert left.status_code == 200
        ((held,),) = rows(team.url, ours)  # type: ignore[attr-defined]
        assert 1 <= held <= defaults.SERVE_LEDGER_CONNECTIONS, "kept open, and few"
    assert rows(team.url, "SELECT active FROM subscribers") == [(0,)]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30  # a closed session's backend takes a moment to leave the view
    while rows(team.url, ours) != [(0,)]:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the pool is closed when the server stops"
        time.sleep(0.1)
