"""Uptime per component: each day's worst state and the percentage, from the incident history."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from conftest import BASE_SETTINGS, Project

from broadcaster.model import Impact, Incident, Kind, Status, Text, Update
from broadcaster.site.uptime import component_uptime

MADRID = ZoneInfo("Europe/Madrid")
BASE_WITHOUT_SITE = BASE_SETTINGS.replace("""[site]
base_url = "https://status.example.com"
output_dir = "public"
""", "")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def incident(*steps: tuple[datetime, Status, Impact], components: tuple[str, ...] = ("Payments API",),
             kind: Kind = Kind.ANNOUNCE, name: str = "i") -> Incident:
    updates = tuple(
        Update(f"{name}-{n}", name, n, kind if n == 1 else Kind.UPDATE, status, impact, components, (),
               {"en": Text("T", "M")}, at)
        for n, (at, status, impact) in enumerate(steps, start=1))
    return Incident(name, steps[0][0], updates)


def madrid(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=MADRID).astimezone(UTC)


def test_a_period_is_clipped_to_each_day_in_the_organisations_zone():
    # 23:00 on the 11th to 01:20 on the 12th, Madrid time: two days, 1 h and 1 h 20 min.
    major = incident((madrid(11, 23), Status.INVESTIGATING, Impact.MAJOR),
                     (madrid(12, 1, 20), Status.RESOLVED, Impact.MAJOR))
    (row,) = component_uptime(["Payments API"], [major], NOW, MADRID)
    assert len(row.days) == 90 and row.days[-1].day.isoformat() == "2026-11-23"
    by_day = {d.day.isoformat(): d for d in row.days}
    assert by_day["2026-11-11"].seconds == (("partial_outage", 3600.0),)
    assert by_day["2026-11-12"].seconds == (("partial_outage", 4800.0),)
    assert by_day["2026-11-13"].state == "operational"
    # A partial outage counts 30 % of its 2 h 20 min; the window is 89.5 days long so far.
    elapsed = (NOW - datetime(2026, 8, 26, tzinfo=MADRID)).total_seconds()
    assert row.percent == round(100 * (1 - 0.3 * 8400 / elapsed), 2)


def test_impact_changes_count_from_the_update_that_made_them_and_the_worst_wins_a_day():
    changing = incident((madrid(20, 10), Status.INVESTIGATING, Impact.MINOR),
                        (madrid(20, 11), Status.IDENTIFIED, Impact.CRITICAL),
                        (madrid(20, 11, 30), Status.RESOLVED, Impact.CRITICAL))
    (row,) = component_uptime(["payments api"], [changing], NOW, MADRID)  # names match case-blind
    day = next(d for d in row.days if d.day.isoformat() == "2026-11-20")
    assert day.state == "major_outage"
    assert day.seconds == (("major_outage", 1800.0), ("degraded_performance", 3600.0))


def test_overlapping_incidents_count_each_moment_once_in_the_worse_state():
    a = incident((madrid(18, 10), Status.INVESTIGATING, Impact.CRITICAL),
                 (madrid(18, 11), Status.RESOLVED, Impact.CRITICAL), name="a")
    b = incident((madrid(18, 10, 30), Status.INVESTIGATING, Impact.MINOR),
                 (madrid(18, 11, 30), Status.RESOLVED, Impact.MINOR), name="b")
    (row,) = component_uptime(["Payments API"], [a, b], NOW, MADRID)
    day = next(d for d in row.days if d.day.isoformat() == "2026-11-18")
    assert day.seconds == (("major_outage", 3600.0), ("degraded_performance", 1800.0))


def test_maintenance_shows_apart_and_is_not_downtime():
    window = incident((madrid(15, 1), Status.SCHEDULED, Impact.MINOR),
                      (madrid(15, 2), Status.IN_PROGRESS, Impact.MINOR),
                      (madrid(15, 4), Status.COMPLETED, Impact.MINOR), kind=Kind.MAINTENANCE)
    (row,) = component_uptime(["Payments API"], [window], NOW, MADRID)
    day = next(d for d in row.days if d.day.isoformat() == "2026-11-15")
    assert day.state == "under_maintenance" and day.seconds == (("under_maintenance", 7200.0),)
    assert row.percent == 100.0


def test_an_open_incident_counts_until_now_and_other_components_are_untouched():
    ongoing = incident((NOW - timedelta(hours=2), Status.INVESTIGATING, Impact.CRITICAL))
    payments, search = component_uptime(["Payments API", "Search"], [ongoing], NOW, MADRID)
    assert payments.days[-1].seconds == (("major_outage", 7200.0),)
    assert search.percent == 100.0 and {d.state for d in search.days} == {"operational"}
    old = incident((NOW - timedelta(days=200), Status.INVESTIGATING, Impact.CRITICAL),
                   (NOW - timedelta(days=199), Status.RESOLVED, Impact.CRITICAL), name="old")
    (untouched,) = component_uptime(["Payments API"], [old], NOW, MADRID)
    assert untouched.percent == 100.0


def test_the_index_shows_a_bar_per_component_with_named_days_and_the_json_has_the_figures(project: Project):
    project.write("""
        [[components]]
        name = "Payments API"
        names = { es = "API de pagos" }

        [[components]]
        name = "Search"
        """)
    done = project.cli("announce", "--title", "Card payments failing", "--message", "Failing.",
                       "--impact", "critical", "--component", "Payments API", "--yes")
    assert done.exit_code == 0, done.output
    index = (project.public / "index.html").read_text(encoding="utf-8")
    bars = re.findall(r'<ol class="uptime" aria-label="([^"]+)">(.*?)</ol>', index, re.S)
    assert [label for label, _ in bars] == ["Payments API: the last 90 days, one bar a day",
                                            "Search: the last 90 days, one bar a day"]
    payments = re.findall(r'<li class="day day-([a-z_]+)"( tabindex="0")?><span class="tip">([^<]+)</span>',
                          bars[0][1])
    assert len(payments) == 90
    state, focusable, label = payments[-1]
    assert state == "major_outage" and focusable, "today's bad day can be reached by keyboard"
    assert re.fullmatch(r"\d+ \w+: Major outage for under a minute", label), label
    assert payments[0][2].endswith(": no incidents") and not payments[0][1]
    spanish = (project.public / "es" / "index.html").read_text(encoding="utf-8")
    assert "API de pagos: los últimos 90 días" in spanish and "Interrupción grave durante" in spanish
    assert re.search(r"\d+,\d\d % disponible", spanish), "a decimal comma in Spanish"
    uptime = json.loads((project.public / "api" / "v2" / "uptime.json").read_text(encoding="utf-8"))
    assert uptime["days"] == 90 and [c["name"] for c in uptime["components"]] == ["Payments API", "Search"]
    assert uptime["components"][0]["days"][-1]["state"] == "major_outage"
    assert uptime["components"][1]["uptime_percent"] == 100.0
    components = json.loads((project.public / "api" / "v2" / "components.json").read_text(encoding="utf-8"))
    assert [c["uptime_percent_90d"] for c in components["components"]] == [
        uptime["components"][0]["uptime_percent"], 100.0]


def test_the_organisations_logo_and_accent_colour_are_on_every_page(project: Project):
    logo = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            '<rect width="10" height="10" fill="#7a1f5c"/></svg>')
    (project.root / "logo.svg").write_text(logo, encoding="utf-8")
    project.write("""
        [site]
        base_url = "https://status.example.com"
        output_dir = "public"
        logo = "logo.svg"
        accent_color = "#7A1F5C"
        """, base=BASE_WITHOUT_SITE)
    done = project.cli("announce", "--title", "Slow pages", "--message", "Slow.", "--yes")
    assert done.exit_code == 0, done.output
    for page in ("index.html", "es/index.html", "history/index.html"):
        html = (project.public / page).read_text(encoding="utf-8")
        assert '<img src="data:image/svg+xml;base64,' in html, "embedded: it shows when all else is down"
        assert "--accent: #7a1f5c;" in html
        assert re.search(r"--accent: #[0-9a-f]{6}; }\n}", html), "a lighter tint for the dark scheme"


def test_a_maintenance_timeline_is_blue_throughout(project: Project):
    done = project.cli("maintenance", "schedule", "--title", "Database upgrade", "--message", "Pauses.",
                       "--starts", "2030-01-10T02:00+01:00", "--ends", "2030-01-10T03:00+01:00",
                       "--yes", "--json")
    incident = json.loads(done.stdout)["incident_id"]
    assert project.cli("maintenance", "cancel", incident, "--message", "Not needed.", "--yes").exit_code == 0
    page = (project.public / "incidents" / incident / "index.html").read_text(encoding="utf-8")
    timeline = page.split('<ol class="timeline"', 1)[1]
    assert timeline.count('class="badge maintenance') == 2 and 'class="badge status-' not in timeline


@pytest.mark.parametrize(("setting", "said"), [
    ('accent_color = "#ffcc00"', "contrast of 1.5:1"),
    ('accent_color = "blue"', "accent_color"),
    ('logo = "missing.png"', "missing.png does not exist"),
    ('logo = "logo.gif"', "the logo must be"),
])
def test_an_unreadable_colour_or_a_bad_logo_is_refused_naming_the_key(project: Project, setting: str,
                                                                        said: str):
    (project.root / "logo.gif").write_bytes(b"GIF89a")
    project.write(f"""
        [site]
        base_url = "https://status.example.com"
        output_dir = "public"
        {setting}
        """, base=BASE_WITHOUT_SITE)
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes")
    assert result.exit_code == 2 and "site" in result.output and said in result.output, result.output
    assert not project.public.exists()
