"""The drill is the README's first command: it must pass on a machine with nothing set up."""

from __future__ import annotations

import json
import subprocess

from conftest import BIN


def test_the_drill_rehearses_a_whole_incident_and_serves_the_site(tmp_path):
    done = subprocess.run(
        [str(BIN / "broadcaster"), "drill", "--output", str(tmp_path / "drill")],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Status site served at http://127.0.0.1:" in out
    for step in ("announce", "update", "resolve"):
        assert f"── {step}" in out
    assert out.count("→ 200") == 3 and "Drill passed" in out
    assert out.count("2 recipients: 2 sent") == 3, "each step's table counts the mailing list"
    assert (tmp_path / "drill" / "site" / "es" / "index.html").exists()
    thread = out.split("X thread of @examplecorp", 1)[1].split("Facebook Page post", 1)[0]
    assert thread.count("┌ post") == 3 and thread.count("(reply)") == 2
    page = out.split("Facebook Page post with its comments", 1)[1].split("Mastodon thread", 1)[0]
    assert page.count("┌ post") == 1 and page.count("┌ comment") == 2
    assert "Resuelto:" in page, "the Page posts in Spanish, as the drill configures it"
    fedi = out.split("Mastodon thread of @examplecorp", 1)[1].split("Bluesky thread", 1)[0]
    assert fedi.count("┌ status") == 3 and fedi.count("(reply)") == 2
    sky = out.split("Bluesky thread of @", 1)[1].split("Slack thread in", 1)[0]
    assert sky.count("┌ post") == 3 and sky.count("(reply)") == 2
    slack = out.split("Slack thread in", 1)[1].split("Webhooks, as", 1)[0]
    assert slack.count("┌ message") == 3 and slack.count("(in the thread") == 2
    assert slack.count("also in the channel)") == 1, "the resolution is broadcast"
    hooks = out.split("Webhooks, as the receiver verified them", 1)[1].split("Emails, as", 1)[0]
    for event in ("incident.created", "incident.updated", "incident.resolved"):
        assert hooks.count(f": {event} ") == 2, "each of the two URLs, once"
    emails = out.split("Emails, as the SMTP server received them", 1)[1]
    assert emails.count("→ ana@example.com: ") == 3 and emails.count("→ bob@example.com: ") == 3
    assert "carla@" not in emails.split("\n", 1)[1], "carla follows only Search"
    assert emails.count("in reply to the first") == 4


def test_the_drill_sends_to_every_channel(tmp_path):
    done = subprocess.run(
        [str(BIN / "broadcaster"), "drill", "--json", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    channels = {d["channel"] for s in json.loads(done.stdout)["steps"] for d in s["deliveries"]}
    assert channels == {"website", "twitter", "facebook", "email", "mastodon", "webhook", "slack", "bluesky"}


def test_the_drill_reports_json(tmp_path):
    done = subprocess.run(
        [str(BIN / "broadcaster"), "drill", "--json", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    data = json.loads(done.stdout)
    assert all(d["status"] == "sent" for s in data["steps"] for d in s["deliveries"])
    assert data["steps"][2]["statement_url"].startswith(data["site_url"])
