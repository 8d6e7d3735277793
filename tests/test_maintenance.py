"""Planned maintenance: announced everywhere, listed on the site and in the JSON, moved along by tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from conftest import EMAIL_SECTION, Project
from test_site import SITE

from broadcaster import api


def iso(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def schedule(project: Project, starts: int = 60, ends: int = 120, *extra: str) -> dict:
    result = project.cli("maintenance", "schedule", "--title", "Database upgrade", "--message",
                         "Payments may pause for a minute.", "--starts", iso(starts), "--ends", iso(ends),
                         "--component", "Payments API", "--yes", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def summary(project: Project) -> dict:
    return json.loads((project.public / "api" / "v2" / "summary.json").read_text())


def test_a_window_is_announced_listed_and_in_the_json(project: Project, inbox):
    project.write(SITE + EMAIL_SECTION.format(port=inbox.port, connections=1))
    (project.root / "s.csv").write_text("email\nana@example.com\n", encoding="utf-8")
    project.cli("subscribers", "import", str(project.root / "s.csv"))
    outcome = schedule(project)
    index = (project.public / "index.html").read_text()
    assert "Planned maintenance" in index and "Database upgrade" in index
    assert "All systems operational" in index, "a scheduled window is not an outage"
    (planned,) = summary(project)["scheduled_maintenances"]
    assert planned["status"] == "scheduled" and planned["impact"] == "maintenance"
    assert planned["scheduled_for"] and planned["scheduled_until"]
    assert summary(project)["incidents"] == []
    upcoming = json.loads((project.public / "api/v2/scheduled-maintenances/upcoming.json").read_text())
    assert [m["id"] for m in upcoming["scheduled_maintenances"]] == [outcome["incident_id"]]
    (email,) = inbox.messages
    assert email["Subject"].startswith("Planned maintenance") and "(Scheduled)" not in email["Subject"]
    assert "When:" in email.get_body(("plain",)).get_content()


def test_tick_starts_and_completes_it_on_every_channel(project: Project):
    project.write(SITE)
    incident = schedule(project)["incident_id"]
    assert api.tick(now=datetime.now(UTC) + timedelta(minutes=30), settings=project.config).maintenance == []
    started = api.tick(now=datetime.now(UTC) + timedelta(minutes=61), settings=project.config)
    assert started.maintenance == [f"{incident}: in_progress"]
    components = {c["name"]: c["status"] for c in summary(project)["components"]}
    assert components["Payments API"] == "under_maintenance"
    assert summary(project)["scheduled_maintenances"][0]["status"] == "in_progress"
    again = api.tick(now=datetime.now(UTC) + timedelta(minutes=62), settings=project.config)
    assert again.maintenance == [], "idempotent: nothing moves twice"
    done = api.tick(now=datetime.now(UTC) + timedelta(minutes=121), settings=project.config)
    assert done.maintenance == [f"{incident}: completed"]
    assert summary(project)["scheduled_maintenances"] == []
    assert all(c["status"] == "operational" for c in summary(project)["components"])
    statement = (project.public / "incidents" / incident / "index.html").read_text()
    assert "The planned maintenance is complete." in statement and "Maintenance completed" in statement
    shown = json.loads(project.cli("show", incident, "--json").stdout)
    assert [u["status"] for u in shown["updates"]] == ["scheduled", "in_progress", "completed"]


def test_a_tick_after_the_whole_window_does_both_steps(project: Project):
    project.write(SITE)
    incident = schedule(project)["incident_id"]
    report = api.tick(now=datetime.now(UTC) + timedelta(hours=5), settings=project.config)
    assert report.maintenance == [f"{incident}: in_progress", f"{incident}: completed"]


def test_bad_windows_are_refused(project: Project):
    project.write(SITE)
    for starts, ends, says in [("tomorrow", iso(60), "not an ISO date"), (iso(60), iso(30), "after --starts"),
                               (iso(-120), iso(-60), "in the past")]:
        result = project.cli("maintenance", "schedule", "--title", "T", "--message", "M", "--starts", starts,
                             "--ends", ends, "--yes")
        assert result.exit_code == 2 and says in result.output
    assert project.files() == {}


def test_incident_updates_cannot_use_maintenance_statuses(project: Project):
    incident = project.announce()
    result = project.cli("update", incident, "--status", "completed", "--message", "M", "--yes")
    assert result.exit_code == 2
