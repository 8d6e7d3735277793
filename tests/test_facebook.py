"""The Facebook Page channel: real facebook-sdk over HTTP against the Graph API stand-in."""

from __future__ import annotations

import pytest
from conftest import Social, status_of

from broadcaster.standins.graph_api import GraphStandIn
from broadcaster.standins.server import Fault

ANNOUNCE = ("announce", "--title", "Card payments failing", "--message",
            "Some card payments fail at checkout.", "--channel", "facebook")


def test_the_announcement_is_a_page_post_and_updates_are_its_comments(social: Social):
    first = social.run(*ANNOUNCE)
    incident, link = first["incident_id"], first["statement_url"]
    social.run("update", incident, "--status", "identified", "--message", "A certificate expired.",
               "--channel", "facebook")
    last = social.run("resolve", incident, "--message", "Renewed.", "--apology", "Sorry.",
                      "--channel", "facebook")
    assert last["exit_code"] == 0
    (post,) = social.graph.feed()
    assert post.link == link and link in post.message
    assert [c.message.split(":")[0] for c in post.comments] == ["Cause identified", "Resolved"]
    assert all(link in c.message for c in post.comments)
    assert status_of(first, "facebook")["url"] == f"https://www.facebook.com/{post.id}"
    comment_id = post.comments[-1].id.split("_")[-1]
    assert status_of(last, "facebook")["url"].endswith(f"{post.id}?comment_id={comment_id}")


def test_updates_as_new_posts_when_configured(social: Social):
    social.configure(facebook='updates = "post"')
    first = social.run(*ANNOUNCE)
    social.run("update", first["incident_id"], "--status", "monitoring", "--message", "Fix deployed.",
               "--channel", "facebook")
    posts = social.graph.feed()
    assert len(posts) == 2 and not posts[0].comments
    assert all(p.link == first["statement_url"] for p in posts)


def test_the_page_posts_in_its_own_locale(social: Social):
    social.configure(facebook='locale = "es"')
    outcome = social.run(*ANNOUNCE[:-2], "--title-es", "Fallan los pagos", "--message-es", "Fallan.",
                         "--channel", "facebook")
    (post,) = social.graph.feed()
    assert post.message.startswith("Fallan los pagos") and "/es/incidents/" in post.link
    assert outcome["exit_code"] == 0


@pytest.mark.parametrize("fault", [
    GraphStandIn.throttled(4), GraphStandIn.throttled(17), GraphStandIn.throttled(32),
    GraphStandIn.throttled(613), GraphStandIn.server_error(500), Fault.html_502(), Fault.dropped(),
], ids=["code-4", "code-17", "code-32", "code-613", "5xx-json", "html-502", "dropped"])
def test_throttling_and_outages_are_retried(social: Social, fault: Fault):
    social.graph.fail("create_post", fault)
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "facebook")["status"] == "sent"
    assert len(social.graph.feed()) == 1
    assert [c.fault for c in social.graph.calls("create_post")] == [fault, None]


def test_throttling_honours_the_regain_access_estimate(social: Social):
    social.project.write(social.project.config.read_text().replace("max_wait_seconds = 5",
                                                                      "max_wait_seconds = 1"), base="")
    social.graph.fail("create_post", GraphStandIn.throttled(32, regain_minutes=30))
    outcome = social.run(*ANNOUNCE)
    first, second = social.graph.calls("create_post")
    assert status_of(outcome, "facebook")["status"] == "sent"
    # Waited (at least the 1 s cap), but not the 30 minutes Graph estimated: the upper bound is
    # loose on purpose, so a loaded machine cannot fail it.
    assert 0.9 <= second.at - first.at < 60, "waited for the estimate, capped by max_wait_seconds"


def test_an_expired_token_fails_at_once_and_says_to_renew_it(social: Social):
    social.graph.fail("create_post", GraphStandIn.token_expired())
    outcome = social.run(*ANNOUNCE)
    delivery = status_of(outcome, "facebook")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert "190" in delivery["error"] and "Renew the Page access token" in delivery["error"]
    assert len(social.graph.calls("create_post")) == 1
    assert social.project.cli("retry", outcome["incident_id"]).exit_code == 0
    assert len(social.graph.feed()) == 1


def test_a_wrong_token_is_an_oauth_error_that_names_the_variable(social: Social, monkeypatch):
    monkeypatch.setenv("BROADCASTER_FACEBOOK_PAGE_TOKEN", "EAAB-not-valid")
    delivery = status_of(social.run(*ANNOUNCE), "facebook")
    assert "BROADCASTER_FACEBOOK_PAGE_TOKEN" in delivery["error"]
    assert "EAAB-not-valid" not in delivery["error"]


@pytest.mark.parametrize("fault", [Fault.lost_answer(), Fault.latency(1.5)], ids=["dropped", "timeout"])
def test_a_lost_answer_is_found_by_looking_not_by_posting_again(social: Social, fault: Fault):
    social.configure(top="request_timeout_seconds = 0.5\n")
    social.graph.fail("create_post", fault)
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "facebook")["status"] == "sent"
    (post,) = social.graph.feed()
    assert len(social.graph.calls("create_post")) == 1, "found by the lookup, not posted again"
    assert social.graph.calls("list_posts")
    assert status_of(outcome, "facebook")["url"] == f"https://www.facebook.com/{post.id}"


def test_a_lost_comment_is_found_among_the_posts_comments(social: Social):
    first = social.run(*ANNOUNCE)
    social.graph.fail("create_comment", Fault.lost_answer())
    social.run("update", first["incident_id"], "--status", "identified", "--message", "Found it.",
               "--channel", "facebook")
    (post,) = social.graph.feed()
    assert len(post.comments) == 1 and len(social.graph.calls("create_comment")) == 1


def test_graphs_duplicate_refusal_after_a_lost_answer_means_it_was_posted(social: Social):
    social.graph.fail("create_post", Fault.lost_answer())
    # The lookup misses it (Graph's feed can lag behind a write): the duplicate check settles it.
    social.graph.fail("list_posts", Fault(status=200, body={"data": []}))
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "facebook")["status"] == "sent"
    assert len(social.graph.feed()) == 1
    assert [c.status for c in social.graph.calls("create_post")] == ["200, dropped", 400]


def test_a_retired_graph_version_is_refused_with_the_reason(social: Social):
    import requests

    social.configure(facebook='graph_version = "v3.1"')
    refused = social.run(*ANNOUNCE)
    assert refused["exit_code"] == 2 and "v3.1 stopped working" in refused["error"], "caught before sending"
    # And the stand-in refuses it as Meta does, should a client get past preflight.
    answer = requests.post(f"{social.graph.url}/v3.1/{social.graph.page_id}/feed",
                           data={"message": "m", "access_token": "drill-page-token"}, timeout=10)
    assert "v3.1 is no longer available" in answer.json()["error"]["message"]


def test_a_page_id_is_required_when_enabled(project):
    project.write('[channels.facebook]\nenabled = true\n')
    result = project.cli("announce", "--title", "T", "--message", "M", "--dry-run")
    assert result.exit_code == 2
    assert "channels.facebook" in result.output and "page_id" in result.output


def test_a_lost_answer_on_the_last_attempt_is_settled_by_retry_without_a_second_post(social: Social):
    """Found by the fault suite: 'failed' after a timeout is not proof that nothing was posted."""
    social.graph.fail("create_post", GraphStandIn.server_error(), GraphStandIn.server_error(),
                      Fault.lost_answer())
    outcome = social.run(*ANNOUNCE)
    assert status_of(outcome, "facebook")["status"] == "failed"
    assert social.project.cli("retry", "--json").exit_code == 0
    assert len(social.graph.feed()) == 1


def test_a_token_without_page_permissions_says_which_it_needs(social: Social):
    from broadcaster.standins.graph_api import graph_error

    social.graph.fail("create_post", Fault(status=403, body=graph_error(
        "(#200) The user hasn't authorized the application to perform this action", 200)))
    error = status_of(social.run(*ANNOUNCE), "facebook")["error"]
    assert "pages_manage_posts" in error and "pages_manage_engagement" in error
    assert len(social.graph.calls("create_post")) == 1
