"""A stand-in for the X API v2, as much of it as posting an incident thread touches.

`POST /2/tweets` (JSON body, `reply.in_reply_to_tweet_id`), `DELETE /2/tweets/:id`,
`GET /2/tweets/:id`, `GET /2/users/me` and `GET /2/users/:id/tweets`. Every request must
carry a valid OAuth 1.0a user-context signature (checked with oauthlib, with timestamp and
nonce replay checks). Answers have X's shapes: 201 with `data.id`, problem JSON
(`title`, `detail`, `type`, `status`) for errors, 403 "duplicate content" for a repeated
text, and `x-rate-limit-*` headers with a 429 once the window's posts are spent. Links in
returned text come back shortened to t.co, as X does.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature, utils
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, RateWindow, StandIn, json_response

DUPLICATE_DETAIL = "You are not allowed to create a Tweet with duplicate content."
#: X's refusal (403) of a programmatic reply for apps on self-serve access (2026).
REPLY_REFUSED_DETAIL = ("Reply to this conversation is not allowed because you have not been mentioned "
                        "or otherwise engaged by the author of the post you are replying to.")
#: Posts per user per 15-minute window on X's paid tiers.
POST_LIMIT = 200
WINDOW_SECONDS = 15 * 60
MAX_CLOCK_SKEW = 300


@dataclass(frozen=True)
class XCredentials:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str

    def environ(self) -> dict[str, str]:
        """As the BROADCASTER_TWITTER_* variables the channel reads."""
        return {f"BROADCASTER_TWITTER_{k.upper()}": v for k, v in self.__dict__.items()}


#: Made-up credentials the drill uses: they mean something only to this stand-in.
DRILL_CREDENTIALS = XCredentials("drill-consumer-key", "drill-consumer-secret",
                                 "1-drill-access-token", "drill-access-token-secret")


@dataclass
class Tweet:
    id: str
    text: str
    in_reply_to: str | None
    created_at: float = field(default_factory=time.time)
    deleted: bool = False


def problem(status: int, title: str, detail: str, kind: str = "about:blank",
            headers: dict[str, str] | None = None) -> Response:
    """X's error shape (RFC 7807 problem details)."""
    return json_response({"title": title, "detail": detail, "type": kind, "status": status},
                         status, headers)


class XStandIn(StandIn):
    name = "X API stand-in"
    url_map = Map([
        Rule("/2/tweets", methods=["POST"], endpoint="create_tweet"),
        Rule("/2/tweets/<tweet_id>", methods=["DELETE"], endpoint="delete_tweet"),
        Rule("/2/tweets/<tweet_id>", methods=["GET"], endpoint="get_tweet"),
        Rule("/2/users/me", methods=["GET"], endpoint="me"),
        Rule("/2/users/<user_id>/tweets", methods=["GET"], endpoint="user_tweets"),
    ])

    def __init__(self, credentials: XCredentials = DRILL_CREDENTIALS, *, username: str = "examplecorp",
                 post_limit: int = POST_LIMIT) -> None:
        super().__init__()
        self.credentials = credentials
        self.username = username
        self.user_id = "1720000000000000001"
        self.window = RateWindow(post_limit, WINDOW_SECONDS)
        #: Refuse every reply as X does for self-serve apps (set by a test or the drill).
        self.refuse_replies = False
        self.tweets: dict[str, Tweet] = {}
        self._ids = itertools.count(1860000000000000000)
        self._nonces: set[str] = set()

    # -- scripted faults in X's shapes ---------------------------------------------------

    @staticmethod
    def rate_limited(reset_in: float) -> Fault:
        """A 429 whose reset is `reset_in` seconds after the request arrives (whole seconds,
        as X sends it)."""
        def headers() -> dict[str, str]:
            return {"x-rate-limit-limit": str(POST_LIMIT), "x-rate-limit-remaining": "0",
                    "x-rate-limit-reset": str(int(time.time() + reset_in))}

        return Fault(status=429, body={"title": "Too Many Requests", "detail": "Too Many Requests",
                                       "type": "about:blank", "status": 429}, headers=headers)

    @staticmethod
    def server_error(status: int = 503) -> Fault:
        titles = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        title = titles.get(status, "Server Error")
        return Fault(status=status, body={"title": title, "detail": title, "type": "about:blank",
                                          "status": status})

    @staticmethod
    def forbidden(detail: str = "You are not permitted to perform this action.") -> Fault:
        return Fault(status=403, body={"title": "Forbidden", "detail": detail, "type": "about:blank",
                                       "status": 403})

    # -- what happened, for the drill and the tests ----------------------------------------

    def thread(self, first_id: str) -> list[Tweet]:
        """The reply chain that starts at `first_id`, in order (the first reply at each step)."""
        chain = [self.tweets[first_id]]
        while True:
            replies = [t for t in self.tweets.values() if t.in_reply_to == chain[-1].id and not t.deleted]
            if not replies:
                return chain
            chain.append(replies[0])

    def posted(self) -> list[Tweet]:
        return [t for t in self.tweets.values() if not t.deleted]

    # -- endpoints -------------------------------------------------------------------------

    def on_create_tweet(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data(as_text=True))
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
            return self._invalid("text", "The `text` field is required and must be a non-empty string.")
        text = body["text"]
        from broadcaster.channels.tweet_text import weighted_length

        if weighted_length(text) > 280:
            return problem(403, "Forbidden", "Your Tweet text is too long.")
        reply = body.get("reply") or {}
        parent = reply.get("in_reply_to_tweet_id") if isinstance(reply, dict) else None
        with self.lock:
            if parent is not None and (parent not in self.tweets or self.tweets[parent].deleted):
                return problem(403, "Forbidden", "You attempted to reply to a Tweet that is deleted or "
                                                 "not visible to you.")
            if parent is not None and self.refuse_replies:
                return problem(403, "Forbidden", REPLY_REFUSED_DETAIL)
            if any(t.text == text and not t.deleted for t in self.tweets.values()):
                return problem(403, "Forbidden", DUPLICATE_DETAIL)
            if not self.window.spend():
                return problem(429, "Too Many Requests", "Too Many Requests", headers=self._limit_headers())
            headers = self._limit_headers()
            tweet = Tweet(str(next(self._ids)), text, parent)
            self.tweets[tweet.id] = tweet
        return json_response({"data": self._view(tweet)}, 201, headers)

    def on_delete_tweet(self, request: Request, tweet_id: str) -> Response:
        with self.lock:
            tweet = self.tweets.get(tweet_id)
            if tweet is None or tweet.deleted:
                return self._not_found(tweet_id)
            tweet.deleted = True
        return json_response({"data": {"deleted": True}})

    def on_get_tweet(self, request: Request, tweet_id: str) -> Response:
        tweet = self.tweets.get(tweet_id)
        if tweet is None or tweet.deleted:
            return self._not_found(tweet_id)
        return json_response({"data": self._view(tweet)})

    def on_me(self, request: Request) -> Response:
        me = {"id": self.user_id, "name": "Example Corp", "username": self.username}
        return json_response({"data": me})

    def on_user_tweets(self, request: Request, user_id: str) -> Response:
        if user_id != self.user_id:
            return self._not_found(user_id, "user")
        try:
            wanted = int(request.args.get("max_results", "10"))
        except ValueError:
            wanted = 0
        if not 5 <= wanted <= 100:
            return self._invalid("max_results", "The `max_results` query parameter value [..] is not "
                                                "between 5 and 100")
        with self.lock:
            newest = sorted(self.posted(), key=lambda t: int(t.id), reverse=True)[:wanted]
        data = [self._view(t) for t in newest]
        meta: dict[str, Any] = {"result_count": len(data)}
        if data:
            meta.update(newest_id=data[0]["id"], oldest_id=data[-1]["id"])
        return json_response({"data": data, "meta": meta} if data else {"meta": meta})

    def not_found(self, request: Request) -> Response:
        return problem(404, "Not Found Error", f"Could not find {request.path}",
                       "https://api.twitter.com/2/problems/resource-not-found")

    # -- helpers ---------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Response | None:
        """Check the OAuth 1.0a signature exactly as X does for user-context endpoints."""
        header = request.headers.get("Authorization", "")
        unauthorized = problem(401, "Unauthorized", "Unauthorized")
        if not header.lower().startswith("oauth "):
            return unauthorized
        try:
            oauth = dict(utils.parse_authorization_header(header))
        except ValueError:
            return unauthorized
        creds = self.credentials
        if (oauth.get("oauth_consumer_key") != creds.consumer_key
                or oauth.get("oauth_token") != creds.access_token
                or oauth.get("oauth_signature_method") != "HMAC-SHA1"):
            return unauthorized
        try:
            skew = abs(time.time() - int(oauth.get("oauth_timestamp", "0")))
        except ValueError:
            return unauthorized
        nonce = oauth.get("oauth_nonce", "")
        with self.lock:
            if skew > MAX_CLOCK_SKEW or not nonce or nonce in self._nonces:
                return unauthorized
            self._nonces.add(nonce)
        form = request.mimetype == "application/x-www-form-urlencoded"
        body = request.get_data(as_text=True) if form else None
        signed = OAuthRequest(request.url, request.method, body, {"Authorization": header})
        signed.params = signature.collect_parameters(
            uri_query=request.query_string.decode(), body=body, headers={"Authorization": header},
            exclude_oauth_signature=True,
        )
        signed.signature = utils.unescape(oauth.get("oauth_signature", ""))
        if not signature.verify_hmac_sha1(signed, creds.consumer_secret, creds.access_token_secret):
            return unauthorized
        return None

    def _limit_headers(self) -> dict[str, str]:
        return {"x-rate-limit-limit": str(self.window.limit),
                "x-rate-limit-remaining": str(self.window.remaining),
                "x-rate-limit-reset": str(int(self.window.reset))}

    def _view(self, tweet: Tweet) -> dict[str, Any]:
        text = re.sub(r"https?://\S+", lambda _: f"https://t.co/{secrets.token_urlsafe(7)[:10]}", tweet.text)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"id": tweet.id, "text": text, "edit_history_tweet_ids": [tweet.id]}

    @staticmethod
    def _invalid(parameter: str, message: str) -> Response:
        return json_response({
            "errors": [{"parameters": {parameter: []}, "message": message}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        }, 400)

    @staticmethod
    def _not_found(resource_id: str, kind: str = "tweet") -> Response:
        return json_response({"errors": [{
            "value": resource_id, "detail": f"Could not find {kind} with id: [{resource_id}].",
            "title": "Not Found Error", "resource_type": kind, "parameter": "id",
            "resource_id": resource_id, "type": "https://api.twitter.com/2/problems/resource-not-found",
        }]}, 404)
