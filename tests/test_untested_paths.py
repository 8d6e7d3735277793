"""Paths a person meets rarely but must work: publish_command, cancelling, times, plain text, locks."""

from __future__ import annotations

import fcntl
import json
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from broadcaster import api
from broadcaster.errors import InputError, LockTimeoutError
from broadcaster.ledger.sqlite import SQLiteLedger
from broadcaster.markup import to_plain
from broadcaster.next_update import parse_next_update
from broadcaster.settings import load_settings


def _with_publish_command(project, command: str) -> None:
    project.write(base=project.config.read_text().replace(
        'output_dir = "public"', f'output_dir = "public"\npublish_command = "{command}"'))


def test_publish_command_runs_in_the_site_folder_after_each_write(project):
    marker = project.root / "published.txt"
    hook = project.root / "hook.py"
    hook.write_text(f"import os\nopen({str(marker)!r}, 'a').write(os.getcwd() + '\\n')\n")
    _with_publish_command(project, f"{sys.executable} {hook}")
    incident = project.announce()
    project.cli("resolve", incident, "--message", "Fixed.", "--yes")
    assert marker.read_text().splitlines() == [str(project.public)] * 2


def test_a_failing_publish_command_is_retried_then_reported(project):
    _with_publish_command(project, "false")
    result = project.cli("announce", "--title", "T", "--message", "M", "--yes", "--json")
    assert result.exit_code == 3
    (website,) = json.loads(result.stdout)["deliveries"]
    assert website["status"] == "failed" and website["attempts"] == 3
    assert "publish_command exited 1" in website["error"]


def test_declining_at_the_prompt_records_and_sends_nothing(project):
    settings = load_settings(project.config)
    seen = []
    with pytest.raises(api.Cancelled):
        api.announce("T", "M", confirm=lambda preview: seen.append(preview) or False, settings=settings)
    assert len(seen) == 1 and seen[0].planned[0].channel == "website"
    assert project.files() == {}


MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)  # 14:00 in Madrid


@pytest.mark.parametrize(("given", "expected"), [
    ("30m", NOW + timedelta(minutes=30)),
    ("1h30m", NOW + timedelta(hours=1, minutes=30)),
    ("14:30", datetime(2026, 11, 22, 14, 30, tzinfo=MADRID)),
    ("09:00", datetime(2026, 11, 23, 9, 0, tzinfo=MADRID)),  # already past today: tomorrow
    ("2099-01-01T10:00", datetime(2099, 1, 1, 10, 0, tzinfo=MADRID)),
    (None, None),
])
def test_next_update_accepts_delays_times_and_dates(given, expected):
    assert parse_next_update(given, NOW, MADRID) == expected


def test_a_next_update_in_the_past_is_refused():
    with pytest.raises(InputError, match="in the past"):
        parse_next_update("2001-01-01T10:00", NOW, MADRID)


def test_markdown_becomes_readable_plain_text_for_social_posts():
    text = "We are **on it**: see [details](https://x.example/a).\n\n- one\n- two\n\n`code` stays"
    assert to_plain(text) == ("We are on it: see details (https://x.example/a).\n\n"
                              "• one\n• two\n\ncode stays")
    assert to_plain("<b>raw</b> html") == "<b>raw</b> html"  # shown as typed, never interpreted


def test_a_busy_incident_times_out_with_a_clear_error(tmp_path):
    ledger = SQLiteLedger(tmp_path / "state.db", lock_wait=0.2)
    (tmp_path / "locks").mkdir()
    with open(tmp_path / "locks" / "abcdefghjk.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another broadcaster holds the incident
        with pytest.raises(LockTimeoutError, match="still busy"), ledger.incident_lock("abcdefghjk"):
            pass
