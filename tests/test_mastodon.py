"""The Mastodon channel: real Mastodon.py over HTTP against the Mastodon API stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Commands, Project, status_of

from broadcaster.channels.mastodon import MastodonChannel, plain_text
from broadcaster.channels.testing import check_channel
from broadcaster.standins import mastodon_api
from broadcaster.standins.mastodon_api import DRILL_TOKEN, MastodonStandIn, content_html
from broadcaster.standins.server import Fault

ANNOUNCE = ("announce", "--title", "Card payments failing", "--message",
            "Some card payments fail at checkout.", "--guidance", "Pay by bank transfer for now.",
            "--component", "Payments API", "--channel", "mastodon")


@dataclass
class Fediverse(Commands):
    instance: MastodonStandIn

    def configure(self, extra: str = "", top: str = "") -> None:
        from conftest import BASE_SETTINGS

        self.project.write(f"""
            [channels.mastodon]
            enabled = true
            api_base = "{self.instance.url}"
            {extra}
            """, base=top + BASE_SETTINGS)



@pytest.fixture
def fedi(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fediverse]:
    with MastodonStandIn() as instance:
        monkeypatch.setenv("BROADCASTER_MASTODON_ACCESS_TOKEN", DRILL_TOKEN)
        f = Fediverse(project, instance)
        f.configure()
        yield f
        assert instance.errors == [], "a stand-in handler crashed"


def test_announce_update_resolve_is_one_thread_each_status_linking_the_statement(fedi: Fediverse):
    first = fedi.run(*ANNOUNCE)
    assert first["exit_code"] == 0, first
    incident = first["incident_id"]
    fedi.run("update", incident, "--status", "identified", "--message", "A certificate expired.",
             "--channel", "mastodon")
    last = fedi.run("resolve", incident, "--message", "Renewed; payments work.", "--apology",
                    "We are sorry for the failed payments.", "--channel", "mastodon")
    assert last["exit_code"] == 0, last
    posts = fedi.instance.posted()
    assert len(posts) == 3
    assert [s.id for s in fedi.instance.thread(posts[0].id)] == [s.id for s in posts]
    link = first["statement_url"]
    assert all(link in s.text for s in posts)
    assert posts[0].text.startswith("Card payments failing\n\nSome card payments fail at checkout.")
    assert "What you can do now: Pay by bank transfer for now." in posts[0].text
    assert "Affected services: Payments API" in posts[0].text
    assert posts[1].text.startswith("Cause identified: ")
    assert posts[2].text.startswith("Resolved: ") and "We are sorry for the failed payments." in posts[2].text
    assert {s.visibility for s in posts} == {"public"} and {s.language for s in posts} == {"en"}
    assert status_of(last, "mastodon")["url"] == f"https://mastodon.example/@examplecorp/{posts[2].id}"


def test_the_spanish_account_posts_in_spanish_tagged_es(fedi: Fediverse):
    fedi.configure('locale = "es"\nvisibility = "unlisted"')
    outcome = fedi.run(*ANNOUNCE, "--title-es", "Fallan los pagos", "--message-es",
                       "Algunos pagos con tarjeta fallan.", "--guidance-es", "Pague por transferencia.")
    assert outcome["exit_code"] == 0, outcome
    (status,) = fedi.instance.posted()
    assert status.language == "es" and status.visibility == "unlisted"
    assert status.text.startswith("Fallan los pagos") and "/es/" in status.text


def test_length_is_the_instances_limit_in_graphemes_with_links_counting_23(fedi: Fediverse):
    fedi.instance.max_characters = 1000
    words = "Los pagos con tarjeta fallan en algunos comercios 👍🏽 de la Comunidad de Madrid. " * 10
    outcome = fedi.run("announce", "--title", "Pagos", "--message", words.strip(), "--channel", "mastodon",
                       "--dry-run")
    (planned,) = [p for p in outcome["preview"] if p["channel"] == "mastodon"]
    assert planned["limit"] == 1000, "read from /api/v2/instance"
    assert "…" not in planned["text"], "fits the instance's 1000: not shortened"
    # Counted as Mastodon counts: 👍🏽 is one grapheme, the statement link 23 whatever its length.
    assert planned["length"] == fedi.instance.length(planned["text"])
    assert planned["length"] < len(planned["text"])


def test_an_instance_that_does_not_say_its_limit_gets_500_and_a_warning(fedi: Fediverse):
    fedi.instance.hide_instance = True
    words = "Some card payments fail at checkout in several shops across the region. " * 12
    outcome = fedi.run("announce", "--title", "Payments", "--message", words.strip(), "--guidance",
                       "Pay by bank transfer.", "--channel", "mastodon")
    assert outcome["exit_code"] == 0, outcome
    assert any("500 characters assumed" in w for w in outcome["warnings"]), outcome
    (status,) = fedi.instance.posted()  # the stand-in refuses anything over its 500
    assert fedi.instance.length(status.text) <= 500 and "…" in status.text
    assert "What you can do now: Pay by bank transfer." in status.text
    assert outcome["statement_url"] in status.text


def test_a_lost_answer_is_found_among_the_accounts_statuses_not_posted_again(fedi: Fediverse):
    fedi.instance.fail("create_status", Fault.lost_answer())
    outcome = fedi.run(*ANNOUNCE)
    delivery = status_of(outcome, "mastodon")
    assert delivery["status"] == "sent", outcome
    (status,) = fedi.instance.posted()
    assert [c.status for c in fedi.instance.calls("create_status")] == ["200, dropped"]
    assert delivery["url"].endswith(status.id)


def test_a_token_that_cannot_read_back_is_saved_by_the_idempotency_key(fedi: Fediverse):
    fedi.instance.tokens[DRILL_TOKEN] = frozenset({"write:statuses"})
    fedi.instance.fail("create_status", Fault.lost_answer())
    outcome = fedi.run(*ANNOUNCE)
    assert status_of(outcome, "mastodon")["status"] == "sent", outcome
    (status,) = fedi.instance.posted()
    assert [c.status for c in fedi.instance.calls("create_status")] == ["200, dropped", 200], \
        "the second request met the same Idempotency-Key and got the status already made"
    assert status_of(outcome, "mastodon")["url"].endswith(status.id)


def test_a_lost_answer_retried_after_the_key_expired_is_found_among_the_accounts_statuses(
        fedi: Fediverse, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mastodon_api, "IDEMPOTENCY_SECONDS", 0)  # as if the retry came hours later
    fedi.instance.fail("create_status", MastodonStandIn.server_error(), MastodonStandIn.server_error(),
                       Fault.lost_answer())
    first = fedi.run(*ANNOUNCE)
    assert status_of(first, "mastodon")["status"] == "failed"
    done = fedi.project.cli("retry", "--json")
    assert done.exit_code == 0, done.output
    (status,) = fedi.instance.posted()
    assert len(fedi.instance.calls("create_status")) == 3, "the retry found it and did not post"
    assert fedi.instance.calls("account_statuses")
    fedi.run("update", first["incident_id"], "--status", "identified", "--message", "Found it.",
             "--channel", "mastodon")
    assert fedi.instance.posted()[-1].in_reply_to == status.id, "the thread goes on from the found one"


def test_rate_limit_waits_until_the_reset_mastodon_sent(fedi: Fediverse):
    fedi.instance.fail("create_status", MastodonStandIn.rate_limited(reset_in=2))
    outcome = fedi.run(*ANNOUNCE)
    assert status_of(outcome, "mastodon")["status"] == "sent"
    first, second = fedi.instance.calls("create_status")
    assert first.status == 429 and second.status == 200
    from datetime import datetime

    reset = datetime.fromisoformat(first.headers["X-RateLimit-Reset"].replace("Z", "+00:00")).timestamp()
    assert second.wall >= reset - 0.01, "retried before the reset Mastodon sent"


@pytest.mark.parametrize("fault", [MastodonStandIn.server_error(503), Fault.html_502(), Fault.dropped()],
                         ids=["503", "html-502", "dropped"])
def test_server_errors_and_dropped_connections_are_retried_once_posted(fedi: Fediverse, fault: Fault):
    fedi.instance.fail("create_status", fault)
    outcome = fedi.run(*ANNOUNCE)
    assert status_of(outcome, "mastodon")["status"] == "sent", outcome
    assert len(fedi.instance.posted()) == 1


def test_a_bad_token_fails_at_once_and_says_what_to_fix(fedi: Fediverse, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BROADCASTER_MASTODON_ACCESS_TOKEN", "not-the-token-9876")
    outcome = fedi.run(*ANNOUNCE)
    delivery = status_of(outcome, "mastodon")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert "401" in delivery["error"] and "BROADCASTER_MASTODON_ACCESS_TOKEN" in delivery["error"]
    assert len(fedi.instance.calls("create_status")) == 1, "a permanent error is not retried"
    assert "not-the-token-9876" not in json.dumps(outcome)
    assert "not-the-token-9876" not in json.dumps(fedi.project.rows("SELECT * FROM deliveries"))


def test_a_token_without_the_write_scope_is_told_which_scopes(fedi: Fediverse):
    fedi.instance.tokens[DRILL_TOKEN] = frozenset({"read"})
    outcome = fedi.run(*ANNOUNCE)
    delivery = status_of(outcome, "mastodon")
    assert delivery["status"] == "failed" and "403" in delivery["error"]
    assert "write:statuses" in delivery["error"]
    assert fedi.instance.posted() == []


def test_a_reply_to_a_deleted_status_posts_standalone_with_the_link(fedi: Fediverse):
    first = fedi.run(*ANNOUNCE)
    (status,) = fedi.instance.posted()
    status.deleted = True
    update = fedi.run("update", first["incident_id"], "--status", "identified", "--message",
                      "A certificate expired.", "--channel", "mastodon")
    assert status_of(update, "mastodon")["status"] == "sent", update
    (reply,) = fedi.instance.posted()
    assert reply.in_reply_to is None and first["statement_url"] in reply.text


def test_enabled_without_an_instance_is_refused_naming_the_key(fedi: Fediverse):
    fedi.project.write("""
        [channels.mastodon]
        enabled = true
        """)
    result = fedi.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2
    assert "channels.mastodon" in result.output and "api_base is required" in result.output
    assert fedi.instance.seen == []


def test_a_missing_token_is_refused_before_anything_is_sent(fedi: Fediverse,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BROADCASTER_MASTODON_ACCESS_TOKEN")
    result = fedi.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2 and "BROADCASTER_MASTODON_ACCESS_TOKEN is not set" in result.output
    assert fedi.instance.calls("create_status") == []


def test_the_channel_keeps_the_channel_contract(fedi: Fediverse):
    check_channel(MastodonChannel, settings={"api_base": fedi.instance.url},
                  environ={"BROADCASTER_MASTODON_ACCESS_TOKEN": DRILL_TOKEN}, send=True)
    # announce, update, resolve, postmortem in the account's locale, fitted to 500 with the
    # essentials whole.
    posted = fedi.instance.posted()
    assert len(posted) == 4 and posted[-1].text.startswith("Postmortem: Card payments failing\n\nA power")


def test_status_html_reads_back_as_the_text_posted():
    text = "Fallan los pagos <b>&</b>\n\nVea https://status.example.com/es/i/1.\nGracias"
    assert plain_text(content_html(text)) == text
