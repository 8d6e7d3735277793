"""The X channel: real tweepy over HTTP against the X API stand-in."""

from __future__ import annotations

import json

import pytest
from conftest import Social, status_of

from broadcaster.channels.tweet_text import weighted_length
from broadcaster.standins.server import Fault
from broadcaster.standins.x_api import DRILL_CREDENTIALS, DUPLICATE_DETAIL, XStandIn

ANNOUNCE = ("announce", "--title", "Card payments failing", "--message",
            "Some card payments fail at checkout.", "--channel", "twitter")


def statement(outcome: dict) -> str:
    return outcome["statement_url"]


def test_announce_update_resolve_is_one_thread_each_post_linking_the_statement(social: Social):
    first = social.run(*ANNOUNCE)
    incident = first["incident_id"]
    social.run("update", incident, "--status", "identified", "--message", "A certificate expired.",
               "--channel", "twitter")
    last = social.run("resolve", incident, "--message", "Renewed; payments work.", "--apology",
                      "We are sorry.", "--channel", "twitter")
    assert last["exit_code"] == 0
    posts = social.x.posted()
    assert len(posts) == 3
    thread = social.x.thread(posts[0].id)
    assert [t.id for t in thread] == [t.id for t in posts], "each update replies to the one before"
    assert all(statement(first) in t.text for t in thread)
    assert thread[1].text.startswith("Cause identified: ")
    assert thread[2].text.startswith("Resolved: ") and "We are sorry." in thread[2].text
    assert status_of(last, "twitter")["url"] == f"https://x.com/i/web/status/{thread[2].id}"


def test_a_long_update_is_shortened_at_a_word_keeping_the_link(social: Social):
    words = "Los pagos con tarjeta fallan en algunos comercios de la Comunidad de Madrid. " * 8
    outcome = social.run("announce", "--title", "Pagos", "--message", words.strip())
    assert outcome["exit_code"] == 0
    (tweet,) = social.x.posted()
    assert weighted_length(tweet.text) <= 280
    assert tweet.text.endswith(statement(outcome))
    body = tweet.text.split("…")[0]
    assert words.startswith(body.split("\n\n", 1)[1]), "cut inside the text, not rewritten"
    assert words[len(body.split("\n\n", 1)[1])] == " ", "cut at a word boundary"


def test_with_thread_long_the_rest_continues_as_replies(social: Social):
    social.configure(twitter="thread_long = true")
    message = "カード決済の一部が失敗しています。原因を調査しており、復旧まで銀行振込をご利用ください。" * 6
    outcome = social.run("announce", "--title", "決済障害", "--message", message)
    assert outcome["exit_code"] == 0, outcome
    posts = social.x.posted()
    assert len(posts) >= 3
    assert statement(outcome) in posts[0].text
    assert all(weighted_length(p.text) <= 280 for p in posts)
    assert [t.id for t in social.x.thread(posts[0].id)] == [p.id for p in posts]
    joined = "".join(p.text.replace("…", "") for p in posts).replace(statement(outcome), "")
    assert "".join(joined.split()) == "".join(("決済障害" + message).split()), "nothing lost or repeated"
    # The next update replies to the last part, so the thread stays one line.
    social.run("update", outcome["incident_id"], "--status", "identified",
               "--message", "原因が判明しました。")
    assert social.x.posted()[-1].in_reply_to == posts[-1].id


def test_emoji_and_spanish_count_by_xs_weights(social: Social):
    message = "Estamos trabajando en ello 🔧🙏🏽 " * 12
    outcome = social.run("announce", "--title", "Caída del servicio ⚠️", "--message", message)
    assert outcome["exit_code"] == 0, outcome
    (tweet,) = social.x.posted()  # the stand-in refuses anything over 280 weighted
    assert 270 <= weighted_length(tweet.text) <= 280
    assert "\u200d…" not in tweet.text and "🙏…" not in tweet.text.replace("🙏🏽…", "")


def test_rate_limit_waits_until_the_reset_then_posts(social: Social):
    social.x.fail("create_tweet", XStandIn.rate_limited(reset_in=2))
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "twitter")["status"] == "sent"
    first, second = social.x.calls("create_tweet")
    assert first.status == 429 and second.status == 201
    # Measured against the reset X sent (whole Unix seconds), not against when the test began.
    reset = int(first.headers["x-rate-limit-reset"])
    assert second.wall >= reset - 0.01, "retried before X's reset time"


def test_a_far_rate_limit_reset_is_capped_by_max_wait(social: Social):
    social.configure(top="")
    social.project.write(social.project.config.read_text().replace("max_wait_seconds = 5",
                                                                      "max_wait_seconds = 1"), base="")
    social.x.fail("create_tweet", XStandIn.rate_limited(reset_in=3600))
    outcome = social.run(*ANNOUNCE)
    first, second = social.x.calls("create_tweet")
    assert status_of(outcome, "twitter")["status"] == "sent"
    assert second.at - first.at < 60, "capped at max_wait_seconds, not X's hour (loose: machine load)"


@pytest.mark.parametrize("fault", [XStandIn.server_error(503), XStandIn.server_error(500), Fault.html_502(),
                                   Fault.dropped()], ids=["503", "500", "html-502", "dropped"])
def test_server_errors_html_pages_and_dropped_connections_are_retried(social: Social, fault: Fault):
    social.x.fail("create_tweet", fault)
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "twitter")["status"] == "sent"
    first, second = social.x.calls("create_tweet")
    assert first.fault is fault and second.status == 201
    assert len(social.x.posted()) == 1


def test_a_lost_answer_is_settled_by_duplicate_detection_not_a_second_post(social: Social):
    social.x.fail("create_tweet", Fault.lost_answer())
    outcome = social.run(*ANNOUNCE)
    delivery = status_of(outcome, "twitter")
    assert delivery["status"] == "sent"
    (tweet,) = social.x.posted()
    statuses = [c.status for c in social.x.calls("create_tweet")]
    assert statuses == ["201, dropped", 403], "the retry met X's duplicate check"
    assert delivery["url"] == f"https://x.com/i/web/status/{tweet.id}", "the id was looked up"
    # The next update still replies in the thread.
    social.run("update", outcome["incident_id"], "--status", "identified", "--message", "Found it.",
               "--channel", "twitter")
    assert social.x.posted()[-1].in_reply_to == tweet.id


def test_a_timeout_after_x_acted_does_not_post_twice(social: Social):
    social.configure(top="request_timeout_seconds = 0.5\n")
    social.x.fail("create_tweet", Fault.latency(1.5))
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "twitter")["status"] == "sent"
    assert len(social.x.posted()) == 1


def test_a_duplicate_on_a_first_attempt_is_a_permanent_error_not_a_silent_success(social: Social):
    social.x.fail("create_tweet", XStandIn.forbidden(DUPLICATE_DETAIL))
    outcome = social.run(*ANNOUNCE)
    delivery = status_of(outcome, "twitter")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert "duplicate" in delivery["error"] and "change the text" in delivery["error"]


def test_bad_credentials_fail_fast_and_say_what_to_fix(social: Social, monkeypatch):
    monkeypatch.setenv("BROADCASTER_TWITTER_CONSUMER_SECRET", "not-the-secret-xyz")
    outcome = social.run(*ANNOUNCE)
    delivery = status_of(outcome, "twitter")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert "401" in delivery["error"] and "BROADCASTER_TWITTER_" in delivery["error"]
    assert status_of(outcome, "website")["status"] == "sent"
    assert len(social.x.calls("create_tweet")) == 1, "a permanent error is not retried"


def test_403_and_400_are_permanent_with_xs_reason(social: Social):
    social.x.fail("create_tweet", XStandIn.forbidden())
    outcome = social.run(*ANNOUNCE)
    assert "not permitted" in status_of(outcome, "twitter")["error"]
    assert "Read and Write" in status_of(outcome, "twitter")["error"]
    # retry then finishes it, once.
    done = social.project.cli("retry", outcome["incident_id"], "--json")
    assert done.exit_code == 0, done.output
    assert len(social.x.posted()) == 1


def test_no_secret_reaches_any_output_or_the_ledger(social: Social, monkeypatch):
    monkeypatch.setenv("BROADCASTER_TWITTER_ACCESS_TOKEN_SECRET", "wrong-secret-value-4242")
    social.graph.fail("create_post", Fault.dropped(), Fault.dropped(), Fault.dropped())
    outputs = [social.project.cli(*ANNOUNCE[:-2], "--yes").output,
               social.project.cli(*ANNOUNCE[:-2], "--yes", "--json").output,
               social.project.cli("list", "--json").output]
    secrets = ["wrong-secret-value-4242", DRILL_CREDENTIALS.consumer_secret, "drill-page-token"]
    rows = json.dumps(social.project.rows("SELECT * FROM deliveries"))
    assert "failed" in rows
    for secret in secrets:
        for text in [*outputs, rows]:
            assert secret not in text


def test_a_lost_answer_on_the_last_attempt_is_settled_by_retry_without_a_second_post(social: Social):
    social.x.fail("create_tweet", XStandIn.server_error(), XStandIn.server_error(), Fault.lost_answer())
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "twitter")["status"] == "failed"
    done = social.project.cli("retry", "--json")
    assert done.exit_code == 0, done.output
    assert len(social.x.posted()) == 1
    assert [c.status for c in social.x.calls("create_tweet")][-1] == 403, "settled by X's duplicate check"
