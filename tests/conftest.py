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
    """A folder with a settings file, as an operator would have."""

    root: Path
    runner: CliRunner = field(default_factory=CliRunner)

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
        self.config.write_text(textwrap.dedent(base) + textwrap.dedent(extra), encoding="utf-8")
        return self.config

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
        """Everything written under the project folder, for 'nothing changed' checks."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            # SQLite readers may create -shm (an index) and an empty -wal: neither holds data.
            if p.is_file() and p.name != "settings.toml" and "locks" not in p.parts
            and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)
        }


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


# -- the social channels against their local stand-ins -------------------------------------


@dataclass
class Social:
    """A project whose X and Facebook channels point at running stand-ins."""

    project: Project
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

    def run(self, *args: str) -> dict:
        """A command with --json; its parsed output (any exit code)."""
        import json

        result = self.project.cli(*args, "--yes", "--json")
        assert result.stdout.strip(), result.output
        data = json.loads(result.stdout)
        data["exit_code"] = result.exit_code
        return data


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

#: Read once, before any test clears the BROADCASTER_ variables from the environment.
POSTGRES_URL = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "")
POSTGRES_PASSWORD = os.environ.get("BROADCASTER_TEST_POSTGRES_PASSWORD", "")


def postgres_admin():
    import psycopg

    return psycopg.connect(POSTGRES_URL, password=POSTGRES_PASSWORD or None, autocommit=True,
                           connect_timeout=10)


@pytest.fixture
def postgres_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """Make new, empty databases (their password in BROADCASTER_STATE_PASSWORD), dropped after."""
    if not POSTGRES_URL:
        why = ("no PostgreSQL server for the tests: `eval \"$(scripts/postgres start /tmp/pg)\"` starts one "
               "and sets BROADCASTER_TEST_POSTGRES_URL")
        if os.environ.get("BROADCASTER_REQUIRE_TOOLS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    import secrets

    monkeypatch.setenv("BROADCASTER_STATE_PASSWORD", POSTGRES_PASSWORD)
    names: list[str] = []

    def make() -> str:
        names.append(f"test_{secrets.token_hex(6)}")
        with postgres_admin() as admin:
            admin.execute(f"CREATE DATABASE {names[-1]}")
        return POSTGRES_URL.rsplit("/", 1)[0] + "/" + names[-1]

    yield make
    with postgres_admin() as admin:
        for name in names:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """The url of a new, empty database."""
    return postgres_databases()

