"""`broadcaster tick`: one reminder per overdue promise, safe every minute and twice at once."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

from conftest import BASE_SETTINGS, BIN, EMAIL_SECTION, Project

from broadcaster import api

STAFF = '[organization]\nname = "Example Corp"\ntimezone = "Europe/Madrid"\nlocales = ["en", "es"]\n' \
        'staff = ["oncall@example.com", "comms@example.com"]\n'


def configure(project: Project, inbox, staff: bool = True) -> None:
    organization = BASE_SETTINGS.split("[site]")[0]
    base = BASE_SETTINGS.replace(organization, "\n" + STAFF + "\n") if staff else BASE_SETTINGS
    project.write(EMAIL_SECTION.format(port=inbox.port, connections=1), base=base)


def later(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_an_overdue_promise_reminds_staff_once(project: Project, inbox):
    configure(project, inbox)
    incident = project.announce("--next-update", "30m")
    assert api.tick(now=later(10), settings=project.config).reminded == []
    report = api.tick(now=later(31), settings=project.config)
    assert report.reminded == [f"{incident}-1"] and report.exit_code == 0
    (reminder,) = inbox.messages
    assert sorted(reminder.envelope_to) == ["comms@example.com", "oncall@example.com"]
    assert incident in reminder["Subject"] and reminder["Auto-Submitted"] == "auto-generated"
    assert f"broadcaster update {incident}" in reminder.get_content()
    assert api.tick(now=later(45), settings=project.config).reminded == [], "once per promise"
    assert len(inbox.messages) == 1


def test_a_kept_promise_needs_no_reminder_and_a_new_promise_gets_its_own(project: Project, inbox):
    configure(project, inbox)
    incident = project.announce("--next-update", "30m")
    result = project.cli("update", incident, "--status", "identified", "--message", "Found it.", "--yes")
    assert result.exit_code == 0
    assert api.tick(now=later(60), settings=project.config).reminded == []
    project.cli("update", incident, "--status", "monitoring", "--message", "Fixed.", "--next-update", "1h",
                "--yes")
    assert api.tick(now=later(61), settings=project.config).reminded == [f"{incident}-3"]


def test_resolved_incidents_are_not_chased(project: Project, inbox):
    configure(project, inbox)
    incident = project.announce("--next-update", "30m")
    assert project.cli("resolve", incident, "--message", "Fixed.", "--yes").exit_code == 0
    assert api.tick(now=later(31), settings=project.config).reminded == []


def test_without_staff_the_problem_is_reported(project: Project, inbox):
    configure(project, inbox, staff=False)
    project.announce("--next-update", "30m")
    report = api.tick(now=later(31), settings=project.config)
    assert report.exit_code == 3 and "staff is empty" in report.problems[0]


def test_a_failed_reminder_is_tried_again_at_the_next_tick(project: Project, inbox):
    configure(project, inbox)
    incident = project.announce("--next-update", "30m")
    inbox.refuse["oncall@example.com"] = "550 5.1.1 no such user"
    inbox.refuse["comms@example.com"] = "550 5.1.1 no such user"
    failed = api.tick(now=later(31), settings=project.config)
    assert failed.exit_code == 3 and "reminder not sent" in failed.problems[0]
    inbox.refuse.clear()
    assert api.tick(now=later(32), settings=project.config).reminded == [f"{incident}-1"]


def test_two_ticks_at_once_send_one_reminder(project: Project, inbox):
    configure(project, inbox)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    api.announce("Payments down", "Card payments fail.", next_update=soon, settings=project.config)
    time.sleep(2.5)
    ticks = [subprocess.Popen([str(BIN / "broadcaster"), "--config", str(project.config), "tick", "--json"],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    reports = [json.loads(t.communicate(timeout=60)[0]) for t in ticks]
    assert sorted(len(r["reminded"]) for r in reports) == [0, 1]
    assert len(inbox.messages) == 1


def test_reminders_without_an_email_section_say_what_to_add(project: Project):
    project.write(base=BASE_SETTINGS.replace(BASE_SETTINGS.split("[site]")[0], "\n" + STAFF + "\n"))
    project.announce("--next-update", "30m")
    report = api.tick(now=later(31), settings=project.config)
    assert report.exit_code == 3 and "add a [channels.email] section" in report.problems[0]
    assert api.tick(now=later(32), settings=project.config).exit_code == 3, "not claimed: tried again"


def test_at_midnight_the_uptime_bars_move_on_even_when_nothing_was_published(project: Project):
    """A quiet week writes nothing, so without tick the bars would still end on the day of the
    last write and call it today. At its first run of a new day in the organisation's zone,
    tick rewrites the shared pages, once."""
    import re
    from datetime import date, time
    from zoneinfo import ZoneInfo

    project.write('[[components]]\nname = "Payments API"\nnames = { es = "API de pagos" }\n')
    incident = project.announce("--component", "Payments API", "--impact", "critical")
    uptime = project.public / "api" / "v2" / "uptime.json"
    today = date.fromisoformat(json.loads(uptime.read_text(encoding="utf-8"))["to"])
    assert api.tick(settings=project.config).site is None, "the pages are today's already"

    madrid = ZoneInfo("Europe/Madrid")
    tomorrow = today + timedelta(days=1)
    after_midnight = datetime.combine(tomorrow, time(0, 30), madrid).astimezone(UTC)
    report = api.tick(now=after_midnight, settings=project.config)
    assert report.exit_code == 0 and report.problems == []
    assert report.site and f"from {today} to {tomorrow}" in report.site
    shown = json.loads(uptime.read_text(encoding="utf-8"))
    assert shown["to"] == tomorrow.isoformat()
    last = shown["components"][0]["days"][-1]
    assert last["date"] == tomorrow.isoformat() and last["state"] == "major_outage", \
        "the incident still open carries on into the new day"
    for page, says in ((project.public / "index.html", "Major outage for 30 min"),
                       (project.public / "es" / "index.html", "Interrupción grave durante 30 min")):
        cells = re.findall(r'<span class="tip">([^<]+)</span>', page.read_text(encoding="utf-8"))
        assert cells[-1].startswith(f"{tomorrow.day} ") and cells[-1].endswith(says), cells[-1]
    assert incident in (project.public / "index.html").read_text(encoding="utf-8")
    assert api.tick(now=after_midnight + timedelta(minutes=1), settings=project.config).site is None, \
        "once a day"
    done = subprocess.run([str(BIN / "broadcaster"), "--config", str(project.config), "tick", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "site" in json.loads(done.stdout), done.stderr


def test_tick_before_the_first_incident_writes_no_site(project: Project):
    report = api.tick(settings=project.config)
    assert report.site is None and report.exit_code == 0
    assert not (project.public / "index.html").exists()
