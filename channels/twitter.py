"""Twitter / X: the incident as one thread, through tweepy's `Client.create_tweet`.

The announcement starts the thread; every update and the resolution reply to the
incident's last post (`in_reply_to_tweet_id`, kept in the ledger as each delivery's
receipt), so a follower who finds any post sees the whole incident. The statement link is
always in the first post of each update. A text that does not fit X's weighted 280 is
fitted by `fitting`: the explanation is shortened (or with `thread_long` continued in
replies), the guidance, apology, window and next-update promise never are.

X restricts programmatic replies for self-serve apps. When it refuses a reply, the update is
posted as a standalone post (each such post carries the statement link) and the receipt says
so, so the report can tell the operator the thread is broken there.

A post whose answer was lost (a timeout, a dropped connection) may exist. The retry posts the
same text again, and X refuses it as duplicate content: that refusal means "already
posted", so it is recorded as sent and the post's id is looked up, never posted twice.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import Field

from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.channels.tweet_text import LIMIT, weighted_length
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt

if TYPE_CHECKING:
    import tweepy

    from broadcaster.render import Page

X_HOST = "https://api.twitter.com"
#: What X answers (403, v2 `detail`) when the same account posts the same text again.
DUPLICATE = "duplicate content"
#: What X answers (403) when it does not let this app reply in a conversation.
REPLY_REFUSED = "Reply to this conversation is not allowed"
#: X's pay-per-use prices per post, US dollars ("Content: Create" and "Content: Create (with
#: URL)" on docs.x.com/x-api/getting-started/pricing, checked 2026-11; in force since
#: 2026-04-20). Every first post carries the statement link, so it is the URL price.
PRICE_PER_POST = 0.015
PRICE_PER_POST_WITH_URL = 0.20
_URL = re.compile(r"https?://\S")
#: How many of the account's latest posts a lost answer is looked for in.
LOOKUP_DEPTH = 20


class TwitterSettings(ChannelSettings):
    api_base: str = Field(X_HOST, pattern=r"^https?://[^/\s]+(/[^\s]*)?$")
    #: Continue a text too long for one post in replies, instead of shortening it.
    thread_long: bool = False
    #: What X charges, for the estimate `--dry-run` shows (US dollars per post).
    price_per_post: float = Field(PRICE_PER_POST, ge=0)
    price_per_post_with_url: float = Field(PRICE_PER_POST_WITH_URL, ge=0)


class TwitterChannel(Channel):
    spec = ChannelSpec(
        name="twitter",
        summary="posts on X (Twitter); each update replies in the incident's thread",
        settings=TwitterSettings,
        secrets={
            "consumer_key": "BROADCASTER_TWITTER_CONSUMER_KEY",
            "consumer_secret": "BROADCASTER_TWITTER_CONSUMER_SECRET",
            "access_token": "BROADCASTER_TWITTER_ACCESS_TOKEN",
            "access_token_secret": "BROADCASTER_TWITTER_ACCESS_TOKEN_SECRET",
        },
        limit=LIMIT,
    )
    settings: TwitterSettings

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._client: tweepy.Client | None = None
        # (text, in_reply_to) -> id of posts this process made, so a retry after a later
        # part failed does not repeat the parts that went out.
        self._posted: dict[tuple[str, str | None], str] = {}

    replies = True

    def length(self, text: str) -> int:
        return weighted_length(text)

    @property
    def thread_long(self) -> bool:
        return self.settings.thread_long

    def compose(self, page: Page) -> Post:
        post = super().compose(page)
        prices = (self.settings.price_per_post_with_url if _URL.search(part) else self.settings.price_per_post
                  for part in (post.text, *post.continuation))
        return replace(post, cost=round(sum(prices), 3))

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        reply_to = next((r.remote_id for r in reversed(thread) if r.remote_id), None)
        ids: list[str | None] = []
        standalone = 0
        for number, text in enumerate((post.text, *post.continuation)):
            try:
                tweet_id = self._post_once(text, reply_to, resumed=resumed)
            except _ReplyRefused:
                # Out of the thread, a part must carry the link on its own (fitting left room).
                alone = text if number == 0 else f"{text}\n\n{post.link}"
                tweet_id = self._post_once(alone, None, resumed=resumed)
                standalone += 1
            ids.append(tweet_id)
            reply_to = tweet_id or reply_to
        first = ids[0]
        meta: dict[str, object] = {"ids": ids, "in_reply_to": thread[-1].remote_id if thread else None}
        if standalone:
            meta["note"] = (f"X refused {standalone} {'reply' if standalone == 1 else 'replies'} in the "
                            "incident's thread; posted standalone, each with the statement link")
        return Receipt(remote_id=reply_to, url=f"https://x.com/i/web/status/{first}" if first else None,
                       meta=meta)

    def _post_once(self, text: str, reply_to: str | None, *, resumed: bool) -> str | None:
        # Imported here: every installed channel is loaded for its settings, enabled or not.
        import requests
        import tweepy

        from broadcaster.channels.http_session import network_problem

        key = (text, reply_to)
        if key in self._posted:
            return self._posted[key]
        try:
            answer = self.client.create_tweet(text=text, in_reply_to_tweet_id=reply_to, user_auth=True)
            tweet_id = str(answer.data["id"])
        except tweepy.Forbidden as exc:
            if reply_to is not None and REPLY_REFUSED in str(exc):
                raise _ReplyRefused() from None
            if DUPLICATE not in str(exc):
                raise PermanentDeliveryError(
                    f"X refused the post (403): {_detail(exc)}. Check that the app has Read and "
                    "Write permission and that the access token was regenerated after changing it"
                ) from None
            if not resumed:
                raise PermanentDeliveryError(
                    "X refused the post as a duplicate of one this account already made; "
                    "change the text"
                ) from None
            # An earlier attempt got through and only its answer was lost.
            tweet_id = self._find(text)
        except tweepy.TooManyRequests as exc:
            reset = exc.response.headers.get("x-rate-limit-reset")
            raise TransientDeliveryError(
                "X rate limit reached (429)", retry_at=float(reset) if reset else None
            ) from None
        except tweepy.Unauthorized:
            raise PermanentDeliveryError(
                "X rejected the credentials (401): check the four BROADCASTER_TWITTER_* variables "
                "(consumer key and secret, access token and secret of the posting account)"
            ) from None
        except tweepy.TwitterServerError as exc:
            raise TransientDeliveryError(f"X server error ({_detail(exc)})") from None
        except tweepy.HTTPException as exc:
            status = exc.response.status_code
            raise PermanentDeliveryError(f"X refused the post ({status}): {_detail(exc)}") from None
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"X: {network_problem(exc)}") from None
        if tweet_id:
            self._posted[key] = tweet_id
        return tweet_id

    def _find(self, text: str) -> str | None:
        """The id of this account's recent post with `text`, or None if X will not say."""
        import requests
        import tweepy

        try:
            me = self.client.get_me(user_auth=True).data["id"]
            recent = self.client.get_users_tweets(me, max_results=LOOKUP_DEPTH, user_auth=True).data
        except (tweepy.TweepyException, requests.RequestException):
            return None  # reading timelines needs a paid tier on X: the post exists all the same
        wanted = _comparable(text)
        for tweet in recent or []:
            if _comparable(tweet["text"]) == wanted:
                return str(tweet["id"])
        return None

    @property
    def client(self) -> tweepy.Client:
        if self._client is None:
            import tweepy

            from broadcaster.channels.http_session import ApiSession

            secret = {key: self.context.secrets[var].get_secret_value()
                      for key, var in self.spec.secrets.items()}
            client = tweepy.Client(**secret)
            client.session = ApiSession(X_HOST, self.settings.api_base, self.context.timeout)
            self._client = client
        return self._client


class _ReplyRefused(Exception):
    """X does not let this app reply here; the caller posts standalone instead."""


def _detail(exc: tweepy.HTTPException) -> str:
    messages = "; ".join(str(m) for m in exc.api_messages)
    return messages or f"{exc.response.status_code} {exc.response.reason}"


def _comparable(text: str) -> str:
    """X returns text with links as t.co and &, <, > escaped: compare what survives that."""
    return re.sub(r"https?://\S+", "<link>", html.unescape(text)).strip()
