"""A stand-in for the Facebook Graph API: a Page's feed, its posts' comments, edits.

`POST /{version}/{page-id}/feed` (`message`, `link`), `POST /{version}/{post-id}/comments`,
`POST /{version}/{post-id}` (edit), and the matching `GET`s used to look a post up. Requests
are form-encoded (or query strings) with `access_token`, as facebook-sdk sends them, and
errors come back in Graph's shape, `{"error": {"message", "type", "code", "fbtrace_id"}}`,
including 506 for a duplicate status message and 190 for an expired token. Versions Meta has
retired (facebook-sdk's own 2.8–3.1 among them) are refused, so a client that forgot to set
a current version fails here as it would there.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, StandIn, json_response

#: The oldest Graph API version the stand-in (like Meta, late 2026: v20.0 ended 2026-09-24)
#: still serves.
OLDEST_VERSION = (21, 0)
DRILL_PAGE_ID = "104857600000001"
DRILL_PAGE_TOKEN = "drill-page-token"


def graph_error(message: str, code: int, kind: str = "OAuthException", **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, **extra,
                      "fbtrace_id": "A" + secrets.token_urlsafe(16)}}


@dataclass
class GraphPost:
    id: str
    message: str
    link: str | None
    created_time: float = field(default_factory=time.time)
    comments: list[GraphPost] = field(default_factory=list)
    edits: int = 0


class GraphStandIn(StandIn):
    name = "Graph API stand-in"
    url_map = Map([
        Rule("/<version>/<object_id>/feed", methods=["POST"], endpoint="create_post"),
        Rule("/<version>/<object_id>/feed", methods=["GET"], endpoint="list_posts"),
        Rule("/<version>/<object_id>/comments", methods=["POST"], endpoint="create_comment"),
        Rule("/<version>/<object_id>/comments", methods=["GET"], endpoint="list_comments"),
        Rule("/<version>/<object_id>", methods=["POST"], endpoint="edit_post"),
    ])

    def __init__(self, page_id: str = DRILL_PAGE_ID, page_token: str = DRILL_PAGE_TOKEN) -> None:
        super().__init__()
        self.page_id = page_id
        self.page_token = page_token
        self.posts: dict[str, GraphPost] = {}
        self._ids = itertools.count(1_000_000_001)

    # -- scripted faults in Graph's shapes -------------------------------------------------

    @staticmethod
    def throttled(code: int = 4, regain_minutes: int = 0) -> Fault:
        messages = {4: "(#4) Application request limit reached", 17: "(#17) User request limit reached",
                    32: "(#32) Page request limit reached",
                    613: "(#613) Calls to this api have exceeded the rate limit."}
        headers = {}
        if regain_minutes:
            usage = {DRILL_PAGE_ID: [{"type": "pages", "call_count": 100, "total_cputime": 10,
                                      "total_time": 10, "estimated_time_to_regain_access": regain_minutes}]}
            headers["x-business-use-case-usage"] = json.dumps(usage)
        return Fault(status=400 if code != 613 else 403, headers=headers,
                     body=graph_error(messages.get(code, f"(#{code}) Rate limited"), code,
                                      is_transient=True))

    @staticmethod
    def token_expired() -> Fault:
        return Fault(status=400, body=graph_error(
            "Error validating access token: Session has expired on Sunday, 22-Nov-26 01:00:00 PST.",
            190, error_subcode=463))

    @staticmethod
    def server_error(status: int = 500) -> Fault:
        return Fault(status=status, body=graph_error(
            "An unexpected error has occurred. Please retry your request later.", 2, is_transient=True))

    # -- what happened, for the drill and the tests ----------------------------------------

    def feed(self) -> list[GraphPost]:
        """The Page's posts, oldest first."""
        return list(self.posts.values())

    # -- endpoints -------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        version = request.path.split("/")[1]
        try:
            major, minor = (int(p) for p in version.removeprefix("v").split("."))
            known = version.startswith("v")
        except ValueError:
            known = False
        if not known:
            return self._error(f"Unknown path components: /{version}", 2500)
        if (major, minor) < OLDEST_VERSION:
            return self._error(f"Graph API {version} is no longer available. Upgrade to a current "
                               "version of the Graph API.", 2635)
        token = request.form.get("access_token") or request.args.get("access_token")
        if not token:
            return self._error("An active access token must be used to query information about the "
                               "current user.", 2500)
        if token != self.page_token:
            return self._error("Invalid OAuth access token - Cannot parse access token", 190)
        return None

    def on_create_post(self, request: Request, version: str, object_id: str) -> Response:
        if object_id != self.page_id:
            return self._missing(object_id)
        message, link = request.form.get("message", ""), request.form.get("link")
        if not message and not link:
            return self._error("(#100) The parameter message or link is required", 100)
        with self.lock:
            if any(p.message == message and p.link == link for p in self.posts.values()):
                return self._error("(#506) Duplicate status message", 506)
            post = GraphPost(f"{self.page_id}_{next(self._ids)}", message, link)
            self.posts[post.id] = post
        return json_response({"id": post.id})

    def on_create_comment(self, request: Request, version: str, object_id: str) -> Response:
        message = request.form.get("message", "")
        with self.lock:
            post = self.posts.get(object_id)
            if post is None:
                return self._missing(object_id)
            if not message:
                return self._error("(#100) Missing message or attachment", 100)
            comment = GraphPost(f"{object_id.split('_')[-1]}_{next(self._ids)}", message, None)
            post.comments.append(comment)
        return json_response({"id": comment.id})

    def on_edit_post(self, request: Request, version: str, object_id: str) -> Response:
        with self.lock:
            post = self.posts.get(object_id)
            if post is None:
                return self._missing(object_id)
            post.message = request.form.get("message", post.message)
            post.edits += 1
        return json_response({"success": True})

    def on_list_posts(self, request: Request, version: str, object_id: str) -> Response:
        if object_id != self.page_id:
            return self._missing(object_id)
        with self.lock:
            newest = sorted(self.posts.values(), key=lambda p: p.created_time, reverse=True)
        return self._listing(request, newest)

    def on_list_comments(self, request: Request, version: str, object_id: str) -> Response:
        with self.lock:
            post = self.posts.get(object_id)
            if post is None:
                return self._missing(object_id)
            comments = list(post.comments)
        if request.args.get("order") == "reverse_chronological":
            comments.reverse()
        return self._listing(request, comments)

    def not_found(self, request: Request) -> Response:
        return self._error(f"Unknown path components: {request.path}", 2500)

    # -- helpers ---------------------------------------------------------------------------

    def _listing(self, request: Request, items: list[GraphPost]) -> Response:
        try:
            limit = max(1, min(100, int(request.args.get("limit", "25"))))
        except ValueError:
            return self._error("(#100) The parameter limit must be a number", 100)
        data = [{"id": p.id, "message": p.message,
                 "created_time": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(p.created_time))}
                for p in items[:limit]]
        return json_response({"data": data, "paging": {"cursors": {"before": "b", "after": "a"}}})

    def _missing(self, object_id: str) -> Response:
        return self._error(
            f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation.",
            100, kind="GraphMethodException", error_subcode=33)

    @staticmethod
    def _error(message: str, code: int, kind: str = "OAuthException", status: int = 400,
               **extra: Any) -> Response:
        return json_response(graph_error(message, code, kind, **extra), status)
