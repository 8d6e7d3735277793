"""A stand-in for a Mastodon instance's API, as much of it as posting an incident thread touches.

`POST /api/v1/statuses` (form or JSON, as Mastodon accepts both), `GET /api/v1/statuses/:id`,
`GET /api/v1/accounts/verify_credentials`, `GET /api/v1/accounts/:id/statuses` and
`GET /api/v2/instance`. Requests carry `Authorization: Bearer <token>`, and each token has
scopes (401 for an unknown token, 403 "outside the authorized scopes" for a missing one).
Answers have Mastodon's shapes: a status with its HTML `content`; `{"error": …}` for errors;
422 "Validation failed: Text character limit of N exceeded" counted as Mastodon counts
(graphemes, a link 23); 404 "Record not found" for a reply to a deleted status; an
`Idempotency-Key` that returns the status already made for an hour; and `X-RateLimit-*`
headers (the reset as an ISO 8601 time) with a 429 once the statuses window is spent.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, RateWindow, StandIn, arguments, json_response

#: Made-up credentials the drill uses: they mean something only to this stand-in.
DRILL_TOKEN = "drill-mastodon-token"
DRILL_SCOPES = frozenset({"write:statuses", "read:accounts", "read:statuses"})
#: Statuses per account per 3 hours (Mastodon's `statuses` throttle).
POST_LIMIT = 300
WINDOW_SECONDS = 3 * 3600
#: How long Mastodon keeps an Idempotency-Key.
IDEMPOTENCY_SECONDS = 3600
_LINK = re.compile(r"https?://[^\s<>\"]+?(?=[.,;:!?)\]'\"]*(?:\s|$))")


@dataclass
class Status:
    id: str
    text: str
    in_reply_to: str | None
    visibility: str
    language: str | None
    created_at: float = field(default_factory=time.time)
    deleted: bool = False


def mastodon_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


class MastodonStandIn(StandIn):
    name = "Mastodon API stand-in"
    url_map = Map([
        Rule("/api/v1/statuses", methods=["POST"], endpoint="create_status"),
        Rule("/api/v1/statuses/<status_id>", methods=["GET"], endpoint="get_status"),
        Rule("/api/v1/statuses/<status_id>", methods=["DELETE"], endpoint="delete_status"),
        Rule("/api/v1/accounts/verify_credentials", methods=["GET"], endpoint="verify_credentials"),
        Rule("/api/v1/accounts/<account_id>/statuses", methods=["GET"], endpoint="account_statuses"),
        Rule("/api/v2/instance", methods=["GET"], endpoint="instance"),
        # Rails ignores a trailing slash, and Mastodon.py asks for /api/v2/instance/.
        Rule("/api/v2/instance/", methods=["GET"], endpoint="instance"),
    ])

    def __init__(self, token: str = DRILL_TOKEN, scopes: frozenset[str] = DRILL_SCOPES, *,
                 username: str = "examplecorp", max_characters: int = 500,
                 post_limit: int = POST_LIMIT) -> None:
        super().__init__()
        self.tokens = {token: scopes}
        self.username = username
        self.account_id = "109876543210987654"
        self.max_characters = max_characters
        self.window = RateWindow(post_limit, WINDOW_SECONDS)
        #: Answer /api/v2/instance with 404, as an older or trimmed-down server does.
        self.hide_instance = False
        self.statuses: dict[str, Status] = {}
        self._ids = itertools.count(113500000000000000)
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}

    # -- scripted faults in Mastodon's shapes ------------------------------------------------

    @staticmethod
    def rate_limited(reset_in: float) -> Fault:
        """A 429 whose reset is `reset_in` seconds after the request arrives."""
        def headers() -> dict[str, str]:
            return {"X-RateLimit-Limit": str(POST_LIMIT), "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": _iso(time.time() + reset_in)}

        return Fault(status=429, body={"error": "Too many requests"}, headers=headers)

    @staticmethod
    def server_error(status: int = 503) -> Fault:
        return Fault(status=status, body={"error": "We're sorry, but something went wrong on our end."})

    # -- what happened, for the drill and the tests ----------------------------------------

    def posted(self) -> list[Status]:
        return [s for s in self.statuses.values() if not s.deleted]

    def thread(self, first_id: str) -> list[Status]:
        """The reply chain that starts at `first_id`, in order."""
        chain = [self.statuses[first_id]]
        while True:
            replies = [s for s in self.posted() if s.in_reply_to == chain[-1].id]
            if not replies:
                return chain
            chain.append(replies[0])

    def length(self, text: str) -> int:
        """Mastodon's count: graphemes, every link 23."""
        import regex

        return len(regex.findall(r"\X", _LINK.sub("x" * 23, text)))

    # -- endpoints -------------------------------------------------------------------------

    def on_create_status(self, request: Request) -> Response:
        token = self._token(request)
        if "write:statuses" not in self.tokens[token] and "write" not in self.tokens[token]:
            return mastodon_error("This action is outside the authorized scopes", 403)
        form = {k: str(v) for k, v in arguments(request).items() if v is not None}
        text = form.get("status") or ""
        if not text.strip():
            return mastodon_error("Validation failed: Text can't be blank", 422)
        if self.length(text) > self.max_characters:
            return mastodon_error(
                f"Validation failed: Text character limit of {self.max_characters} exceeded", 422)
        visibility = form.get("visibility") or "public"
        if visibility not in ("public", "unlisted", "private", "direct"):
            return mastodon_error("Validation failed: Visibility is not included in the list", 422)
        parent = form.get("in_reply_to_id") or None
        key = request.headers.get("Idempotency-Key")
        with self.lock:
            if key and (token, key) in self._keys:
                made, at = self._keys[(token, key)]
                if time.time() - at < IDEMPOTENCY_SECONDS:
                    return json_response(self._view(self.statuses[made]), 200, self._limit_headers())
            if parent is not None and (parent not in self.statuses or self.statuses[parent].deleted):
                return mastodon_error("Record not found", 404)
            if not self.window.spend():
                return mastodon_error("Too many requests", 429, self._limit_headers())
            headers = self._limit_headers()
            status = Status(str(next(self._ids)), text, parent, visibility, form.get("language") or None)
            self.statuses[status.id] = status
            if key:
                self._keys[(token, key)] = (status.id, time.time())
        return json_response(self._view(status), 200, headers)

    def on_get_status(self, request: Request, status_id: str) -> Response:
        status = self.statuses.get(status_id)
        if status is None or status.deleted:
            return mastodon_error("Record not found", 404)
        return json_response(self._view(status))

    def on_delete_status(self, request: Request, status_id: str) -> Response:
        with self.lock:
            status = self.statuses.get(status_id)
            if status is None or status.deleted:
                return mastodon_error("Record not found", 404)
            status.deleted = True
        return json_response({**self._view(status), "text": status.text})

    def on_verify_credentials(self, request: Request) -> Response:
        scopes = self.tokens[self._token(request)]
        if not scopes & {"read", "read:accounts", "profile"}:
            return mastodon_error("This action is outside the authorized scopes", 403)
        return json_response(self._account())

    def on_account_statuses(self, request: Request, account_id: str) -> Response:
        if not self.tokens[self._token(request)] & {"read", "read:statuses"}:
            return mastodon_error("This action is outside the authorized scopes", 403)
        if account_id != self.account_id:
            return mastodon_error("Record not found", 404)
        try:
            wanted = min(40, max(1, int(request.args.get("limit", "20"))))
        except ValueError:
            wanted = 20
        with self.lock:
            newest = sorted(self.posted(), key=lambda s: int(s.id), reverse=True)[:wanted]
        return Response(json.dumps([self._view(s) for s in newest]), 200,
                        content_type="application/json; charset=utf-8")

    def on_instance(self, request: Request) -> Response:
        if self.hide_instance:
            return mastodon_error("Record not found", 404)
        return json_response({
            "domain": request.host, "title": "Stand-in", "version": "4.5.0",
            "configuration": {
                "urls": {"streaming": f"ws://{request.host}"},
                "statuses": {"max_characters": self.max_characters, "max_media_attachments": 4,
                             "characters_reserved_per_url": 23},
            },
        })

    def authenticate(self, request: Request) -> Response | None:
        public = request.path.rstrip("/") == "/api/v2/instance" or (
            request.method == "GET" and request.path.startswith("/api/v1/statuses/"))
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token in self.tokens or (public and not header):
            return None
        return mastodon_error("The access token is invalid", 401)

    def not_found(self, request: Request) -> Response:
        return mastodon_error("Record not found", 404)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _token(request: Request) -> str:
        return request.headers.get("Authorization", "")[7:]

    def _limit_headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.window.limit),
                "X-RateLimit-Remaining": str(self.window.remaining),
                "X-RateLimit-Reset": _iso(self.window.reset)}

    def _account(self) -> dict[str, Any]:
        return {"id": self.account_id, "username": self.username, "acct": self.username,
                "display_name": "Example Corp", "url": f"https://mastodon.example/@{self.username}"}

    def _view(self, status: Status) -> dict[str, Any]:
        return {
            "id": status.id, "uri": f"https://mastodon.example/users/{self.username}/statuses/{status.id}",
            "url": f"https://mastodon.example/@{self.username}/{status.id}",
            "created_at": _iso(status.created_at), "content": content_html(status.text),
            "in_reply_to_id": status.in_reply_to,
            "in_reply_to_account_id": self.account_id if status.in_reply_to else None,
            "visibility": status.visibility, "language": status.language, "account": self._account(),
            "mentions": [], "tags": [], "emojis": [], "media_attachments": [],
        }


def content_html(text: str) -> str:
    """A plain-text status as Mastodon renders it: paragraphs, line breaks, linked URLs."""
    def linked(line: str) -> str:
        out, last = [], 0
        for match in _LINK.finditer(line):
            url = match.group(0)
            scheme, rest = url.split("://", 1)
            out += [html.escape(line[last:match.start()], quote=False),
                    f'<a href="{html.escape(url)}" rel="nofollow noopener" translate="no" target="_blank">'
                    f'<span class="invisible">{scheme}://</span><span class="">{html.escape(rest)}</span>'
                    '<span class="invisible"></span></a>']
            last = match.end()
        return "".join([*out, html.escape(line[last:], quote=False)])

    return "".join("<p>" + "<br />".join(linked(line) for line in paragraph.split("\n")) + "</p>"
                   for paragraph in re.split(r"\n\s*\n", text.strip()))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
