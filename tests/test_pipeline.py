"""Announce → update → resolve through the real pipeline, with the website channel."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class _Text(HTMLParser):
    """Text content and the tags present: to check pages without string-matching markup."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


def test_dry_run_renders_every_channel_and_writes_nothing(project):
    result = project.cli("announce", "--title", "Payments down", "--message", "Card payments fail.",
                         "--dry-run")
    assert result.exit_code == 0, result.output
    assert "incidents/" in result.output and "Dry run: nothing was recorded or sent." in result.output
    assert "no 'es' text given" in result.output
    assert project.files() == {}


def test_statement_page_shows_the_whole_timeline_newest_first(project):
    incident = project.announce("--guidance", "Pay by **transfer**.", "--component", "Payments API")
    assert project.cli("update", incident, "--status", "identified", "--message", "Found the cause.",
                       "--yes").exit_code == 0
    assert project.cli("resolve", incident, "--message", "Fixed at 10:42.", "--apology",
                       "We are sorry.", "--yes").exit_code == 0
    page = (project.public / "incidents" / incident / "index.html").read_text()
    text = " ".join(parse(page).text)
    assert text.index("Fixed at 10:42.") < text.index("Found the cause.") < text.index("Card payments fail.")
    assert "We are sorry." in text and "Payments API" in text
    assert [m for m in re.findall(r'id="update-(\d)"', page)] == ["3", "2", "1"]
    index = (project.public / "index.html").read_text()
    assert "All systems operational" in index and "Payments down" in index


def test_each_locale_gets_its_own_page_and_falls_back_to_the_default_text(project):
    incident = project.announce("--title-es", "Pagos caídos", "--message-es", "Fallan los pagos.")
    assert project.cli("update", incident, "--status", "monitoring", "--message", "Watching.",
                       "--yes").exit_code == 0
    spanish = (project.public / "es" / "incidents" / incident / "index.html").read_text()
    assert "Pagos caídos" in spanish and "Fallan los pagos." in spanish
    assert "Watching." in spanish  # no Spanish text for the update: the English one is shown
    assert 'lang="es"' in spanish and 'hreflang="en"' in spanish
    assert "Solución aplicada, en seguimiento" in spanish  # interface words translated


def test_html_in_any_field_is_escaped_on_every_page(project):
    result = project.cli("announce", "--title", XSS, "--message", XSS, "--guidance", XSS,
                         "--component", XSS, "--region", XSS, "--title-es", XSS, "--message-es", XSS,
                         "--yes")
    assert result.exit_code == 0, result.output
    pages = list(project.public.rglob("*.html"))
    assert len(pages) == 8  # statement, index, history and its month, in two locales
    for page in pages:
        html = page.read_text()
        assert "<script>alert" not in html and "<img" not in html, page
        assert "script" not in parse(html).tags and "img" not in parse(html).tags


def test_retrying_a_finished_incident_changes_nothing(project):
    incident = project.announce()
    before = project.files()
    result = project.cli("retry", incident, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deliveries"][0]["status"] == "sent"
    assert project.files() == before
    assert project.cli("retry").output.startswith("Nothing to retry")


def test_json_output_follows_the_contract(project):
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes", "--json")
    data = json.loads(result.stdout)
    assert set(data) >= {"incident_id", "update_id", "statement_url", "deliveries"}
    assert data["statement_url"] == f"https://status.example.com/incidents/{data['incident_id']}/"
    (website,) = data["deliveries"]
    assert website["channel"] == "website" and website["status"] == "sent"
    assert website["url"] == data["statement_url"] and website["error"] is None


def test_drafts_are_recorded_unpublished_then_published(project):
    result = project.cli("announce", "--title", "Maybe down", "--message", "M", "--draft", "--json")
    incident = json.loads(result.stdout)["incident_id"]
    assert not project.public.exists()
    listed = json.loads(project.cli("list", "--drafts", "--json").stdout)
    assert [i["id"] for i in listed] == [incident]
    (everything,) = json.loads(project.cli("list", "--json").stdout)  # drafts are listed, marked
    assert everything["id"] == incident and everything["draft"] is True
    result = project.cli("publish", incident, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert (project.public / "incidents" / incident / "index.html").exists()
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert shown["draft"] is False and shown["updates"][0]["deliveries"][0]["status"] == "sent"


def test_user_templates_override_the_shipped_ones(project):
    folder = project.root / "mine" / "website"
    folder.mkdir(parents=True)
    (folder / "announce.en.html").write_text('<li class="custom">{{ entry.message|markdown }}</li>')
    project.write('[templates]\ndir = "mine"\n')
    incident = project.announce()
    page = (project.public / "incidents" / incident / "index.html").read_text()
    assert '<li class="custom"><p>Card payments fail.</p></li>' in page
    spanish = (project.public / "es" / "incidents" / incident / "index.html").read_text()
    assert 'class="custom"' in spanish  # no Spanish override: falls back to the default locale's


def test_user_templates_run_in_the_sandbox(project):
    folder = project.root / "mine" / "website"
    folder.mkdir(parents=True)
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    (folder / "announce.html").write_text(escape)
    project.write('[templates]\ndir = "mine"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2, result.output
    assert "refused by the template sandbox" in result.output
    assert not project.public.exists()


def test_an_undefined_variable_in_a_template_names_the_template(project):
    folder = project.root / "mine" / "website"
    folder.mkdir(parents=True)
    (folder / "announce.html").write_text("<li>{{ entry.mesage }}</li>")
    project.write('[templates]\ndir = "mine"\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2
    assert "mesage" in result.output and "nothing was sent" in result.output


def test_the_ledger_records_every_delivery_with_its_attempts(project):
    incident = project.announce()
    rows = project.rows("SELECT channel, state, attempts, url FROM deliveries")
    assert rows == [("website", "sent", 1, f"https://status.example.com/incidents/{incident}/")]
    if not project.url:
        assert project.rows("PRAGMA journal_mode") == [("wal",)]
