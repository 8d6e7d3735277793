"""The Slack channel: real slack-sdk over HTTP against the Slack Web API stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Commands, Project, status_of

from broadcaster.channels.slack import SlackChannel
from broadcaster.channels.testing import check_channel
from broadcaster.standins.server import Fault
from broadcaster.standins.slack_api import DRILL_BOT_TOKEN, DRILL_CHANNEL, SlackStandIn

ANNOUNCE = ("announce", "--title", "Card payments failing", "--message",
            "Some card payments fail at checkout <b> & more.", "--guidance", "Pay by bank transfer for now.",
            "--component", "Payments API", "--channel", "slack")


@dataclass
class Workspace(Commands):
    slack: SlackStandIn

    def configure(self, extra: str = "", channel: str = DRILL_CHANNEL) -> None:
        self.project.write(f"""
            [channels.slack]
            enabled = true
            channel = "{channel}"
            api_base = "{self.slack.url}/api"
            {extra}
            """)



@pytest.fixture
def ws(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    with SlackStandIn() as slack:
        monkeypatch.setenv("BROADCASTER_SLACK_BOT_TOKEN", DRILL_BOT_TOKEN)
        w = Workspace(project, slack)
        w.configure()
        yield w
        assert slack.errors == [], "a stand-in handler crashed"


def test_updates_reply_in_the_thread_and_the_resolution_is_broadcast(ws: Workspace):
    first = ws.run(*ANNOUNCE)
    assert first["exit_code"] == 0, first
    incident = first["incident_id"]
    ws.run("update", incident, "--status", "identified", "--message", "A certificate expired.",
           "--channel", "slack")
    last = ws.run("resolve", incident, "--message", "Renewed.", "--apology", "We are sorry.",
                  "--channel", "slack")
    assert last["exit_code"] == 0, last
    (root,) = ws.slack.top_level()
    thread = ws.slack.thread(root.ts)
    assert len(thread) == 3 and [m.thread_ts for m in thread[1:]] == [root.ts, root.ts]
    assert [m.broadcast for m in thread] == [False, False, True], "only the resolution is also in the channel"
    link = first["statement_url"]
    assert all(link in m.text for m in thread)
    header, section, actions = root.blocks
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Card payments failing",
                                                  "emoji": True}}
    assert "&lt;b&gt; &amp; more." in section["text"]["text"], "mrkdwn escaped"
    assert "*What you can do now:* Pay by bank transfer for now." in section["text"]["text"]
    assert actions["elements"][0]["url"] == link
    assert actions["elements"][0]["text"]["text"] == "Read the official statement"
    assert "&lt;b&gt;" in root.text, "the fallback text too"
    url = status_of(last, "slack")["url"]
    assert url.startswith(f"https://slack.com/archives/{DRILL_CHANNEL}/p") and f"thread_ts={root.ts}" in url


def test_the_spanish_button_and_words(ws: Workspace):
    ws.configure('locale = "es"')
    outcome = ws.run(*ANNOUNCE, "--title-es", "Fallan los pagos", "--message-es", "Algunos pagos fallan.")
    assert outcome["exit_code"] == 0, outcome
    (root,) = ws.slack.top_level()
    assert root.blocks[0]["text"]["text"] == "Fallan los pagos"
    assert root.blocks[-1]["elements"][0]["text"]["text"] == "Leer el comunicado oficial"


def test_ratelimited_waits_for_retry_after(ws: Workspace):
    ws.slack.fail("post_message", SlackStandIn.rate_limited(retry_after=2))
    outcome = ws.run(*ANNOUNCE)
    assert status_of(outcome, "slack")["status"] == "sent", outcome
    first, second = ws.slack.calls("post_message")
    assert first.status == 429 and second.status == 200
    assert second.wall >= first.wall + 2 - 0.01, "came back before the Retry-After Slack sent"


def test_a_lost_answer_is_found_in_the_channel_not_posted_twice(ws: Workspace):
    ws.slack.fail("post_message", Fault.lost_answer())
    first = ws.run(*ANNOUNCE)
    assert status_of(first, "slack")["status"] == "sent", first
    assert len(ws.slack.messages) == 1 and ws.slack.calls("history")
    ws.slack.fail("post_message", Fault.lost_answer())
    update = ws.run("update", first["incident_id"], "--status", "identified", "--message", "Found it.",
                    "--channel", "slack")
    assert status_of(update, "slack")["status"] == "sent", update
    assert len(ws.slack.messages) == 2 and ws.slack.calls("replies"), "looked for in the thread"
    assert ws.slack.messages[1].thread_ts == ws.slack.messages[0].ts


@pytest.mark.parametrize(("code", "said"), [
    ("invalid_auth", "BROADCASTER_SLACK_BOT_TOKEN"),
    ("not_in_channel", "/invite"),
    ("channel_not_found", "the ID, not the name"),
])
def test_permanent_errors_fail_at_once_and_say_what_to_fix(ws: Workspace, code: str, said: str):
    ws.slack.fail("post_message", SlackStandIn.error(code))
    outcome = ws.run(*ANNOUNCE)
    delivery = status_of(outcome, "slack")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert code in delivery["error"] and said in delivery["error"]
    assert len(ws.slack.calls("post_message")) == 1


def test_a_token_without_chat_write_is_told_the_scopes(ws: Workspace):
    ws.slack.tokens[DRILL_BOT_TOKEN] = frozenset({"channels:history"})
    delivery = status_of(ws.run(*ANNOUNCE), "slack")
    assert delivery["status"] == "failed" and "chat:write" in delivery["error"]


def test_a_wrong_token_is_never_shown(ws: Workspace, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BROADCASTER_SLACK_BOT_TOKEN", "xoxb-not-the-token-5555")
    outcome = ws.run(*ANNOUNCE)
    assert "invalid_auth" in status_of(outcome, "slack")["error"]
    assert "xoxb-not-the-token-5555" not in json.dumps(outcome)
    assert "xoxb-not-the-token-5555" not in json.dumps(ws.project.rows("SELECT * FROM deliveries"))


@pytest.mark.parametrize("fault", [SlackStandIn.error("internal_error"), Fault.html_502(), Fault.dropped()],
                         ids=["internal_error", "html-502", "dropped"])
def test_transient_failures_are_retried(ws: Workspace, fault: Fault):
    ws.slack.fail("post_message", fault)
    outcome = ws.run(*ANNOUNCE)
    assert status_of(outcome, "slack")["status"] == "sent", outcome
    assert len(ws.slack.messages) == 1


def test_a_channel_name_instead_of_its_id_is_refused(ws: Workspace):
    ws.configure(channel="#status")
    result = ws.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2 and "channels.slack" in result.output and "channel" in result.output
    assert ws.slack.seen == []


def test_a_long_explanation_is_shortened_to_the_section_limit_keeping_the_essentials(ws: Workspace):
    long = ("A power cut at our main data centre stopped the payment servers. " * 60).strip()
    outcome = ws.run("announce", "--title", "Payments", "--message", long, "--guidance",
                     "Pay by bank transfer.", "--channel", "slack")
    assert outcome["exit_code"] == 0, outcome
    (root,) = ws.slack.top_level()  # the stand-in refuses a section over 3,000
    assert "…" in root.text and "*What you can do now:* Pay by bank transfer." in root.text


def test_the_channel_keeps_the_channel_contract(ws: Workspace):
    check_channel(SlackChannel, settings={"channel": DRILL_CHANNEL, "api_base": f"{ws.slack.url}/api"},
                  environ={"BROADCASTER_SLACK_BOT_TOKEN": DRILL_BOT_TOKEN}, send=True)
    assert len(ws.slack.messages) == 4
    postmortem = ws.slack.messages[-1]
    assert postmortem.broadcast and "Read the postmortem" in json.dumps(postmortem.blocks)


def test_without_the_history_scope_a_lost_answer_is_posted_again_as_the_readme_warns(ws: Workspace):
    ws.slack.tokens[DRILL_BOT_TOKEN] = frozenset({"chat:write"})
    ws.slack.fail("post_message", Fault.lost_answer())
    outcome = ws.run(*ANNOUNCE)
    assert status_of(outcome, "slack")["status"] == "sent"
    assert [c.status for c in ws.slack.calls("history")] == [200], "it looked (missing_scope is 200 ok:false)"
    assert len(ws.slack.messages) == 2, "it could not see the first, so it posted again"
