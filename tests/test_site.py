"""The status site: components and regions, state, history, Atom, Statuspage JSON, rebuilds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import feedparser
import pytest
from conftest import Project

SITE = """
[[components]]
name = "Payments API"
group = "Payments"

[[components]]
name = "Checkout"
group = "Payments"

[[components]]
name = "Search"

[[regions]]
name = "Madrid"
postcodes = ["28"]

[[regions]]
name = "Barcelona"
postcodes = ["08"]
"""


@pytest.fixture
def site(project: Project) -> Project:
    project.write(SITE)
    return project


def api(project: Project, name: str) -> dict:
    return json.loads((project.public / "api" / "v2" / name).read_text())


def test_unknown_components_and_regions_are_bad_input_listing_the_known_ones(site: Project):
    result = site.cli("announce", "--title", "T", "--message", "M", "--component", "Payroll", "--yes")
    assert result.exit_code == 2
    assert "component 'Payroll' is not one of the configured components: Payments API, Checkout, Search" \
        in result.output
    assert site.files() == {}
    result = site.cli("announce", "--title", "T", "--message", "M", "--region", "Sevilla", "--yes")
    assert result.exit_code == 2 and "Madrid, Barcelona" in result.output


def test_names_are_matched_without_case_and_stored_as_configured(site: Project):
    incident = site.announce("--component", "payments api", "--region", "MADRID")
    shown = json.loads(site.cli("show", incident, "--json").stdout)
    assert shown["components"] == ["Payments API"] and shown["regions"] == ["Madrid"]


def test_with_nothing_configured_any_name_is_accepted(project: Project):
    incident = project.announce("--component", "Anything at all")
    assert json.loads(project.cli("show", incident, "--json").stdout)["components"] == ["Anything at all"]


def test_subscribers_follow_configured_names_only(site: Project):
    (site.root / "s.csv").write_text("email,locale,components\na@example.com,en,Payroll\n", encoding="utf-8")
    result = site.cli("subscribers", "import", str(site.root / "s.csv"))
    assert result.exit_code == 2 and "s.csv:2: component 'Payroll'" in result.output


def test_component_states_follow_open_incidents_and_their_impact(site: Project):
    incident = site.announce("--component", "Payments API", "--impact", "major")
    states = {c["name"]: c["status"] for c in api(site, "components.json")["components"]}
    assert states == {"Payments": "partial_outage", "Payments API": "partial_outage",
                      "Checkout": "operational", "Search": "operational"}
    status = api(site, "status.json")["status"]
    assert status == {"indicator": "major", "description": "Partial System Outage"}
    index = (site.public / "index.html").read_text()
    assert "Partial outage" in index and "Some services have problems" in index
    spanish = (site.public / "es" / "index.html").read_text()
    assert "Interrupción parcial" in spanish
    site.cli("update", incident, "--status", "identified", "--message", "Worse.", "--impact", "critical",
             "--yes")
    assert {c["name"]: c["status"] for c in api(site, "components.json")["components"]}["Payments API"] \
        == "major_outage"
    site.cli("resolve", incident, "--message", "Fixed.", "--apology", "Sorry.", "--yes")
    assert all(c["status"] == "operational" for c in api(site, "components.json")["components"])
    assert api(site, "status.json")["status"]["indicator"] == "none"
    assert "All systems operational" in (site.public / "index.html").read_text()


def test_the_json_has_statuspages_shapes_and_values(site: Project):
    incident = site.announce("--component", "Checkout", "--region", "Madrid")
    site.cli("update", incident, "--status", "monitoring", "--message", "Watching.", "--yes")
    summary = api(site, "summary.json")
    assert set(summary) == {"page", "components", "incidents", "scheduled_maintenances", "status"}
    assert set(summary["page"]) == {"id", "name", "url", "time_zone", "updated_at"}
    component_keys = {"id", "name", "status", "created_at", "updated_at", "position", "description",
                      "showcase", "start_date", "group_id", "page_id", "group", "only_show_if_degraded"}
    for component in summary["components"]:
        assert component_keys <= set(component)
        assert component["status"] in {"operational", "degraded_performance", "partial_outage",
                                       "major_outage", "under_maintenance"}
    (item,) = summary["incidents"]
    assert {"id", "name", "status", "created_at", "updated_at", "monitoring_at", "resolved_at", "impact",
            "shortlink", "started_at", "page_id", "incident_updates", "components"} <= set(item)
    assert item["status"] == "monitoring" and item["impact"] == "minor" and item["monitoring_at"]
    assert item["shortlink"] == f"https://status.example.com/incidents/{incident}/"
    assert [u["status"] for u in item["incident_updates"]] == ["monitoring", "investigating"]
    assert {"id", "status", "body", "incident_id", "created_at", "display_at", "affected_components"} \
        <= set(item["incident_updates"][0])
    assert api(site, "incidents/unresolved.json")["incidents"][0]["id"] == incident
    assert api(site, "incidents.json")["incidents"][0]["id"] == incident
    assert api(site, "scheduled-maintenances.json") == {"page": summary["page"], "scheduled_maintenances": []}
    site.cli("resolve", incident, "--message", "Fixed.", "--apology", "Sorry.", "--yes")
    assert api(site, "incidents/unresolved.json")["incidents"] == []
    resolved = api(site, "incidents.json")["incidents"][0]
    assert resolved["status"] == "resolved" and resolved["resolved_at"]


def test_the_feed_is_atom_with_one_entry_per_update_linking_to_the_statement(site: Project):
    incident = site.announce("--title-es", "Pagos caídos", "--message-es", "Fallan.")
    site.cli("update", incident, "--status", "identified", "--message", "Found it.", "--yes")
    feed = feedparser.parse((site.public / "feed.atom").read_bytes())
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert [e.title for e in feed.entries] == [
        "Cause identified: Payments down", "Investigating: Payments down"]
    assert feed.entries[0].link == f"https://status.example.com/incidents/{incident}/#update-2"
    spanish = feedparser.parse((site.public / "es" / "feed.atom").read_bytes())
    assert spanish.entries[1].title == "Investigando: Pagos caídos"
    assert spanish.entries[1].link.startswith("https://status.example.com/es/incidents/")


def test_history_lists_incidents_by_month_in_every_locale(site: Project):
    first = site.announce()
    site.cli("resolve", first, "--message", "Fixed.", "--apology", "Sorry.", "--yes")
    second = site.announce()
    month = next(p.name for p in (site.public / "history").iterdir() if p.is_dir())
    page = (site.public / "history" / month / "index.html").read_text()
    assert first in page and second in page
    months = (site.public / "history" / "index.html").read_text()
    assert f'href="https://status.example.com/history/{month}/"' in months
    spanish = (site.public / "es" / "history" / "index.html").read_text()
    assert 'hreflang="en"' in spanish and first in spanish and second in spanish, "the month told in full"


def test_a_busy_month_tells_its_newest_incidents_and_links_the_rest(site: Project):
    from datetime import UTC, datetime, timedelta

    from broadcaster.defaults import HISTORY_STORIES
    from broadcaster.ledger import open_ledger
    from broadcaster.model import Impact, Kind, Status, Text, Update, new_incident_id
    from broadcaster.settings import load_settings

    now = datetime.now(UTC)
    began = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)  # all in this month
    with open_ledger(load_settings(site.config)) as ledger:
        for n in range(HISTORY_STORIES + 3):
            incident, at = new_incident_id(), began + (now - began) * (n + 1) / 40
            for seq, (kind, status) in enumerate([(Kind.ANNOUNCE, Status.INVESTIGATING),
                                                  (Kind.RESOLVE, Status.RESOLVED)], start=1):
                ledger.record(Update(f"{incident}-{seq}", incident, seq, kind, status, Impact.MINOR,
                                     ("Search",), (), {"en": Text(f"Slow {n}", "Slow.")},
                                     at + timedelta(microseconds=seq)), [])
    newest = site.announce("--component", "Search")  # the 29th this month
    month = now.strftime("%Y-%m")
    history = (site.public / "history" / "index.html").read_text()
    told = history.split(f'id="month-{month}"', 1)[1].split("</section>", 1)[0]
    assert told.count('class="story"') == HISTORY_STORIES and newest in told, "the newest first"
    name = now.strftime("%B %Y")
    assert f'href="https://status.example.com/history/{month}/">4 more in {name}</a>' in told
    page = (site.public / "history" / month / "index.html").read_text()
    assert page.count('class="story"') == HISTORY_STORIES + 4, "the month's page lists them all"
    component = (site.public / "components" / "search" / "index.html").read_text()
    assert component.count('class="story"') == HISTORY_STORIES
    assert '>4 earlier ones in the past incidents</a>' in component
    spanish = (site.public / "es" / "history" / "index.html").read_text()
    assert ">4 más en " in spanish


def test_an_update_rewrites_only_what_it_touches(site: Project):
    old = [site.announce() for _ in range(6)]
    for incident in old:
        site.cli("resolve", incident, "--message", "Fixed.", "--apology", "Sorry.", "--yes")
    before = {p: p.stat().st_mtime_ns for p in site.public.rglob("incidents/*/index.html")}
    outcome = json.loads(site.cli("announce", "--title", "New", "--message", "M", "--yes", "--json").stdout)
    after = {p: p.stat().st_mtime_ns for p in site.public.rglob("incidents/*/index.html")}
    assert all(after[p] == before[p] for p in before), "no other statement page was rewritten"
    from broadcaster.api import show

    written = [d for d in show(outcome["incident_id"], settings=site.config).deliveries
               if d.channel == "website"]
    assert written[0].status == "sent"
    # statement, index, history, month, feed in 2 locales, and 10 JSON files: the same with 6 or 6,000.

    ((meta,),) = site.rows("SELECT meta FROM deliveries WHERE channel = 'website' ORDER BY id DESC LIMIT 1")
    assert len(json.loads(meta)["written"]) == 20


def test_site_build_rewrites_everything_from_the_ledger(site: Project):
    incidents = [site.announce() for _ in range(3)]
    everything = {p.relative_to(site.public): p.read_bytes() for p in site.public.rglob("*") if p.is_file()}
    for path in site.public.rglob("*"):
        if path.is_file():
            os.remove(path)
    result = site.cli("site", "build")
    assert result.exit_code == 0 and "written" in result.output
    rebuilt = {p.relative_to(site.public): p.read_bytes() for p in site.public.rglob("*") if p.is_file()}
    assert set(rebuilt) == set(everything)
    assert all((site.public / "incidents" / i / "index.html").exists() for i in incidents)
    again = json.loads(site.cli("site", "build", "--json").stdout)
    assert again["written"] == 0, "unchanged files are left alone"


def test_a_build_renders_only_what_changed(site: Project, monkeypatch: pytest.MonkeyPatch):
    """Statements and months carry the digest of what they were made from; a build renders
    only those whose inputs changed (an update, a template, the settings), or all with --full."""
    from broadcaster.render import Page

    incidents = [site.announce() for _ in range(3)]
    site.cli("update", incidents[0], "--message", "Still failing.", "--status", "identified", "--yes")
    rendered: list[str] = []
    real = Page.render
    monkeypatch.setattr(Page, "render",
                        lambda self, name, **kw: rendered.append(name) or real(self, name, **kw))

    def build(*options: str) -> dict:
        rendered.clear()
        result = site.cli("site", "build", *options, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert build()["written"] == 0 and sorted(set(rendered)) == ["component", "history", "index"], \
        "what the commands wrote is what a build would: nothing to render but the shared pages"
    statement = site.public / "es" / "incidents" / incidents[1] / "index.html"
    statement.unlink()
    assert build()["written"] == 1 and rendered.count("statement") == 2, "a lost page is made again"
    edited = statement.read_text().replace("<h1>", "<h1>EDITED ")
    statement.write_text(edited)
    assert build()["written"] == 0 and statement.read_text() == edited, "inputs unchanged: left alone"
    assert build("--full")["written"] == 1 and "EDITED" not in statement.read_text()
    assert rendered.count("statement") == 6 and rendered.count("month") == 2

    mine = site.root / "my-templates" / "website"
    mine.mkdir(parents=True)
    source = (Path(__file__).parents[1] / "templates" / "website" / "statement.html").read_text()
    (mine / "statement.html").write_text(source.replace("<article", "<!-- mine --><article"))
    site.write(SITE + '\n[templates]\ndir = "my-templates"\n')
    assert build()["written"] >= 6 and rendered.count("statement") == 6, "a template changed: all again"
    assert "<!-- mine -->" in statement.read_text()
    assert build()["written"] == 0 and "statement" not in rendered


def test_an_update_published_while_a_build_renders_is_not_undone(site: Project,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """A build renders every statement first, which takes long with years of history; an
    incident announced meanwhile writes the index listing it. The build's own index must list
    it too: the shared pages are rendered under the site lock from the ledger as it is then."""
    from broadcaster.site import build

    site.announce()
    for path in site.public.rglob("*.html"):
        path.unlink()  # so the build renders every statement again
    meanwhile: list[str] = []
    real = build._unchanged

    def announce_meanwhile(*args):
        if not meanwhile:  # while the build renders its first statement
            meanwhile.append(site.announce("--title", "Meanwhile: checkout down"))
        return real(*args)

    monkeypatch.setattr(build, "_unchanged", announce_meanwhile)
    result = site.cli("site", "build", "--json")
    assert result.exit_code == 0, result.output
    index = (site.public / "index.html").read_text(encoding="utf-8")
    assert meanwhile and "Meanwhile: checkout down" in index
    listed = json.loads((site.public / "api" / "v2" / "incidents.json").read_text(encoding="utf-8"))
    assert meanwhile[0] in {i["id"] for i in listed["incidents"]}


def test_site_build_with_nothing_published_says_so(site: Project):
    result = site.cli("site", "build", "--json")
    assert result.exit_code == 0 and "no published incidents" in json.loads(result.stdout)["note"]
    assert not site.public.exists()
