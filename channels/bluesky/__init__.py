"""Bluesky: the incident as one thread of `app.bsky.feed.post` records, through the atproto SDK.

The account logs in to its PDS with an app password (`com.atproto.server.createSession`);
the SDK refreshes the session before it expires, and a session the PDS says has expired is
opened again once. Every post carries the statement link twice over: in the text, made
clickable by a link facet whose byte offsets are counted in UTF-8 (the AT Protocol counts
bytes, not characters), and as an external card (`app.bsky.embed.external`). Updates reply to
the incident's last post, with `reply.root` the announcement and `reply.parent` the post before.

Length is 300 graphemes, as Bluesky counts.

Each post's record key is derived from the update (a TID built from the update's time and a
hash of its id), so one post has one address whatever happens to the answer. After a lost
answer the retry reads that address first (`com.atproto.repo.getRecord`) and records the post
if it is there; otherwise it creates it, and the PDS refuses a second record at the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from broadcaster.channels import graphemes
from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt

if TYPE_CHECKING:
    from atproto import Client

    from broadcaster.render import Page

PDS = "https://bsky.social"
LIMIT = 300
COLLECTION = "app.bsky.feed.post"
#: The characters of a TID, in sort order (base32-sortable).
_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"
_HANDLE = r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"


class BlueskySettings(ChannelSettings):
    required_when_enabled: ClassVar[Mapping[str, str]] = {"handle": "such as examplecorp.bsky.social"}
    #: The account's handle, such as examplecorp.bsky.social or status.example.com.
    handle: str = Field("", pattern=f"({_HANDLE})|^$")
    #: The account's PDS (its host: bsky.social for most accounts).
    api_base: str = Field(PDS, pattern=r"^https?://[^/\s]+(/[^\s]*)?$")


class BlueskyChannel(Channel):
    spec = ChannelSpec(
        name="bluesky",
        summary="posts on Bluesky; each update replies in the incident's thread",
        settings=BlueskySettings,
        secrets={"app_password": "BROADCASTER_BLUESKY_APP_PASSWORD"},
        limit=LIMIT,
    )
    settings: BlueskySettings
    replies = True
    templates_package = "broadcaster.channels.bluesky.templates"

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._client: Client | None = None
        self._did: str | None = None

    def length(self, text: str) -> int:
        return graphemes.count(text)

    def compose(self, page: Page) -> Post:
        post = super().compose(page)
        card = {"createdAt": page.update.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "uri": post.link, "title": page.incident.title(page.locale),
                "description": page.settings.organization.name}
        return replace(post, rich=json.dumps(card, ensure_ascii=False))

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        card = json.loads(post.rich or "{}")
        created = datetime.fromisoformat(card["createdAt"]) if card else datetime.now(UTC)
        root = next(({"uri": r.meta["uri"], "cid": r.meta["cid"]} for r in thread if r.meta.get("uri")), None)
        parent = next(({"uri": r.meta["last_uri"], "cid": r.meta["last_cid"]} for r in reversed(thread)
                       if r.meta.get("last_uri")), root)
        first: dict[str, str] | None = None
        for number, text in enumerate((post.text, *post.continuation)):
            at = created + timedelta(microseconds=number)
            record = self._record(text, at, post, card if number == 0 else None, root, parent)
            made = self._create(record_key(post.update_id, at), record, resumed=resumed)
            first = first or made
            root = root or made
            parent = made
        assert first is not None and parent is not None  # the text is never empty
        handle = self.settings.handle
        url = f"https://bsky.app/profile/{handle}/post/{first['uri'].rsplit('/', 1)[-1]}"
        assert root is not None
        # The thread's root (the announcement) and this update's last post, which the next replies to.
        return Receipt(remote_id=parent["uri"], url=url, meta={
            "uri": root["uri"], "cid": root["cid"], "first_uri": first["uri"],
            "last_uri": parent["uri"], "last_cid": parent["cid"]})

    def _record(self, text: str, at: datetime, post: Post, card: dict[str, str] | None,
                root: dict[str, str] | None, parent: dict[str, str] | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "$type": COLLECTION, "text": text, "createdAt": at.isoformat(timespec="microseconds")
            .replace("+00:00", "Z"), "facets": link_facets(text)}
        if post.locale:
            record["langs"] = [post.locale]
        if card:
            record["embed"] = {"$type": "app.bsky.embed.external", "external": {
                "uri": card["uri"], "title": card["title"], "description": card["description"]}}
        if root and parent:
            record["reply"] = {"root": root, "parent": parent}
        return record

    def _create(self, rkey: str, record: dict[str, Any], *, resumed: bool) -> dict[str, str]:
        """Create the record at `rkey` (its uri and cid), or find it there after a lost answer."""
        from atproto import models

        did = self.did
        if resumed:
            found = self._existing(did, rkey)
            if found:
                return found
        try:
            made = self._call(lambda: self.client.com.atproto.repo.create_record(
                models.ComAtprotoRepoCreateRecord.Data(repo=did, collection=COLLECTION, rkey=rkey,
                                                       record=record, validate=True)))
        except _Conflict:
            found = self._existing(did, rkey)
            if found is None:
                raise TransientDeliveryError("Bluesky says the post exists but does not show it") from None
            return found
        return {"uri": made.uri, "cid": made.cid}

    def _existing(self, did: str, rkey: str) -> dict[str, str] | None:
        from atproto import models

        try:
            found = self._call(lambda: self.client.com.atproto.repo.get_record(
                models.ComAtprotoRepoGetRecord.Params(repo=did, collection=COLLECTION, rkey=rkey)))
        except _NotFound:
            return None
        return {"uri": found.uri, "cid": found.cid or ""}

    @property
    def did(self) -> str:
        if self._did is None:
            self._login()
        assert self._did is not None
        return self._did

    def _login(self) -> None:
        password = self.context.secrets.get(self.spec.secrets["app_password"])
        secret = password.get_secret_value() if password else ""
        self._call(lambda: self.client.login(self.settings.handle, secret, fetch_bsky_profile=False),
                   logging_in=True)
        self._did = self._call(lambda: self.client.com.atproto.server.get_session()).did

    def _call(self, request: Callable[[], Any], *, logging_in: bool = False) -> Any:
        """Run one XRPC request, turning every way it can fail into a delivery error. A session
        the PDS calls expired is opened again once."""
        import httpx
        from atproto import exceptions

        try:
            return request()
        except httpx.TransportError as exc:  # a dropped connection the SDK passes on as it is
            raise TransientDeliveryError(
                f"Bluesky: {type(exc).__name__} from {self.settings.api_base}") from None
        except exceptions.BadRequestError as exc:
            error, message = _xrpc(exc)
            if error == "ExpiredToken" and not logging_in:
                self._login()
                return self._call(request, logging_in=True)
            if error == "RecordNotFound" or (error == "InvalidRequest" and "not found" in message.lower()):
                raise _NotFound() from None
            if "already exists" in message.lower():
                raise _Conflict() from None
            raise PermanentDeliveryError(f"Bluesky refused the post ({error}): {message}") from None
        except exceptions.UnauthorizedError as exc:
            error, message = _xrpc(exc)
            if logging_in:
                raise PermanentDeliveryError(
                    f"Bluesky did not accept the handle and app password ({error}: {message}): check "
                    f"[channels.bluesky] handle ({self.settings.handle}) and "
                    "BROADCASTER_BLUESKY_APP_PASSWORD (Settings → Privacy and security → App passwords)"
                ) from None
            raise PermanentDeliveryError(f"Bluesky refused the request ({error}): {message}") from None
        except exceptions.RateLimitExceededError as exc:
            reset = exc.reset_at
            raise TransientDeliveryError("Bluesky rate limit reached (429)",
                                         retry_at=reset.timestamp() if reset else None) from None
        except exceptions.NetworkError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 409:
                raise _Conflict() from None
            said = f"HTTP {status}" if status else type(exc.__cause__ or exc).__name__
            raise TransientDeliveryError(f"Bluesky: {said} from {self.settings.api_base}") from None
        except exceptions.RequestException as exc:
            status = exc.response.status_code if exc.response is not None else 0
            error, message = _xrpc(exc)
            if status >= 500:
                raise TransientDeliveryError(f"Bluesky server error ({status} {error})") from None
            raise PermanentDeliveryError(
                f"Bluesky refused the request ({status} {error}): {message}") from None

    @property
    def client(self) -> Client:
        if self._client is None:
            from atproto import Client
            from atproto_client.request import Request

            request = Request(timeout=self.context.timeout, trust_env=False)
            self._client = Client(base_url=self.settings.api_base.rstrip("/") + "/xrpc", request=request)
        return self._client


class _NotFound(Exception):
    """No record at that key."""


class _Conflict(Exception):
    """A record is already at that key."""


def link_facets(text: str) -> list[dict[str, Any]]:
    """A link facet for every URL in `text`, its span in UTF-8 bytes as the AT Protocol counts."""
    facets = []
    for match in graphemes.URL.finditer(text):
        start = len(text[:match.start()].encode())
        end = start + len(match.group(0).encode())
        facets.append({"index": {"byteStart": start, "byteEnd": end},
                       "features": [{"$type": "app.bsky.richtext.facet#link", "uri": match.group(0)}]})
    return facets


def record_key(update_id: str, at: datetime) -> str:
    """A TID (the key Bluesky posts have) for one part of one update: its time in
    microseconds and a clock id from the update's id, so every attempt names the same record."""
    micros = int(at.timestamp() * 1_000_000)
    clock = int(hashlib.sha256(update_id.encode()).hexdigest(), 16) % 1024
    number = (micros << 10) | clock
    return "".join(_TID_CHARS[(number >> shift) & 31] for shift in range(60, -1, -5))


def _xrpc(exc: Any) -> tuple[str, str]:
    """The XRPC error name and message an error response carried."""
    content = exc.response.content if exc.response is not None else None
    error = str(getattr(content, "error", "") or "")
    message = str(getattr(content, "message", "") or "")
    if not error and isinstance(content, bytes | str):
        raw = content if isinstance(content, str) else content.decode(errors="replace")
        message = re.sub(r"\s+", " ", raw)
    return error or "error", message[:200]
