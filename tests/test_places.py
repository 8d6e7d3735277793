"""Where customers are: nested regions, postcodes, targeting, maintenance as its own thing, and
every word in the reader's language. Through the real pipeline, a real SMTP server and the
X stand-in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import EMAIL_SECTION, Inbox, Project, Social, status_of

from broadcaster.places import Places, touches_components
from broadcaster.settings import RegionSettings

TELECOM = """
[[components]]
name = "Fibre"
group = "Home internet"
names = { es = "Fibra" }

[[components]]
name = "ADSL"
group = "Home internet"

[[components]]
name = "TV"
names = { es = "Televisión" }

[[groups]]
name = "Home internet"
names = { es = "Internet en casa" }

[[regions]]
name = "Madrid region"
postcodes = ["28"]
names = { es = "Comunidad de Madrid" }

[[regions]]
name = "Madrid city"
postcodes = ["280"]
names = { es = "Madrid capital" }

[[regions]]
name = "Barcelona"
postcodes = ["08"]
"""

PLACES = Places.of([RegionSettings(name="Madrid region", postcodes=["28"]),
                    RegionSettings(name="Madrid city", postcodes=["280"]),
                    RegionSettings(name="Barcelona", postcodes=["08"])])


def iso(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


# -- the rules -----------------------------------------------------------------------------------


def test_a_postcode_lies_in_every_region_whose_prefix_it_starts_with():
    assert PLACES.regions_of("28 013") == ["madrid region", "madrid city"]
    assert PLACES.regions_of("28500") == ["madrid region"]
    assert PLACES.regions_of("99999") == []


@pytest.mark.parametrize(("incident", "follower", "concerned"), [
    (["Madrid region"], ["Madrid city"], True),   # a region-wide outage reaches the city
    (["Madrid city"], ["Madrid region"], True),   # the city is part of the region
    (["Madrid city"], ["Barcelona"], False),
    ([], ["Barcelona"], True),                    # no region: everywhere
])
def test_regions_concern_those_that_contain_them_or_that_they_contain(incident, follower, concerned):
    assert PLACES.touches(incident, follower) is concerned


def test_a_followed_postcode_is_concerned_by_every_region_it_lies_in():
    assert PLACES.touches(["Madrid region"], postcodes=["28013"])
    assert PLACES.touches(["Madrid city"], postcodes=["28013"])
    assert not PLACES.touches(["Madrid city"], postcodes=["28500"])  # in the region, not the city
    assert not PLACES.touches(["Barcelona"], postcodes=["28013"])


def test_components_and_places_both_have_to_match():
    assert touches_components(["Fibre"], ["fibre"]) and touches_components([], ["ADSL"])
    assert not touches_components(["TV"], ["ADSL"])


# -- targeting through the pipeline ---------------------------------------------------------------


def emailed(inbox: Inbox) -> list[str]:
    found = sorted(m.envelope_to[0] for m in inbox.messages)
    inbox.messages.clear()
    return found


def test_subscribers_get_what_touches_their_service_in_their_place(project: Project, inbox: Inbox):
    project.write(TELECOM + EMAIL_SECTION.format(port=inbox.port, connections=1))
    (project.root / "s.csv").write_text(
        "email,locale,components,regions,postcodes\n"
        "adsl-city@example.com,en,ADSL,Madrid city,\n"      # the customer: ADSL in Madrid
        "fibre-28013@example.com,es,Fibre,,28013\n"          # follows a postcode, not a region
        "region@example.com,en,,Madrid region,\n"
        "bcn@example.com,en,,Barcelona,\n", encoding="utf-8")
    assert project.cli("subscribers", "import", str(project.root / "s.csv")).exit_code == 0
    project.announce("--component", "ADSL", "--region", "Madrid region")
    assert emailed(inbox) == ["adsl-city@example.com", "region@example.com"]
    project.announce("--component", "TV", "--region", "Madrid city")
    assert emailed(inbox) == ["region@example.com"], "TV is not the ADSL customer's service"
    project.announce("--component", "Fibre", "--region", "Madrid city")
    assert emailed(inbox) == ["fibre-28013@example.com", "region@example.com"]
    project.announce("--component", "Fibre")  # no region: everywhere
    assert emailed(inbox) == ["bcn@example.com", "fibre-28013@example.com", "region@example.com"]


def test_a_bad_postcode_is_refused_by_line(project: Project):
    (project.root / "s.csv").write_text("email,locale,components,regions,postcodes\n"
                                        "ana@example.com,en,,,28 013\nbob@example.com,en,,,#!\n",
                                        encoding="utf-8")
    result = project.cli("subscribers", "import", str(project.root / "s.csv"))
    assert result.exit_code == 2 and "s.csv:3" in result.output and "postcode" in result.output
    listed = json.loads(project.cli("subscribers", "list", "--json").stdout)
    assert [(s["email"], s["postcodes"]) for s in listed] == [("ana@example.com", ["28013"])]


# -- every word in the reader's language -----------------------------------------------------------


def test_spanish_pages_and_emails_use_the_translated_names(project: Project, inbox: Inbox):
    project.write(TELECOM + EMAIL_SECTION.format(port=inbox.port, connections=1))
    project.cli("subscribers", "add", "ana@example.com", "--locale", "es")
    incident = project.announce("--component", "Fibre", "--region", "Madrid city", "--title-es", "Corte",
                                "--message-es", "Sin fibra.", "--next-update", "14:30")
    spanish = (project.public / "es" / "incidents" / incident / "index.html").read_text()
    # What a reader sees: the subscription form's values are the configured names, read by nobody.
    spanish = re.sub(r' value="[^"]*"', "", spanish)
    assert "Fibra" in spanish and "Madrid capital" in spanish and "Madrid city" not in spanish
    index = (project.public / "es" / "index.html").read_text()
    assert "Internet en casa" in index and "Televisión" in index
    english = (project.public / "incidents" / incident / "index.html").read_text()
    assert "Fibre" in english and "Fibra" not in english
    (mail,) = inbox.messages
    assert mail["Subject"] == "Investigando · Fibra · Madrid capital: Corte"
    body = mail.get_body(("plain",)).get_content()
    assert "Servicios afectados: Fibra" in body and "14:30 CET" in body
    summary = json.loads((project.public / "api" / "v2" / "summary.json").read_text())
    assert [c["name"] for c in summary["components"] if c["name"] in ("Fibre", "Fibra")] == ["Fibre"], \
        "the JSON keeps the canonical names"
    feed = (project.public / "es" / "feed.atom").read_text()
    assert "Example Corp · Estado del servicio" in feed and "· status" not in feed
    history = (project.public / "es" / "history" / "index.html").read_text()

    months = re.findall(r'history/\d{4}-\d{2}/">([^<]+)</a>', history)
    assert months and all(m[0].isupper() and " de 20" in m for m in months), months
    assert "comunicado oficial. Las publicaciones y correos sobre esta incidencia" not in history


def test_times_name_the_zone_the_same_in_every_language_and_can_be_relabelled(project: Project):
    incident = project.announce("--next-update", "14:30", "--message-es", "Fallan.")
    english = (project.public / "incidents" / incident / "index.html").read_text()
    spanish = (project.public / "es" / "incidents" / incident / "index.html").read_text()
    assert "14:30 CET" in english and "14:30 CET" in spanish and "+0100" not in english
    config = project.config.read_text().replace(
        'timezone = "Europe/Madrid"', 'timezone = "Europe/Madrid"\ntimezone_label = "hora peninsular"')
    project.config.write_text(config, encoding="utf-8")
    assert project.cli("site", "build").exit_code == 0
    assert "14:30 hora peninsular" in (project.public / "incidents" / incident / "index.html").read_text()
    listed = project.cli("list").stdout
    assert "hora peninsular" in listed, "the CLI speaks the organisation's zone too"


def test_the_unsubscribe_page_speaks_the_subscribers_language_with_the_sites_look(project: Project):
    import re

    import requests
    from test_server import start

    project.write(EMAIL_SECTION.format(port=1, connections=1))
    project.cli("subscribers", "add", "ana@example.com", "--locale", "es")
    ((token,),) = project.rows("SELECT token FROM subscribers")
    for server in start(project):
        page = requests.get(f"{server.url}/unsubscribe/{token}", timeout=10)
        assert 'lang="es"' in page.text
        assert "¿Dejar de enviar avisos de estado a ana@example.com?" in page.text
        assert "Example Corp · Estado del servicio" in page.text and "<style>" in page.text
        form = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        done = requests.post(server.url + form, data={"from": "page"}, timeout=10)
        assert done.status_code == 200 and "No recibirá más avisos de estado de Example Corp." in done.text
        one_click = requests.post(f"{server.url}/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
                                  timeout=10)
        assert one_click.status_code == 200 and one_click.headers["content-type"].startswith("text/plain")
        unknown = requests.get(f"{server.url}/unsubscribe/{'x' * 32}", timeout=10)
        assert unknown.status_code == 404 and "not valid" in unknown.text


# -- maintenance is its own thing --------------------------------------------------------------------


def schedule(project: Project, starts: int = 60, ends: int = 180) -> str:
    result = project.cli("maintenance", "schedule", "--title", "Network works", "--message", "New kit.",
                         "--starts", iso(starts), "--ends", iso(ends), "--component", "Fibre",
                         "--guidance", "Keep mobile data at hand.", "--yes", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["incident_id"]


def test_cancel_and_reschedule_reach_every_channel_and_the_site(social: Social, inbox: Inbox):
    social.configure(top="", twitter="", facebook="")
    social.project.write(social.project.config.read_text() + TELECOM
                         + EMAIL_SECTION.format(port=inbox.port, connections=1), base="")
    social.project.cli("subscribers", "add", "ana@example.com")
    incident = schedule(social.project)
    moved = social.run("maintenance", "reschedule", incident, "--starts", iso(24 * 60),
                       "--ends", iso(24 * 60 + 120))
    assert moved["exit_code"] == 0, moved
    assert {d["channel"]: d["status"] for d in moved["deliveries"] if "recipient" not in d} == {
        "website": "sent", "twitter": "sent", "facebook": "sent", "email": "sent"}
    assert status_of(moved, "email")["status"] == "sent"
    tweet = social.x.posted()[-1]
    assert "moved to a new time" in tweet.text and "When:" in tweet.text
    assert tweet.in_reply_to == social.x.posted()[0].id, "in the maintenance's thread"
    planned = json.loads((social.project.public / "api/v2/scheduled-maintenances/upcoming.json").read_text())
    (entry,) = planned["scheduled_maintenances"]
    new_start = datetime.fromisoformat(entry["scheduled_for"])
    assert abs(new_start - datetime.fromisoformat(iso(24 * 60))) < timedelta(minutes=2), "the new window"
    cancelled = social.run("maintenance", "cancel", incident, "--message", "Not needed after all.")
    assert cancelled["exit_code"] == 0, cancelled
    assert "Maintenance cancelled" in social.x.posted()[-1].text
    assert [c.message.split(":")[0] for c in social.graph.feed()[0].comments][-1] == "Maintenance cancelled"
    assert [m["Subject"].split(":")[0] for m in inbox.messages] == [
        "Planned maintenance · Fibre", "Planned maintenance · Fibre", "Maintenance cancelled · Fibre"]
    summary = json.loads((social.project.public / "api/v2/summary.json").read_text())
    assert summary["scheduled_maintenances"] == []
    index = (social.project.public / "index.html").read_text()
    assert "Network works" not in index.split("Recent history")[0]
    statement = (social.project.public / "incidents" / incident / "index.html").read_text()
    assert "Maintenance cancelled" in statement and "Keep mobile data" not in statement
    refused = social.project.cli("maintenance", "cancel", incident, "--yes")
    assert refused.exit_code == 2 and "cancelled" in refused.output


def test_a_running_window_turns_the_banner_blue_not_red(project: Project):
    from broadcaster import api

    project.write(TELECOM)
    schedule(project, starts=-5, ends=120)
    api.tick(settings=project.config)
    index = (project.public / "index.html").read_text()
    assert 'class="overall maintenance"' in index and "Planned maintenance under way" in index
    status = json.loads((project.public / "api/v2/status.json").read_text())["status"]
    assert status == {"indicator": "maintenance", "description": "Service Under Maintenance"}
    statement = (project.public / "incidents").iterdir().__next__() / "index.html"
    text = statement.read_text()
    assert "Maintenance under way" in text and "Impact" not in text and "Keep mobile data at hand." in text


def test_a_started_window_can_only_move_its_end(project: Project):
    project.write(TELECOM)
    from broadcaster import api

    incident = schedule(project, starts=-5, ends=60)
    api.tick(settings=project.config)
    result = project.cli("maintenance", "reschedule", incident, "--starts", iso(30), "--ends", iso(90),
                         "--yes")
    assert result.exit_code == 2 and "only --ends" in result.output
