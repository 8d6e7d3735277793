"""The Bluesky channel: the real atproto SDK over HTTP against the PDS stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Commands, Project, status_of

from broadcaster.channels.bluesky import BlueskyChannel, link_facets, record_key
from broadcaster.channels.testing import check_channel
from broadcaster.standins.bluesky_pds import DRILL_APP_PASSWORD, DRILL_HANDLE, BlueskyStandIn
from broadcaster.standins.server import Fault

ANNOUNCE = ("announce", "--title", "Pagos con tarjeta: fallan 💳", "--message",
            "Algunos pagos fallan en la caja. Lo estamos investigando.", "--guidance",
            "Pague por transferencia.", "--channel", "bluesky")


@dataclass
class Sky(Commands):
    pds: BlueskyStandIn

    def configure(self, extra: str = "") -> None:
        self.project.write(f"""
            [channels.bluesky]
            enabled = true
            handle = "{DRILL_HANDLE}"
            api_base = "{self.pds.url}"
            {extra}
            """)



@pytest.fixture
def sky(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sky]:
    with BlueskyStandIn() as pds:
        monkeypatch.setenv("BROADCASTER_BLUESKY_APP_PASSWORD", DRILL_APP_PASSWORD)
        s = Sky(project, pds)
        s.configure()
        yield s
        assert pds.errors == [], "a stand-in handler crashed"


def test_a_thread_of_replies_each_with_a_clickable_link_and_a_card(sky: Sky):
    first = sky.run(*ANNOUNCE)
    assert first["exit_code"] == 0, first
    incident = first["incident_id"]
    sky.run("update", incident, "--status", "identified", "--message", "Caducó un certificado.",
            "--channel", "bluesky")
    last = sky.run("resolve", incident, "--message", "Renovado.", "--apology", "Lo sentimos.",
                   "--channel", "bluesky")
    assert last["exit_code"] == 0, last
    root, reply, resolution = sky.pds.posted()
    assert root.parent is None
    assert (reply.root, reply.parent) == (root.uri, root.uri)
    assert (resolution.root, resolution.parent) == (root.uri, reply.uri)
    link = first["statement_url"]
    for post in (root, reply, resolution):
        (facet,) = post.record["facets"]  # the stand-in checked the bytes it covers are the link
        assert facet["features"][0]["uri"] == link
        assert post.record["embed"]["external"]["uri"] == link
    assert root.text.encode().index(link.encode()) == root.record["facets"][0]["index"]["byteStart"], \
        "offsets in UTF-8 bytes: the title's é and 💳 come before the link"
    assert root.record["embed"]["external"]["title"] == "Pagos con tarjeta: fallan 💳"
    assert root.record["langs"] == ["en"]
    assert status_of(first, "bluesky")["url"] == f"https://bsky.app/profile/{DRILL_HANDLE}/post/{root.rkey}"


def test_a_long_text_is_fitted_to_300_graphemes_keeping_the_essentials(sky: Sky):
    message = "Los pagos con tarjeta fallan en algunos comercios 👍🏽 de la Comunidad de Madrid. " * 8
    outcome = sky.run("announce", "--title", "Pagos", "--message", message.strip(), "--guidance",
                      "Pague por transferencia.", "--channel", "bluesky")
    assert outcome["exit_code"] == 0, outcome
    (post,) = sky.pds.posted()  # the stand-in refuses more than 300 graphemes
    assert "…" in post.text and "Pague por transferencia." in post.text
    assert post.text.endswith(outcome["statement_url"])
    assert len(post.text) > 300 - 20, "counted in graphemes, not code points or bytes"


def test_a_lost_answer_is_found_at_the_posts_own_key_not_posted_again(sky: Sky):
    sky.pds.fail("create_record", Fault.lost_answer())
    outcome = sky.run(*ANNOUNCE)
    assert status_of(outcome, "bluesky")["status"] == "sent", outcome
    assert len(sky.pds.posted()) == 1
    assert [c.status for c in sky.pds.calls("create_record")] == ["200, dropped"]
    assert sky.pds.calls("get_record"), "looked up at its record key"


def test_a_lost_answer_on_the_last_attempt_is_settled_by_retry(sky: Sky):
    sky.pds.fail("create_record", Fault.html_502(), Fault.html_502(), Fault.lost_answer())
    outcome = sky.run(*ANNOUNCE)
    assert status_of(outcome, "bluesky")["status"] == "failed"
    done = sky.project.cli("retry", "--json")
    assert done.exit_code == 0, done.output
    assert len(sky.pds.posted()) == 1


def test_a_session_near_its_end_is_refreshed_by_a_long_running_sender(sky: Sky):
    from pydantic import SecretStr

    from broadcaster.channels import ChannelContext, Post
    from broadcaster.settings import load_settings

    # The SDK refreshes 15 minutes before the end. The token's `exp` is in whole seconds, so one
    # issued with 15 min + 3 s to run has between 2 and 3 s before the SDK refreshes it: the
    # first post (at once) never refreshes, the second (3.1 s later) always does. With 15 min
    # + 1 s, a login late in its second left only the rest of that second, and a slow first
    # post refreshed too (a second refresh, seen on a busy CI machine).
    sky.pds.access_seconds = 15 * 60 + 3
    settings = load_settings(sky.project.config)
    channel = BlueskyChannel(settings.channels["bluesky"], ChannelContext(
        settings, {"BROADCASTER_BLUESKY_APP_PASSWORD": SecretStr(DRILL_APP_PASSWORD)}, 5.0))
    first = channel.send(Post("Uno https://status.example.com/", "https://status.example.com/",
                              update_id="x-1"), (), resumed=False)
    time.sleep(3.1)
    channel.send(Post("Dos https://status.example.com/", "https://status.example.com/", update_id="x-2"),
                 (first,), resumed=False)
    assert len(sky.pds.posted()) == 2 and len(sky.pds.calls("create_session")) == 1
    assert len(sky.pds.calls("refresh_session")) == 1, "refreshed, not logged in again"
    assert sky.pds.posted()[1].parent == sky.pds.posted()[0].uri


def test_a_session_the_pds_calls_expired_is_opened_again(sky: Sky):
    sky.pds.fail("create_record", Fault(status=400, body={"error": "ExpiredToken",
                                                          "message": "Token has expired"}))
    outcome = sky.run(*ANNOUNCE)
    assert status_of(outcome, "bluesky")["status"] == "sent", outcome
    assert len(sky.pds.calls("create_session")) == 2 and len(sky.pds.posted()) == 1


def test_a_wrong_app_password_says_what_to_fix_and_is_never_shown(sky: Sky, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BROADCASTER_BLUESKY_APP_PASSWORD", "wrong-pass-word-1234")
    outcome = sky.run(*ANNOUNCE)
    delivery = status_of(outcome, "bluesky")
    assert outcome["exit_code"] == 3 and delivery["status"] == "failed"
    assert "BROADCASTER_BLUESKY_APP_PASSWORD" in delivery["error"] and "App passwords" in delivery["error"]
    assert "wrong-pass-word-1234" not in json.dumps(outcome)
    assert sky.pds.posted() == []


def test_rate_limit_waits_for_the_reset_the_pds_sent(sky: Sky):
    sky.pds.fail("create_record", BlueskyStandIn.rate_limited(reset_in=2))
    outcome = sky.run(*ANNOUNCE)
    assert status_of(outcome, "bluesky")["status"] == "sent", outcome
    first, second = sky.pds.calls("create_record")
    assert first.status == 429
    assert second.wall >= int(first.headers["ratelimit-reset"]) - 0.01


def test_enabled_without_a_handle_is_refused(sky: Sky):
    sky.project.write("""
        [channels.bluesky]
        enabled = true
        """)
    result = sky.project.cli(*ANNOUNCE, "--yes")
    assert result.exit_code == 2 and "handle is required" in result.output
    assert sky.pds.seen == []


def test_facets_count_bytes_and_record_keys_are_tids():
    text = "Caída ⚠️ en Cádiz: https://status.example.com/es/incidents/ab/ ¡gracias!"
    (facet,) = link_facets(text)
    raw = text.encode()
    assert raw[facet["index"]["byteStart"]:facet["index"]["byteEnd"]].decode() == \
        "https://status.example.com/es/incidents/ab/"
    from datetime import UTC, datetime

    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    key = record_key("abc-1", at)
    assert len(key) == 13 and key == record_key("abc-1", at) != record_key("abc-2", at)
    assert record_key("abc-1", at) < record_key("abc-1", datetime(2026, 11, 23, 10, 1, tzinfo=UTC))


def test_the_channel_keeps_the_channel_contract(sky: Sky):
    check_channel(BlueskyChannel, settings={"handle": DRILL_HANDLE, "api_base": sky.pds.url},
                  environ={"BROADCASTER_BLUESKY_APP_PASSWORD": DRILL_APP_PASSWORD}, send=True)
    assert len(sky.pds.posted()) >= 4
    assert sky.pds.posted()[-1].text.startswith("Postmortem: Card payments failing")


def test_a_post_the_pds_did_not_show_yet_is_found_when_creating_it_again_is_refused(sky: Sky):
    # The answer is lost; the retry's read does not see the post yet; creating it again at the
    # same key is refused as existing, and the post is then read and recorded: still one post.
    sky.pds.fail("create_record", Fault.lost_answer())
    unseen = Fault(status=400, body={"error": "RecordNotFound", "message": "Could not locate record"})
    sky.pds.fail("get_record", unseen)
    outcome = sky.run(*ANNOUNCE)
    assert status_of(outcome, "bluesky")["status"] == "sent", outcome
    assert len(sky.pds.posted()) == 1
    assert [c.status for c in sky.pds.calls("create_record")] == ["200, dropped", 400]
    assert len(sky.pds.calls("get_record")) == 2
