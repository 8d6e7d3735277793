"""Mastodon: the incident as one thread on the company's account, through Mastodon.py.

The announcement is a public status (`POST /api/v1/statuses`); every update and the
resolution reply to the incident's last status (`in_reply_to_id`), so a follower who finds any
of them sees the whole incident. Every status carries the statement link.

Length is the instance's: 500 graphemes unless `/api/v2/instance` says otherwise (many
instances allow more), with every link counting 23 whatever its length, and a mention
`@user@domain` counting as `@user`, as Mastodon's own validator does.

A status whose answer was lost may exist. Each request carries an `Idempotency-Key` derived
from the update and the part, and Mastodon answers a repeated key (for an hour) with the status
it already made instead of posting again. A retry later than that first looks for the status
among the account's latest ones, and only posts when it is not there.

This channel ships as a plugin would: its templates are in `templates/` beside this module, and
it registers through the `broadcaster.channels` entry point.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from broadcaster.channels import graphemes
from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt

if TYPE_CHECKING:
    import mastodon

#: Mastodon's default limit (`MAX_CHARS`); an instance may set its own.
LIMIT = 500
#: What every link counts, whatever its length (`characters_reserved_per_url`).
URL_LENGTH = 23
#: How many of the account's latest statuses a lost answer is looked for in (the API's maximum).
LOOKUP_DEPTH = 40
#: What the access token needs: posting, and reading the account's own statuses back.
SCOPES = "write:statuses, read:accounts and read:statuses"
_MENTION = re.compile(r"(?<![\w/])@(\w+)@[\w.-]+\w", re.ASCII)


class MastodonSettings(ChannelSettings):
    required_when_enabled: ClassVar[Mapping[str, str]] = {
        "api_base": "the instance's address, such as https://mastodon.social"}
    #: The instance the account lives on, such as https://mastodon.social.
    api_base: str = Field("", pattern=r"^(https?://[^/\s]+(/[^\s]*)?)?$")
    #: Who sees the statuses: on public timelines, or only on the profile and to followers.
    visibility: Literal["public", "unlisted"] = "public"
    #: The instance's limit, if it does not publish it in /api/v2/instance.
    max_characters: int | None = Field(None, ge=140)
    #: Continue a text too long for one status in replies, instead of shortening it.
    thread_long: bool = False


class MastodonChannel(Channel):
    spec = ChannelSpec(
        name="mastodon",
        summary="posts on Mastodon; each update replies in the incident's thread",
        settings=MastodonSettings,
        secrets={"access_token": "BROADCASTER_MASTODON_ACCESS_TOKEN"},
        limit=LIMIT,
    )
    settings: MastodonSettings
    replies = True
    templates_package = "broadcaster.channels.mastodon.templates"

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._client: mastodon.Mastodon | None = None
        self._instance: tuple[int, int, str | None] | None = None
        # (text, in_reply_to) -> id of statuses this process made, so a retry after a later
        # part failed does not repeat the parts that went out.
        self._posted: dict[tuple[str, str | None], tuple[str, str | None]] = {}

    # -- length ----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limits()[0]

    def length(self, text: str) -> int:
        per_url = self._limits()[1]
        countable = graphemes.URL.sub("x" * per_url, text)
        return graphemes.count(_MENTION.sub(r"@\1", countable))

    @property
    def thread_long(self) -> bool:
        return self.settings.thread_long

    def readiness(self, today: date) -> tuple[list[str], list[str]]:
        """Warn when the instance did not say its limit (500 graphemes assumed)."""
        problem = self._limits()[2]
        return [], [problem] if problem else []

    def _limits(self) -> tuple[int, int, str | None]:
        """(limit, what a link counts, why the defaults are used), read once from the instance."""
        if self._instance is None:
            if self.settings.max_characters:
                self._instance = (self.settings.max_characters, URL_LENGTH, None)
            elif not self.settings.api_base:
                self._instance = (LIMIT, URL_LENGTH, None)
            else:
                self._instance = self._read_instance()
        return self._instance

    def _read_instance(self) -> tuple[int, int, str | None]:
        try:
            statuses = self._call(lambda: self.client.instance_v2())["configuration"]["statuses"]
            return int(statuses["max_characters"]), int(statuses.get("characters_reserved_per_url",
                                                                     URL_LENGTH)), None
        except (DeliveryError, KeyError, TypeError, ValueError) as exc:
            return LIMIT, URL_LENGTH, (f"the instance did not say its status limit ({exc}): {LIMIT} "
                                       "characters assumed; set max_characters if it allows more")

    # -- sending ---------------------------------------------------------------------------

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        reply_to = next((r.remote_id for r in reversed(thread) if r.remote_id), None)
        ids: list[str] = []
        url: str | None = None
        standalone = 0
        for number, text in enumerate((post.text, *post.continuation)):
            try:
                status_id, status_url = self._post_once(post, number, text, reply_to, resumed=resumed)
            except _ParentGone:
                # The status to reply to was deleted: this one starts afresh, with the link.
                alone = text if number == 0 else f"{text}\n\n{post.link}"
                status_id, status_url = self._post_once(post, number, alone, None, resumed=resumed)
                standalone += 1
            ids.append(status_id)
            url = url or status_url
            reply_to = status_id
        meta: dict[str, object] = {"ids": ids, "in_reply_to": thread[-1].remote_id if thread else None}
        if standalone:
            meta["note"] = ("the status this update replies to was deleted on Mastodon; posted "
                            "standalone with the statement link")
        return Receipt(remote_id=reply_to, url=url, meta=meta)

    def _post_once(self, post: Post, number: int, text: str, reply_to: str | None, *,
                   resumed: bool) -> tuple[str, str | None]:
        key = (text, reply_to)
        if key in self._posted:
            return self._posted[key]
        found = self._find(text, reply_to) if resumed else None
        if found is None:
            status = self._call(lambda: self.client.status_post(
                text, in_reply_to_id=reply_to, visibility=self.settings.visibility,
                language=post.locale or None, idempotency_key=idempotency_key(post, number, text, reply_to),
            ), replying=reply_to is not None)
            found = str(status["id"]), status.get("url")
        self._posted[key] = found
        return found

    def _find(self, text: str, reply_to: str | None) -> tuple[str, str | None] | None:
        """The status with `text` an attempt whose answer was lost made, if the account shows it."""
        try:
            me = self._call(lambda: self.client.me())
            recent = self._call(lambda: self.client.account_statuses(me["id"], limit=LOOKUP_DEPTH))
        except DeliveryError:
            return None  # the idempotency key still stops a second post within the hour
        wanted = _comparable(text)
        for status in recent or []:
            if (_comparable(plain_text(status.get("content") or "")) == wanted
                    and (status.get("in_reply_to_id") or None) == reply_to):
                return str(status["id"]), status.get("url")
        return None

    def _call(self, request: Callable[[], Any], *, replying: bool = False) -> Any:
        """Run one API request, turning every way it can fail into a delivery error."""
        import mastodon

        try:
            return request()
        except mastodon.MastodonRatelimitError:
            reset = self.client.ratelimit_reset
            raise TransientDeliveryError("Mastodon rate limit reached (429)",
                                         retry_at=float(reset) if reset else None) from None
        except mastodon.MastodonNetworkError as exc:
            raise TransientDeliveryError(f"Mastodon: {_network(exc)} to {self.settings.api_base}") from None
        except mastodon.MastodonUnauthorizedError:
            raise PermanentDeliveryError(
                "Mastodon rejected the access token (401): check BROADCASTER_MASTODON_ACCESS_TOKEN "
                f"(Preferences → Development → your application, on {self.settings.api_base})"
            ) from None
        except mastodon.MastodonNotFoundError as exc:
            if replying:
                raise _ParentGone() from None
            raise PermanentDeliveryError(f"Mastodon: not found (404): {_said(exc)}") from None
        except mastodon.MastodonServerError as exc:
            raise TransientDeliveryError(f"Mastodon server error ({_said(exc)})") from None
        except mastodon.MastodonAPIError as exc:
            status = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
            if status == 403:
                raise PermanentDeliveryError(
                    f"Mastodon refused the token (403): {_said(exc)}. It needs the scopes {SCOPES}"
                ) from None
            if status == 422:
                raise PermanentDeliveryError(f"Mastodon refused the status (422): {_said(exc)}") from None
            raise PermanentDeliveryError(f"Mastodon refused the request ({status}): {_said(exc)}") from None

    @property
    def client(self) -> mastodon.Mastodon:
        if self._client is None:
            import mastodon

            from broadcaster.channels.http_session import ApiSession

            token = self.context.secrets.get(self.spec.secrets["access_token"])
            base = self.settings.api_base.rstrip("/")
            self._client = mastodon.Mastodon(
                access_token=token.get_secret_value() if token else None, api_base_url=base,
                request_timeout=self.context.timeout, ratelimit_method="throw",
                session=ApiSession(base, base, self.context.timeout), user_agent="broadcaster",
            )
        return self._client


class _ParentGone(Exception):
    """The status to reply to no longer exists; the caller posts standalone instead."""


def idempotency_key(post: Post, number: int, text: str, reply_to: str | None) -> str:
    """The same for every attempt at one part of one update's status, and only for it."""
    digest = hashlib.sha256(f"{post.update_id}\n{number}\n{reply_to}\n{text}".encode()).hexdigest()
    return f"broadcaster-{digest[:40]}"


def plain_text(content: str) -> str:
    """A status's HTML `content` as the text that was posted (paragraphs, line breaks, links)."""
    text = re.sub(r"<br\s*/?>", "\n", content)
    text = re.sub(r"</p>\s*<p>", "\n\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _comparable(text: str) -> str:
    return " ".join(text.split())


def _said(exc: Exception) -> str:
    """What Mastodon said: the `error` of its answer, else the HTTP reason."""
    args = exc.args
    if len(args) >= 4 and args[3]:
        return str(args[3])
    if len(args) >= 3:
        return f"{args[1]} {args[2]}"
    return str(exc)


def _network(exc: Exception) -> str:
    """A network failure without the URL (Mastodon.py puts the whole request in its message)."""
    text = str(exc)
    return "timed out" if "timed out" in text.lower() or "timeout" in text.lower() else "connection failed"
