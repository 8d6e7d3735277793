"""Outbound webhooks: signed with standardwebhooks, received and verified by a real HTTP server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Commands, Project

from broadcaster.channels.testing import check_channel
from broadcaster.channels.webhook import WebhookChannel
from broadcaster.standins.server import Fault
from broadcaster.standins.webhook_receiver import DRILL_SECRET, WebhookReceiver

ANNOUNCE = ("announce", "--title", "Card payments failing", "--message",
            "Some card payments fail at checkout.", "--guidance", "Pay by bank transfer for now.",
            "--component", "Payments API", "--channel", "webhook")


@dataclass
class Hooks(Commands):
    receiver: WebhookReceiver

    def configure(self, *paths: str, extra: str = "") -> None:
        urls = ", ".join(f'"{self.receiver.url}{p}"' for p in paths or ("/a", "/b?token=s3cr3t-query"))
        self.project.write(f"""
            [channels.webhook]
            enabled = true
            urls = [{urls}]
            {extra}
            """)



@pytest.fixture
def hooks(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("BROADCASTER_WEBHOOK_SECRET", DRILL_SECRET)
        h = Hooks(project, receiver)
        h.configure()
        yield h
        assert receiver.errors == [], "a stand-in handler crashed"


def webhooks(outcome: dict) -> list[dict]:
    return [d for d in outcome["deliveries"] if d["channel"] == "webhook"]


def test_each_url_gets_each_update_signed_and_is_a_delivery_of_its_own(hooks: Hooks):
    first = hooks.run(*ANNOUNCE)
    assert first["exit_code"] == 0, first
    incident = first["incident_id"]
    hooks.run("update", incident, "--status", "identified", "--message", "A certificate expired.",
              "--channel", "webhook")
    last = hooks.run("resolve", incident, "--message", "Renewed.", "--apology", "We are sorry.",
                     "--channel", "webhook")
    assert last["exit_code"] == 0, last
    for path in ("/a", "/b"):
        events = hooks.receiver.at(path)  # verified by standardwebhooks on the receiving side
        assert [e.body["type"] for e in events] == ["incident.created", "incident.updated",
                                                    "incident.resolved"]
        assert all(e.body["data"]["statement_url"] == first["statement_url"] for e in events)
    created = hooks.receiver.at("/a")[0].body["data"]
    assert created["incident"]["id"] == incident and created["incident"]["status"] == "investigating"
    assert created["incident"]["shortlink"] == first["statement_url"]
    assert created["incident"]["components"][0]["name"] == "Payments API"
    assert created["message"].startswith("Card payments failing\n\nSome card payments fail at checkout.")
    assert "What you can do now: Pay by bank transfer for now." in created["message"]
    resolved = hooks.receiver.at("/b")[-1].body["data"]
    assert resolved["incident"]["status"] == "resolved" and "We are sorry." in resolved["message"]
    # One delivery per URL, recorded without the query string (it may hold a receiver's token).
    recipients = sorted(d["recipient"] for d in webhooks(first))
    assert recipients == [f"{hooks.receiver.url}/a", f"{hooks.receiver.url}/b"]
    assert "s3cr3t-query" not in json.dumps(hooks.project.rows("SELECT * FROM deliveries"))
    ids = {e.id for e in hooks.receiver.events}
    assert len(ids) == 6, "a webhook-id per delivery"


def test_one_receiver_down_is_retried_and_reported_alone(hooks: Hooks):
    hooks.receiver.fail("receive", WebhookReceiver.busy(503), WebhookReceiver.busy(503),
                        WebhookReceiver.busy(503))
    outcome = hooks.run(*ANNOUNCE)
    states = {d["recipient"].rsplit("/", 1)[1]: d["status"] for d in webhooks(outcome)}
    assert sorted(states.values()) == ["failed", "sent"], states
    assert outcome["exit_code"] == 3
    failed = next(d for d in webhooks(outcome) if d["status"] == "failed")
    assert "503" in failed["error"] and failed["attempts"] == 3
    table = hooks.project.cli("show", outcome["incident_id"]).output
    assert f"webhook → {failed['recipient']}" in table
    done = hooks.project.cli("retry", "--json")
    assert done.exit_code == 0, done.output
    assert len(hooks.receiver.at("/a")) == 1 and len(hooks.receiver.at("/b")) == 1


def test_retry_after_is_honoured_against_the_time_the_receiver_named(hooks: Hooks):
    hooks.configure("/only")
    hooks.receiver.fail("receive", WebhookReceiver.busy(429, retry_after="2"))
    outcome = hooks.run(*ANNOUNCE)
    assert outcome["exit_code"] == 0, outcome
    first, second = hooks.receiver.calls("receive")
    assert first.status == 429 and second.status == 202
    assert second.wall >= first.wall + 2 - 0.01, "came back before the Retry-After the receiver sent"


def test_a_lost_answer_is_sent_again_with_the_same_webhook_id_and_acted_on_once(hooks: Hooks):
    hooks.configure("/only")
    hooks.receiver.fail("receive", Fault.lost_answer())
    outcome = hooks.run(*ANNOUNCE)
    assert outcome["exit_code"] == 0, outcome
    assert [c.status for c in hooks.receiver.calls("receive")] == ["202, dropped", 200]
    assert len(hooks.receiver.at("/only")) == 1, "the receiver de-duplicated by webhook-id"


def test_a_wrong_secret_is_refused_by_the_receiver_and_said_plainly(hooks: Hooks,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BROADCASTER_WEBHOOK_SECRET", "whsec_" + "QUJD" * 10)
    outcome = hooks.run(*ANNOUNCE)
    errors = [d["error"] for d in webhooks(outcome)]
    assert outcome["exit_code"] == 3 and all("401" in e and "BROADCASTER_WEBHOOK_SECRET" in e for e in errors)
    assert len(hooks.receiver.calls("receive")) == 2, "a permanent refusal is not retried"
    assert "QUJDQUJD" not in json.dumps(outcome)


@pytest.mark.parametrize("secret", ["not-a-secret", "whsec_%%%", "whsec_c2hvcnQ="])
def test_a_malformed_secret_is_refused_before_anything_is_sent(hooks: Hooks, monkeypatch: pytest.MonkeyPatch,
                                                               secret: str):
    monkeypatch.setenv("BROADCASTER_WEBHOOK_SECRET", secret)
    result = hooks.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2, result.output
    assert "not a Standard Webhooks secret" in result.output and secret not in result.output
    assert hooks.receiver.seen == [] and hooks.project.rows("SELECT * FROM deliveries") == []


def test_redirects_and_gone_are_permanent_and_say_what_to_change(hooks: Hooks):
    hooks.receiver.fail("receive", Fault(status=308, headers={"Location": "https://new.example/hook?k=1"}),
                        Fault(status=410, body={"error": "gone"}))
    outcome = hooks.run(*ANNOUNCE)
    redirected, gone = sorted((d["error"] for d in webhooks(outcome)), key=lambda e: "410" in e)
    assert "410 Gone" in gone and "remove it from urls" in gone
    assert "redirects (308) to https://new.example/hook" in redirected and "k=1" not in redirected
    assert len(hooks.receiver.calls("receive")) == 2, "neither is retried"


@pytest.mark.parametrize(("urls", "said"), [
    ('["ftp://example.com/x"]', "urls[1]"),
    ('["https://h.example/x?a=1", "https://h.example/x?a=2"]', "differ only in their query string"),
    ("[]", "urls is required"),
])
def test_bad_urls_are_refused_naming_the_entry(hooks: Hooks, urls: str, said: str):
    hooks.project.write(f"""
        [channels.webhook]
        enabled = true
        urls = {urls}
        """)
    result = hooks.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2 and said in result.output and "channels.webhook" in result.output
    assert hooks.receiver.seen == []


def test_maintenance_events_follow_its_status(hooks: Hooks):
    hooks.configure("/only")
    scheduled = hooks.project.cli("maintenance", "schedule", "--title", "Database upgrade", "--message",
                                  "Checkout pauses.", "--starts", "2030-01-10T02:00+01:00", "--ends",
                                  "2030-01-10T03:00+01:00", "--yes", "--json")
    assert scheduled.exit_code == 0, scheduled.output
    incident = json.loads(scheduled.stdout)["incident_id"]
    cancelled = hooks.project.cli("maintenance", "cancel", incident, "--message", "Not needed.", "--yes")
    assert cancelled.exit_code == 0, cancelled.output
    kinds = [e.body["type"] for e in hooks.receiver.at("/only")]
    assert kinds == ["maintenance.scheduled", "maintenance.cancelled"]
    assert hooks.receiver.at("/only")[0].body["data"]["incident"]["impact"] == "maintenance"


def test_the_channel_keeps_the_channel_contract(hooks: Hooks):
    check_channel(WebhookChannel, settings={"urls": [f"{hooks.receiver.url}/contract"]},
                  environ={"BROADCASTER_WEBHOOK_SECRET": DRILL_SECRET}, send=True)
    assert [e.body["type"] for e in hooks.receiver.at("/contract")] == [
        "incident.created", "incident.updated", "incident.resolved", "incident.postmortem"]
    postmortem = hooks.receiver.at("/contract")[-1].body["data"]
    assert postmortem["incident"]["postmortem_body"].startswith("## Summary")
    assert postmortem["message"].startswith("Postmortem: Card payments failing")


def test_the_dry_run_shows_the_message_and_where_it_goes_without_the_query(hooks: Hooks):
    outcome = hooks.run(*ANNOUNCE, "--dry-run")
    (planned,) = [p for p in outcome["preview"] if p["channel"] == "webhook"]
    assert planned["destinations"] == [f"{hooks.receiver.url}/a", f"{hooks.receiver.url}/b"]
    assert planned["text"].startswith("Card payments failing") and "s3cr3t" not in json.dumps(outcome)
    text = hooks.project.cli(*ANNOUNCE, "--dry-run").output
    assert "webhook (en) · " in text and f"to {hooks.receiver.url}/a, {hooks.receiver.url}/b" in text
    assert hooks.receiver.seen == []


def test_a_url_taken_out_of_the_settings_before_a_retry_is_failed_saying_so(hooks: Hooks):
    hooks.receiver.fail("receive", WebhookReceiver.busy(503), WebhookReceiver.busy(503),
                        WebhookReceiver.busy(503))  # /a, tried three times
    outcome = hooks.run(*ANNOUNCE)
    assert outcome["exit_code"] == 3
    hooks.configure("/b?token=s3cr3t-query")
    done = json.loads(hooks.project.cli("retry", outcome["incident_id"], "--json").stdout)
    (left,) = [d for d in webhooks(done) if d["status"] != "sent"]
    assert left["recipient"].endswith("/a") and "no longer in [channels.webhook] urls" in left["error"]
    assert hooks.receiver.at("/a") == [] and len(hooks.receiver.at("/b")) == 1
