"""Twitter / X: the incident as one thread, through tweepy's `Client.create_tweet`.

The announcement starts the thread; every update and the resolution reply to the
incident's last post (`in_reply_to_tweet_id`, kept in the ledger as each delivery's
receipt), so a follower who finds any post sees the whole incident. The statement link is
always in the first post of each update; a text that does not fit X's weighted 280 is
shortened at a word boundary, or with `thread_long` continued in replies.

A post whose answer was lost (a timeout, a dropped connection) may exist. The retry posts the
same text again, and X refuses it as duplicate content: that refusal means "already
posted", so it is recorded as sent and the post's id is looked up, never posted twice.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import Field

from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.channels.tweet_text import LIMIT, split, weighted_length
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt
from broadcaster.render import Page

if TYPE_CHECKING:
    import tweepy

X_HOST = "https://api.twitter.com"
#: What X answers (403, v2 `detail`) when the same account posts the same text again.
DUPLICATE = "duplicate content"
#: How many of the account's latest posts a lost answer is looked for in.
LOOKUP_DEPTH = 20


class TwitterSettings(ChannelSettings):
    api_base: str = Field(X_HOST, pattern=r"^https?://[^/\s]+(/[^\s]*)?$")
    #: Continue a text too long for one post in replies, instead of shortening it.
    thread_long: bool = False


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

    def length(self, text: str) -> int:
        return weighted_length(text)

    def compose(self, page: Page) -> Post:
        post = super().compose(page)
        cut = split(post.text, post.link, thread=self.settings.thread_long)
        notes: tuple[str, ...] = ()
        if cut.shortened and len(cut.parts) == 1:
            notes = ("the text is longer than X allows and was shortened (set thread_long = true "
                     "to continue it in replies)",)
        elif cut.shortened:
            replies = len(cut.parts) - 1
            notes = (f"the text is longer than X allows and continues in {replies} "
                     f"{'reply' if replies == 1 else 'replies'}",)
        return Post(text=cut.parts[0], link=post.link, continuation=tuple(cut.parts[1:]), notes=notes)

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        reply_to = next((r.remote_id for r in reversed(thread) if r.remote_id), None)
        ids: list[str | None] = []
        for text in (post.text, *post.continuation):
            tweet_id = self._post_once(text, reply_to, resumed=resumed)
            ids.append(tweet_id)
            reply_to = tweet_id or reply_to
        first = ids[0]
        return Receipt(
            remote_id=reply_to,
            url=f"https://x.com/i/web/status/{first}" if first else None,
            meta={"ids": ids, "in_reply_to": thread[-1].remote_id if thread else None},
        )

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


def _detail(exc: tweepy.HTTPException) -> str:
    messages = "; ".join(str(m) for m in exc.api_messages)
    return messages or f"{exc.response.status_code} {exc.response.reason}"


def _comparable(text: str) -> str:
    """X returns text with links as t.co and &, <, > escaped: compare what survives that."""
    return re.sub(r"https?://\S+", "<link>", html.unescape(text)).strip()
