"""A stand-in for a Bluesky PDS (Personal Data Server), as much XRPC as posting a thread touches.

`com.atproto.server.createSession` (handle and app password), `refreshSession`, `getSession`,
`com.atproto.repo.createRecord` and `getRecord`, under `/xrpc/`. Sessions are JWTs (HS256)
with a short, settable life; a request with an expired access token is answered 400
`ExpiredToken`, as a PDS does. `createRecord` checks what a PDS and the app view rely on: the
record's `$type`, 300 graphemes (3,000 bytes), a TID record key that is not taken, a
`reply` whose root and parent exist, and every facet's byte range lying on the text (a facet
off by a byte links the wrong characters). Errors have XRPC's shape `{"error", "message"}`;
429 carries `ratelimit-*` headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, StandIn, arguments, json_response

#: Made-up credentials the drill uses: they mean something only to this stand-in.
DRILL_HANDLE = "examplecorp.bsky.social"
DRILL_APP_PASSWORD = "drill-app1-pass-word"
DID = "did:plc:drill7examplecorp7status"
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


@dataclass
class BskyPost:
    rkey: str
    uri: str
    cid: str
    record: dict[str, Any]
    at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return str(self.record["text"])

    @property
    def parent(self) -> str | None:
        reply = self.record.get("reply")
        return reply["parent"]["uri"] if reply else None

    @property
    def root(self) -> str | None:
        reply = self.record.get("reply")
        return reply["root"]["uri"] if reply else None


def xrpc_error(error: str, message: str, status: int = 400,
               headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": error, "message": message}, status, headers)


class BlueskyStandIn(StandIn):
    name = "Bluesky PDS stand-in"
    url_map = Map([
        Rule("/xrpc/com.atproto.server.createSession", methods=["POST"], endpoint="create_session"),
        Rule("/xrpc/com.atproto.server.refreshSession", methods=["POST"], endpoint="refresh_session"),
        Rule("/xrpc/com.atproto.server.getSession", methods=["GET"], endpoint="get_session"),
        Rule("/xrpc/com.atproto.repo.createRecord", methods=["POST"], endpoint="create_record"),
        Rule("/xrpc/com.atproto.repo.getRecord", methods=["GET"], endpoint="get_record"),
    ])

    def __init__(self, handle: str = DRILL_HANDLE, app_password: str = DRILL_APP_PASSWORD) -> None:
        super().__init__()
        self.handle = handle
        self.app_password = app_password
        #: Seconds an access token lives (a PDS gives two hours; tests shorten it).
        self.access_seconds = 7200.0
        self.posts: dict[str, BskyPost] = {}
        self._key = secrets.token_bytes(32)
        self._refreshes: set[str] = set()
        self._counter = itertools.count(1)

    @staticmethod
    def rate_limited(reset_in: float) -> Fault:
        def headers() -> dict[str, str]:
            return {"ratelimit-limit": "5000", "ratelimit-remaining": "0",
                    "ratelimit-reset": str(int(time.time() + reset_in)), "ratelimit-policy": "5000;w=3600"}

        return Fault(status=429, body={"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
                     headers=headers)

    # -- what happened ---------------------------------------------------------------------

    def posted(self) -> list[BskyPost]:
        return sorted(self.posts.values(), key=lambda p: p.at)

    # -- endpoints -------------------------------------------------------------------------

    def on_create_session(self, request: Request) -> Response:
        body = arguments(request)
        if body.get("identifier") not in (self.handle, DID) or body.get("password") != self.app_password:
            return xrpc_error("AuthenticationRequired", "Invalid identifier or password", 401)
        return json_response(self._session())

    def on_refresh_session(self, request: Request) -> Response:
        token = _bearer(request)
        claims = self._claims(token, "com.atproto.refresh")
        if claims is None or token in self._refreshes:
            return xrpc_error("ExpiredToken", "Token has been revoked", 400)
        self._refreshes.add(token)  # a refresh token is used once
        return json_response(self._session())

    def on_get_session(self, request: Request) -> Response:
        refusal = self._access(request)
        return refusal or json_response({"handle": self.handle, "did": DID, "active": True})

    def on_create_record(self, request: Request) -> Response:
        refusal = self._access(request)
        if refusal:
            return refusal
        body = arguments(request)
        if body.get("repo") not in (DID, self.handle):
            return xrpc_error("InvalidRequest", "Could not find repo")
        if body.get("collection") != "app.bsky.feed.post":
            return xrpc_error("InvalidRequest", "Unsupported collection in this stand-in")
        record = body.get("record") or {}
        problem = self._invalid(record)
        if problem:
            return xrpc_error("InvalidRecord", problem)
        rkey = body.get("rkey") or _tid(next(self._counter))
        if not _TID.match(rkey):
            return xrpc_error("InvalidRecord", f"Record/rkey must be a valid TID: {rkey}")
        with self.lock:
            if rkey in self.posts:
                return xrpc_error("InvalidRequest", f"Record already exists at {rkey}")
            uri = f"at://{DID}/app.bsky.feed.post/{rkey}"
            cid = "bafyrei" + base64.b32encode(hashlib.sha256(json.dumps(record, sort_keys=True).encode())
                                               .digest()).decode().lower().rstrip("=")[:52]
            self.posts[rkey] = BskyPost(rkey, uri, cid, record)
        return json_response({"uri": uri, "cid": cid, "validationStatus": "valid",
                              "commit": {"cid": cid, "rev": _tid(next(self._counter))}})

    def on_get_record(self, request: Request) -> Response:
        rkey = request.args.get("rkey", "")
        post = self.posts.get(rkey)
        if post is None or request.args.get("repo") not in (DID, self.handle):
            return xrpc_error("RecordNotFound", f"Could not locate record: at://{DID}/app.bsky.feed.post/{rkey}")
        return json_response({"uri": post.uri, "cid": post.cid, "value": post.record})

    def not_found(self, request: Request) -> Response:
        return xrpc_error("MethodNotImplemented", "Method Not Implemented", 501)

    # -- checks ----------------------------------------------------------------------------

    def _invalid(self, record: dict[str, Any]) -> str | None:
        import regex

        text = record.get("text")
        if record.get("$type") != "app.bsky.feed.post" or not isinstance(text, str):
            return "Invalid app.bsky.feed.post record: $type and text are required"
        if not record.get("createdAt"):
            return 'Record must have the property "createdAt"'
        if len(regex.findall(r"\X", text)) > 300 or len(text.encode()) > 3000:
            return "Record/text must not be longer than 300 graphemes"
        raw = text.encode()
        for number, facet in enumerate(record.get("facets") or []):
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            if not 0 <= start < end <= len(raw):
                return f"Record/facets/{number}/index is outside the text"
            try:
                covered = raw[start:end].decode()
            except UnicodeDecodeError:
                return f"Record/facets/{number}/index cuts a character in two"
            for feature in facet["features"]:
                if feature.get("$type") == "app.bsky.richtext.facet#link" and feature.get("uri") != covered:
                    return f"Record/facets/{number}: the link covers {covered!r}, not its uri"
        reply = record.get("reply")
        if reply:
            for part in ("root", "parent"):
                rkey = str(reply[part]["uri"]).rsplit("/", 1)[-1]
                if rkey not in self.posts or self.posts[rkey].cid != reply[part]["cid"]:
                    return f"Record/reply/{part} does not exist (uri and cid must match)"
        return None

    # -- sessions --------------------------------------------------------------------------

    def _session(self) -> dict[str, Any]:
        now = time.time()
        return {"did": DID, "handle": self.handle, "active": True,
                "accessJwt": self._jwt({"scope": "com.atproto.appPass", "sub": DID, "iat": int(now),
                                        "exp": int(now + self.access_seconds), "aud": "did:web:stand-in"}),
                "refreshJwt": self._jwt({"scope": "com.atproto.refresh", "sub": DID, "iat": int(now),
                                         "exp": int(now + 90 * 86400), "jti": secrets.token_hex(8),
                                         "aud": "did:web:stand-in"})}

    def _access(self, request: Request) -> Response | None:
        token = _bearer(request)
        claims = self._claims(token, "com.atproto.appPass", check_expiry=False)
        if claims is None:
            return xrpc_error("AuthenticationRequired", "Invalid token", 401)
        if claims["exp"] <= time.time():
            return xrpc_error("ExpiredToken", "Token has expired", 400)
        return None

    def _jwt(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"typ": "at+jwt", "alg": "HS256"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"

    def _claims(self, token: str, scope: str, *, check_expiry: bool = True) -> dict[str, Any] | None:
        try:
            head, body, signature = token.split(".")
            expected = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(_b64(expected), signature):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if claims.get("scope") != scope or (check_expiry and claims["exp"] <= time.time()):
            return None
        return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _bearer(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else ""


def _tid(n: int) -> str:
    chars = "234567abcdefghijklmnopqrstuvwxyz"
    number = (int(time.time() * 1_000_000) << 10) | (n % 1024)
    return "".join(chars[(number >> shift) & 31] for shift in range(60, -1, -5))
