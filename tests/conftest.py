"""Shared fixtures: a settings file in a temporary folder, the CLI, and a recording channel."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broadcaster import registry
from broadcaster.channels.testing import Script
from broadcaster.channels.testing import recording_channel as recorder
from broadcaster.standins.graph_api import DRILL_PAGE_TOKEN, GraphStandIn
from broadcaster.standins.smtp import SmtpStandIn
from broadcaster.standins.x_api import DRILL_CREDENTIALS, XStandIn

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: The store the behavioural tests run on: "sqlite" (the default) or "postgresql" (a database
#: per project on the server BROADCASTER_TEST_POSTGRES_URL names). Read before any test clears
#: the BROADCASTER_ variables.
STATE = os.environ.get("BROADCASTER_TEST_STATE", "sqlite")
#: The PostgreSQL server for the tests (scripts/postgres prints these).
POSTGRES_URL = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "")
POSTGRES_PASSWORD = os.environ.get("BROADCASTER_TEST_POSTGRES_PASSWORD", "")
SQLITE_STATE = 'path = "state/ledger.db"'
if STATE == "postgresql":  # also for servers a module starts once, before any test's fixtures
    os.environ["BROADCASTER_STATE_PASSWORD"] = POSTGRES_PASSWORD
#: On CI every tool must be there: a missing one fails instead of skipping.
REQUIRE_TOOLS = os.environ.get("BROADCASTER_REQUIRE_TOOLS") == "1"

BASE_SETTINGS = """
[organization]
name = "Example Corp"
timezone = "Europe/Madrid"
locales = ["en", "es"]

[site]
base_url = "https://status.example.com"
output_dir = "public"

[state]
path = "state/ledger.db"

[retry]
attempts = 3
initial_wait_seconds = 0
max_wait_seconds = 5
"""


@dataclass
class Project:
    """A folder with a settings file, as an operator would have; its ledger on the store the
    run tests (STATE): a file in the folder, or a database of its own on the test server."""

    root: Path
    runner: CliRunner = field(default_factory=CliRunner)
    #: The project's PostgreSQL database (when STATE is "postgresql").
    url: str = ""

    def __post_init__(self) -> None:
        if STATE == "postgresql" and not self.url:
            self.url = new_database()

    @property
    def config(self) -> Path:
        return self.root / "settings.toml"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write(self, extra: str = "", base: str = BASE_SETTINGS) -> Path:
        text = textwrap.dedent(base) + textwrap.dedent(extra)
        if self.url:
            text = text.replace(SQLITE_STATE, f'url = "{self.url}"')
        self.config.write_text(text, encoding="utf-8")
        return self.config

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows straight from the ledger's store (`?` placeholders); none before it exists."""
        if self.url:
            import psycopg

            with psycopg.connect(self.url, password=POSTGRES_PASSWORD or None) as db:
                try:
                    return db.execute(sql.replace("?", "%s"), params or None).fetchall()
                except psycopg.errors.UndefinedTable:
                    return []
        import sqlite3

        if not (self.state / "ledger.db").exists():
            return []
        db = sqlite3.connect(self.state / "ledger.db")
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            db.close()

    def has_ledger(self) -> bool:
        """Whether anything made the ledger yet (the file, or the schema in the database)."""
        if self.url:
            return bool(self.rows("SELECT version FROM broadcaster_schema"))
        return (self.state / "ledger.db").exists()

    def execute(self, sql: str, rows: list[tuple]) -> None:
        """Write rows straight into the ledger's store, as an older version would have."""
        if self.url:
            import psycopg

            with psycopg.connect(self.url, password=POSTGRES_PASSWORD or None) as db:
                db.cursor().executemany(sql.replace("?", "%s"), rows)
            return
        import sqlite3

        with sqlite3.connect(self.state / "ledger.db") as db:
            db.executemany(sql, rows)
        db.close()

    def cli(self, *args: str, env: dict[str, str] | None = None):
        from broadcaster.cli import app

        return self.runner.invoke(app, ["--config", str(self.config), *args], env=env)

    def announce(self, *args: str) -> str:
        result = self.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                          "--yes", "--json", *args)
        assert result.exit_code == 0, result.output
        import json

        return json.loads(result.stdout)["incident_id"]

    def files(self) -> dict[str, bytes]:
        """Everything written under the project folder (and, on PostgreSQL, every row of the
        ledger and its schema version), for 'nothing changed' checks."""
        found = {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            # SQLite readers may create -shm (an index) and an empty -wal: neither holds data.
            if p.is_file() and p.name != "settings.toml" and "locks" not in p.parts
            and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)
        }
        if self.url:
            from broadcaster.ledger.interface import TABLES

            dump = [self.rows("SELECT version FROM broadcaster_schema")]
            dump += [self.rows(f"SELECT * FROM {table} ORDER BY 1") for table in TABLES]
            if any(dump):
                found["<the PostgreSQL ledger>"] = repr(dump).encode()
        return found


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project(tmp_path)
    p.write()
    return p


# -- a recording channel: a real Channel implementation that keeps what it is sent ---------


@pytest.fixture
def channel_factory() -> Iterator[Callable[..., Script]]:
    names: list[str] = []

    def make(name: str = "recorder", **kwargs: object) -> Script:
        script = Script()
        registry.register(recorder(name, script, **kwargs))
        names.append(name)
        return script

    yield make
    for name in names:
        registry.unregister(name)


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BROADCASTER_"):
            monkeypatch.delenv(name)
    if STATE == "postgresql":  # the test server's password, as a team's hosts have it
        monkeypatch.setenv("BROADCASTER_STATE_PASSWORD", POSTGRES_PASSWORD)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STATE != "sqlite":
        skip = pytest.mark.skip(reason="about the SQLite store itself (BROADCASTER_TEST_STATE=postgresql)")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _drop_databases() -> Iterator[None]:
    """Every database the run made is dropped at the end (a failed test's one included)."""
    yield
    if _DATABASES:
        with postgres_admin() as admin:
            for name in _DATABASES:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the social channels against their local stand-ins -------------------------------------


@dataclass
class Commands:
    """A project whose channels point at running stand-ins; `run` is one command's JSON."""

    project: Project

    def run(self, *args: str) -> dict:
        """A command with --yes --json; its parsed output (any exit code)."""
        import json

        result = self.project.cli(*args, "--yes", "--json")
        assert result.stdout.strip(), result.output
        data = json.loads(result.stdout)
        data["exit_code"] = result.exit_code
        return data


@dataclass
class Social(Commands):
    """A project whose X and Facebook channels point at running stand-ins."""

    x: XStandIn
    graph: GraphStandIn

    def configure(self, twitter: str = "", facebook: str = "", top: str = "") -> None:
        self.project.write(
            f"""
            [channels.twitter]
            enabled = true
            api_base = "{self.x.url}"
            {twitter}

            [channels.facebook]
            enabled = true
            page_id = "{self.graph.page_id}"
            api_base = "{self.graph.url}"
            {facebook}
            """,
            base=top + BASE_SETTINGS,
        )


def status_of(outcome: dict, channel: str) -> dict:
    return next(d for d in outcome["deliveries"] if d["channel"] == channel)


@pytest.fixture
def social(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Social]:
    with XStandIn() as x, GraphStandIn() as graph:
        for name, value in {**DRILL_CREDENTIALS.environ(),
                            "BROADCASTER_FACEBOOK_PAGE_TOKEN": DRILL_PAGE_TOKEN}.items():
            monkeypatch.setenv(name, value)
        s = Social(project, x, graph)
        s.configure()
        yield s
        assert x.errors == [] and graph.errors == [], "a stand-in handler crashed"


# -- a real SMTP server (aiosmtpd) ----------------------------------------------------------


Inbox = SmtpStandIn


@pytest.fixture
def inbox() -> Iterator[SmtpStandIn]:
    with SmtpStandIn() as box:
        yield box


EMAIL_SECTION = """
[channels.email]
enabled = true
host = "127.0.0.1"
port = {port}
sender = "Example Corp Status <status@example.com>"
connections = {connections}
"""


@pytest.fixture
def mailing(project: Project, inbox: Inbox) -> Project:
    """A project whose email channel sends to the aiosmtpd inbox."""
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=2))
    project.inbox = inbox  # type: ignore[attr-defined]
    return project


# -- PostgreSQL: a fresh database per test on the server scripts/postgres started ----------

_DATABASES: list[str] = []


def postgres_admin():
    import psycopg

    return psycopg.connect(POSTGRES_URL, password=POSTGRES_PASSWORD or None, autocommit=True,
                           connect_timeout=10)


def no_server_message() -> str:
    return ("no PostgreSQL server for the tests: `eval \"$(scripts/postgres start /tmp/pg)\"` starts one "
            "and sets BROADCASTER_TEST_POSTGRES_URL")


def new_database() -> str:
    """The url of a new, empty database on the test server (dropped when the run ends)."""
    if not POSTGRES_URL:
        raise RuntimeError(no_server_message())
    import secrets

    _DATABASES.append(f"test_{secrets.token_hex(6)}")
    with postgres_admin() as admin:
        admin.execute(f"CREATE DATABASE {_DATABASES[-1]}")
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + _DATABASES[-1]


@pytest.fixture
def postgres_databases(monkeypatch: pytest.MonkeyPatch) -> Callable[[], str]:
    """Make new, empty databases (their password in BROADCASTER_STATE_PASSWORD)."""
    if not POSTGRES_URL:
        if REQUIRE_TOOLS:
            pytest.fail(no_server_message())
        pytest.skip(no_server_message())
    monkeypatch.setenv("BROADCASTER_STATE_PASSWORD", POSTGRES_PASSWORD)
    return new_database


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """The url of a new, empty database."""
    return postgres_databases()

