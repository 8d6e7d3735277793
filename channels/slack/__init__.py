"""Slack: the incident as one thread in a channel, through slack-sdk's `chat.postMessage`.

The announcement is a message in `channel` with blocks (a header, the text, a button to the
official statement) and the same words as its plain-text fallback, which notifications and
screen readers use. Every update replies in the thread of that first message (`thread_ts`);
the resolution is also shown in the channel (`reply_broadcast`), so those who only read the
channel learn it is over.

Slack has no idempotency key. A message whose answer was lost is looked for, before posting
again, among the channel's (or the thread's) latest messages from this app
(`conversations.history`, `conversations.replies`: the token needs the history scope).

slack-sdk's own retry handlers are turned off (a retried connection error could post twice
behind the ledger's back); broadcaster retries, waiting for Slack's `Retry-After` on
`ratelimited`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Kind, Receipt

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from broadcaster.render import Page

SLACK_API = "https://slack.com/api"
#: A section block's text holds at most 3,000 characters; a header's 150.
LIMIT = 3000
HEADER_LIMIT = 150
#: How many of the channel's (or thread's) latest messages a lost answer is looked for in.
LOOKUP_DEPTH = 50
#: Slack's error codes that mean "try again later".
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                    "request_timeout", "team_added_to_org"}
CREDENTIAL_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
SCOPES = "chat:write, and channels:history (groups:history for a private channel)"
_QUIET = logging.getLogger("broadcaster.channels.slack")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # slack-sdk logs every failed request at ERROR: the report says it once


class SlackSettings(ChannelSettings):
    required_when_enabled: ClassVar[Mapping[str, str]] = {
        "channel": "the Slack channel's ID, such as C0123ABCD: channel details → About"}
    #: The channel's ID (channel details → About, at the bottom: C0123ABCD).
    channel: str = Field("", pattern=r"^([CG][A-Z0-9]{6,})?$")
    api_base: str = Field(SLACK_API, pattern=r"^https?://[^/\s]+(/[^\s]*)?$")


class SlackChannel(Channel):
    spec = ChannelSpec(
        name="slack",
        summary="posts in a Slack channel; each update in the incident's thread",
        settings=SlackSettings,
        secrets={"bot_token": "BROADCASTER_SLACK_BOT_TOKEN"},
        limit=LIMIT,
    )
    settings: SlackSettings
    templates_package = "broadcaster.channels.slack.templates"

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._client: WebClient | None = None
        self._bot: str | None = None

    def length(self, text: str) -> int:
        return len(escaped(text))

    def compose(self, page: Page) -> Post:
        post = super().compose(page)
        words = page.templates.strings(page.locale)
        label = (words.get("postmortem", {}).get("read") if page.kind is Kind.POSTMORTEM else None) \
            or words.get("slack", {}).get("statement", "Official statement")
        return replace(post, rich=json.dumps(blocks(post.text, post.link, label), ensure_ascii=False))

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        root = next((r for r in thread if r.meta.get("ts")), None)
        channel = str(root.meta["channel"]) if root else self.settings.channel
        thread_ts = str(root.meta.get("thread_ts") or root.meta["ts"]) if root else None
        text = escaped(post.text)
        found = self._find(channel, thread_ts, text) if resumed else None
        if found is None:
            broadcast = bool(thread_ts) and post.closes
            rich = json.loads(post.rich) if post.rich else None
            answer = self._call(lambda: self.client.chat_postMessage(
                channel=channel, text=text, blocks=rich, thread_ts=thread_ts,
                reply_broadcast=broadcast or None, unfurl_links=False, unfurl_media=False,
            ))
            channel, found = str(answer["channel"]), str(answer["ts"])
        meta: dict[str, object] = {"channel": channel, "ts": found, "thread_ts": thread_ts or found}
        link = f"https://slack.com/archives/{channel}/p{found.replace('.', '')}"
        if thread_ts:
            link += f"?thread_ts={thread_ts}&cid={channel}"
        return Receipt(remote_id=found, url=link, meta=meta)

    def _find(self, channel: str, thread_ts: str | None, text: str) -> str | None:
        """The ts of this app's message with `text`, made by an attempt whose answer was lost."""
        try:
            bot = self._bot_id()
            if thread_ts:
                answer = self._call(lambda: self.client.conversations_replies(
                    channel=channel, ts=thread_ts, limit=LOOKUP_DEPTH))
            else:
                answer = self._call(lambda: self.client.conversations_history(channel=channel,
                                                                              limit=LOOKUP_DEPTH))
        except DeliveryError:
            return None  # without the history scope, the message cannot be looked for
        for message in answer.get("messages") or []:
            mine = message.get("bot_id") == bot and message.get("ts") != thread_ts
            if mine and message.get("text") == text:
                return str(message["ts"])
        return None

    def _bot_id(self) -> str | None:
        if self._bot is None:
            self._bot = self._call(lambda: self.client.auth_test()).get("bot_id")
        return self._bot

    def _call(self, request: Callable[[], Any]) -> Any:
        """Run one Web API request, turning every way it can fail into a delivery error."""
        import http.client
        import urllib.error

        from slack_sdk.errors import SlackApiError

        try:
            return request()
        except SlackApiError as exc:
            raise self._classify(exc) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc)
            kind = "timed out" if timed_out else "connection failed"
            raise TransientDeliveryError(f"Slack: {kind} ({type(exc).__name__})") from None

    def _classify(self, exc: Any) -> DeliveryError:
        response = exc.response
        status = response.status_code
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error") or f"HTTP {status}")
        if error in TRANSIENT_ERRORS or status == 429 or status >= 500:
            from broadcaster.channels.http_session import retry_after

            headers = {k.lower(): v for k, v in (response.headers or {}).items()}
            retry_at = retry_after(headers.get("retry-after"))
            return TransientDeliveryError(f"Slack: {error} ({status})", retry_at=retry_at)
        if error in CREDENTIAL_ERRORS:
            return PermanentDeliveryError(
                f"Slack rejected the token ({error}): check BROADCASTER_SLACK_BOT_TOKEN, the app's Bot "
                "User OAuth Token (xoxb-…)")
        if error == "missing_scope":
            return PermanentDeliveryError(
                f"Slack (missing_scope): the token lacks {data.get('needed', '?')}; the app needs {SCOPES}. "
                "Add it and reinstall the app")
        if error == "not_in_channel":
            return PermanentDeliveryError(
                f"Slack (not_in_channel): the app is not in {self.settings.channel}; invite it there "
                "(/invite @your-app)")
        if error == "channel_not_found":
            return PermanentDeliveryError(
                f"Slack (channel_not_found): no channel {self.settings.channel} this app can see; check "
                "[channels.slack] channel (the ID, not the name)")
        return PermanentDeliveryError(f"Slack refused the message: {error}")

    @property
    def client(self) -> WebClient:
        if self._client is None:
            from slack_sdk import WebClient

            token = self.context.secrets.get(self.spec.secrets["bot_token"])
            self._client = WebClient(token=token.get_secret_value() if token else None,
                                     base_url=self.settings.api_base.rstrip("/") + "/",
                                     timeout=max(1, round(self.context.timeout)), retry_handlers=[],
                                     logger=_QUIET)
        return self._client


def escaped(text: str) -> str:
    """Text as Slack's mrkdwn needs it: &, < and > escaped (they mark links and mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(text: str, link: str, label: str) -> list[dict[str, Any]]:
    """A header with the first line (if it fits one), the rest as mrkdwn, and a button to the
    statement."""
    head, _, rest = text.partition("\n\n")
    out: list[dict[str, Any]] = []
    if len(head) <= HEADER_LIMIT and rest and "\n" not in head:
        out.append({"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}})
        body = rest
    else:
        body = text
    out.append({"type": "section", "text": {"type": "mrkdwn", "text": escaped(body)}})
    out.append({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": label}, "url": link,
         "action_id": "statement"}]})
    return out
