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
    for step in ("announce", "update", "resolve", "postmortem"):
        assert f"── {step}" in out
    assert out.count("→ 200") == 4 and "Drill passed" in out
    assert out.count("2 recipients: 2 sent") == 4, "each step's table counts the mailing list"
    assert (tmp_path / "drill" / "site" / "es" / "index.html").exists()
    thread = out.split("X thread of @examplecorp", 1)[1].split("Facebook Page post", 1)[0]
    assert thread.count("┌ post") == 4 and thread.count("(reply)") == 3
    assert "│ Postmortem: Card payments failing" in thread and "│ From 09:58 to 10:42" in thread
    page = out.split("Facebook Page post with its comments", 1)[1].split("Mastodon thread", 1)[0]
    assert page.count("┌ post") == 1 and page.count("┌ comment") == 3
    assert "Resuelto:" in page, "the Page posts in Spanish, as the drill configures it"
    assert "Análisis del incidente: Fallan los pagos" in page and "│ De 09:58 a 10:42" in page
    fedi = out.split("Mastodon thread of @examplecorp", 1)[1].split("Bluesky thread", 1)[0]
    assert fedi.count("┌ status") == 4 and fedi.count("(reply)") == 3
    sky = out.split("Bluesky thread of @", 1)[1].split("Slack thread in", 1)[0]
    assert sky.count("┌ post") == 4 and sky.count("(reply)") == 3
    slack = out.split("Slack thread in", 1)[1].split("Webhooks, as", 1)[0]
    assert slack.count("┌ message") == 4 and slack.count("(in the thread") == 3
    assert slack.count("also in the channel)") == 2, "the resolution and the postmortem are broadcast"
    hooks = out.split("Webhooks, as the receiver verified them", 1)[1].split("Emails, as", 1)[0]
    for event in ("incident.created", "incident.updated", "incident.resolved", "incident.postmortem"):
        assert hooks.count(f": {event} ") == 2, "each of the two URLs, once"
    emails = out.split("Emails, as the SMTP server received them", 1)[1]
    assert emails.count("→ ana@example.com: ") == 4 and emails.count("→ bob@example.com: ") == 4
    assert "→ ana@example.com: Análisis del incidente · " in emails
    assert "carla@" not in emails.split("\n", 1)[1], "carla follows only Search"
    assert emails.count("in reply to the first") == 6
    # And each email is kept whole, to be read in a mail reader.
    kept = sorted((tmp_path / "drill" / "emails").iterdir())
    assert len(kept) == 8 and f"{tmp_path / 'drill' / 'emails'}/" in out
    assert {p.name[3:] for p in kept[:2]} == {"ana@example.com.eml", "bob@example.com.eml"}
    from email import message_from_bytes, policy

    to_bob = [m for m in (message_from_bytes(p.read_bytes(), policy=policy.default) for p in kept[-2:])
              if m["To"] == "bob@example.com"]
    assert len(to_bob) == 1 and to_bob[0]["Subject"].startswith("Postmortem · ")
    body = to_bob[0].get_body(("plain",)).get_content()
    assert "What we are changing" in body and "/incidents/" in body


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
