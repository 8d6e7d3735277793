"""The company's Facebook Page, through facebook-sdk's `GraphAPI`.

The announcement is a Page feed post (`message`, and `link` = the statement, which Facebook
shows as a preview card). Updates and the resolution are comments on that post by default,
so the Page's readers find the whole incident under one post; `updates = "post"` makes each
a new post instead. Every post and comment carries the statement link.

facebook-sdk 3.1.0 (2018) needs three things done around it: its version check only knows
Graph 2.8–3.1, so the version is set after construction; its host is a module constant, so
the session points it at `api_base`; and it ignores HTTP status codes, so an HTML 502 from a
proxy surfaces as "Maintype was not text…" and the session's last response tells the truth.
A lost answer is settled by looking the post up before posting again, and by Graph's
duplicate refusal (506).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post
from broadcaster.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt

if TYPE_CHECKING:
    import facebook

    from broadcaster.channels.http_session import ApiSession

#: facebook-sdk's FACEBOOK_GRAPH_URL (the SDK is imported only when the channel sends).
GRAPH_HOST = "https://graph.facebook.com/"
#: Graph error codes that mean "slow down or try later": unknown, service down, app, user
#: and Page throttling, posting too fast, Page-level business use case limits.
TRANSIENT_CODES = {1, 2, 4, 17, 32, 341, 613, 80001}
TOKEN_EXPIRED = 190
DUPLICATE = 506
#: Permission errors: the token works but may not post on the Page.
PERMISSION_CODES = {10, *range(200, 300)}
#: How many of the Page's latest posts (or a post's latest comments) a lost answer is looked for in.
LOOKUP_DEPTH = 25
#: The Graph API version used unless the settings name another.
GRAPH_VERSION = "v25.0"
#: When each Graph API version stops working ("Available Until" in Meta's changelog,
#: developers.facebook.com/docs/graph-api/changelog/versions, read 2026-11-23). Versions
#: older than the oldest listed are retired; newer ones not listed yet have no date.
GRAPH_VERSION_ENDS = {
    "v20.0": date(2026, 9, 24), "v21.0": date(2027, 1, 21), "v22.0": date(2027, 5, 20),
    "v23.0": date(2027, 10, 8), "v24.0": date(2028, 2, 18), "v25.0": date(2028, 7, 29),
}
#: Warn this long before the configured version stops working.
GRAPH_VERSION_WARNING = timedelta(days=60)
#: What a Page token needs: posting on the Page, reading it (to settle a lost answer), and
#: commenting as the Page (updates are comments on the announcement).
PERMISSIONS = "pages_manage_posts, pages_read_engagement and pages_manage_engagement"


class FacebookSettings(ChannelSettings):
    required_when_enabled: ClassVar[Mapping[str, str]] = {"page_id": "the Page's numeric id"}
    #: The numeric id of the Page (Page settings → About → Page ID).
    page_id: str = Field("", pattern=r"^\d*$")
    #: Graph API version, such as v25.0 (facebook-sdk's own check knows only 2.8–3.1).
    graph_version: str = Field(GRAPH_VERSION, pattern=r"^v\d+\.\d+$")
    api_base: str = Field(GRAPH_HOST.rstrip("/"), pattern=r"^https?://[^/\s]+(/[^\s]*)?$")
    #: Updates and the resolution as comments on the announcement, or as new posts.
    updates: Literal["comment", "post"] = "comment"


class FacebookChannel(Channel):
    spec = ChannelSpec(
        name="facebook",
        summary="posts on the company's Facebook Page; updates as comments on the announcement",
        settings=FacebookSettings,
        secrets={"page_token": "BROADCASTER_FACEBOOK_PAGE_TOKEN"},
        limit=8000,  # a comment's limit (a post's is 63,206): every update fits either way
    )
    settings: FacebookSettings

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._graph: facebook.GraphAPI | None = None
        self._session: ApiSession | None = None

    def readiness(self, today: date) -> tuple[list[str], list[str]]:
        """Refuse a Graph API version Meta has retired; warn 60 days before it is."""
        version = self.settings.graph_version
        ends = GRAPH_VERSION_ENDS.get(version)
        oldest = min(GRAPH_VERSION_ENDS, key=_version_number)
        if ends is None and _version_number(version) < _version_number(oldest):
            ends = GRAPH_VERSION_ENDS[oldest]  # retired before the oldest still listed
        if ends is None:
            return [], []
        if today >= ends:
            return [f"graph_version {version} stopped working on {ends:%Y-%m-%d}: set "
                    f"[channels.facebook] graph_version = \"{GRAPH_VERSION}\""], []
        if ends - today <= GRAPH_VERSION_WARNING:
            return [], [f"graph_version {version} stops working on {ends:%Y-%m-%d} "
                        f"({(ends - today).days} days): move to {GRAPH_VERSION}"]
        return [], []

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        root = next((str(r.meta["post_id"]) for r in thread if r.meta.get("post_id")), None)
        if root and self.settings.updates == "comment":
            parent, edge, fields = root, "comments", {"message": post.text}
        else:
            root = None
            parent, edge, fields = self.settings.page_id, "feed", {"message": post.text, "link": post.link}
        if resumed:
            found = self._find(parent, edge, post.text)
            if found:
                return self._receipt(found, root, lookup=True)
        try:
            answer = self._call(lambda: self.graph.put_object(parent, edge, **fields))
        except _Duplicate:
            if not resumed:
                raise PermanentDeliveryError(
                    "Facebook refused the post as a duplicate of a recent one (506); change the text"
                ) from None
            return Receipt(url=None, meta={"post_id": root, "duplicate": True})
        return self._receipt(str(answer["id"]), root, lookup=False)

    def _receipt(self, object_id: str, root: str | None, *, lookup: bool) -> Receipt:
        if root:
            url = f"https://www.facebook.com/{root}?comment_id={object_id.rsplit('_', 1)[-1]}"
        else:
            url = f"https://www.facebook.com/{object_id}"
        meta: dict[str, object] = {"post_id": root or object_id, "kind": "comment" if root else "post"}
        if lookup:
            meta["found_after_lost_answer"] = True
        return Receipt(remote_id=object_id, url=url, meta=meta)

    def _find(self, parent: str, edge: str, text: str) -> str | None:
        """The id of a post (or comment) with `text` made by an attempt whose answer was lost."""
        extra = {"order": "reverse_chronological"} if edge == "comments" else {}
        answer = self._call(lambda: self.graph.get_connections(
            parent, edge, fields="id,message", limit=LOOKUP_DEPTH, **extra
        ))
        for item in answer.get("data", []):
            if item.get("message", "").strip() == text.strip():
                return str(item["id"])
        return None

    def _call(self, request: Callable[[], Any]) -> Any:
        """Run one Graph request, turning every way it can fail into a delivery error."""
        import facebook
        import requests

        from broadcaster.channels.http_session import network_problem

        try:
            return request()
        except facebook.GraphAPIError as exc:
            raise self._classify(exc) from None
        except (KeyError, requests.JSONDecodeError):
            raise self._unreadable() from None  # no content-type, or a broken JSON body
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"Facebook: {network_problem(exc)}") from None

    def _classify(self, exc: facebook.GraphAPIError) -> DeliveryError | _Duplicate:
        if exc.code is None:
            return self._unreadable()  # "Maintype was not text, image, or querystring"
        code = int(exc.code)
        error = exc.result.get("error", {}) if isinstance(exc.result, dict) else {}
        said = f"{exc.message} (code {code})"
        if code == DUPLICATE:
            return _Duplicate()
        if code in TRANSIENT_CODES or error.get("is_transient"):
            return TransientDeliveryError(f"Facebook is throttling or unavailable: {said}",
                                          retry_at=self._regain_access_at())
        if code == TOKEN_EXPIRED or (exc.type == "OAuthException" and code not in PERMISSION_CODES):
            return PermanentDeliveryError(
                f"Facebook rejected the Page token: {said}. Renew the Page access token and set "
                "BROADCASTER_FACEBOOK_PAGE_TOKEN, then run `broadcaster retry`"
            )
        if code in PERMISSION_CODES:
            return PermanentDeliveryError(
                f"the Page token may not post on Page {self.settings.page_id}: {said}. It needs "
                f"{PERMISSIONS} (commenting as the Page needs the last)"
            )
        return PermanentDeliveryError(f"Facebook refused the post: {said}")

    def _unreadable(self) -> DeliveryError:
        response = self.session.last_response
        status = response.status_code if response is not None else 0
        if status >= 500 or status == 0:
            return TransientDeliveryError(f"Facebook answered HTTP {status or '?'} without a Graph error")
        return PermanentDeliveryError(f"Facebook answered HTTP {status} without a Graph error")

    def _regain_access_at(self) -> float | None:
        """When throttling ends, from Graph's usage header (minutes), if it says."""
        response = self.session.last_response
        header = response.headers.get("x-business-use-case-usage") if response is not None else None
        try:
            usages = [u for entries in json.loads(header or "{}").values() for u in entries]
            minutes = max(float(u.get("estimated_time_to_regain_access", 0)) for u in usages)
        except (ValueError, TypeError, AttributeError):
            return None
        return time.time() + minutes * 60 if minutes > 0 else None

    @property
    def session(self) -> ApiSession:
        if self._session is None:
            from broadcaster.channels.http_session import ApiSession

            self._session = ApiSession(GRAPH_HOST, self.settings.api_base, self.context.timeout)
        return self._session

    @property
    def graph(self) -> facebook.GraphAPI:
        if self._graph is None:
            import facebook

            token = self.context.secrets[self.spec.secrets["page_token"]].get_secret_value()
            graph = facebook.GraphAPI(access_token=token, timeout=self.context.timeout, session=self.session)
            graph.version = self.settings.graph_version  # after construction: see the module doc
            self._graph = graph
        return self._graph


class _Duplicate(Exception):
    """Graph's 506: the same message was just posted."""


def _version_number(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in version.lstrip("v").split("."))
