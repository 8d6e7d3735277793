"""A stand-in for Slack's Web API, as much of it as posting an incident thread touches.

`auth.test`, `chat.postMessage` (JSON or form, as slack-sdk sends it), `conversations.history`
and `conversations.replies`, under `/api/`. Requests carry `Authorization: Bearer xoxb-…`;
answers have Slack's shape: HTTP 200 with `{"ok": false, "error": …}` for errors
(`invalid_auth`, `missing_scope` with `needed`, `channel_not_found`, `not_in_channel`,
`thread_not_found`, `invalid_blocks`, `msg_too_long`), and HTTP 429 `ratelimited` with
`Retry-After` once more than `per_second` messages arrive in one second. Blocks are checked
against Slack's limits (a header's 150 characters, a section's 3,000, a button's URL).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, StandIn, arguments, json_response

#: Made-up credentials the drill uses: they mean something only to this stand-in.
DRILL_BOT_TOKEN = "xoxb-drill-0000000000-slack-stand-in"
DRILL_CHANNEL = "C0STATUS01"
DRILL_SCOPES = frozenset({"chat:write", "channels:history"})
BOT_ID = "B0BROADCAST"


@dataclass
class Message:
    ts: str
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    broadcast: bool
    at: float = field(default_factory=time.time)


class SlackStandIn(StandIn):
    name = "Slack Web API stand-in"
    url_map = Map([
        Rule("/api/auth.test", methods=["GET", "POST"], endpoint="auth_test"),
        Rule("/api/chat.postMessage", methods=["POST"], endpoint="post_message"),
        Rule("/api/conversations.history", methods=["GET", "POST"], endpoint="history"),
        Rule("/api/conversations.replies", methods=["GET", "POST"], endpoint="replies"),
    ])

    def __init__(self, token: str = DRILL_BOT_TOKEN, scopes: frozenset[str] = DRILL_SCOPES, *,
                 channel: str = DRILL_CHANNEL, per_second: int = 20) -> None:
        super().__init__()
        self.tokens = {token: scopes}
        #: Channels that exist, and whether the app is a member of each.
        self.channels = {channel: True}
        self.per_second = per_second
        self.messages: list[Message] = []
        self._ticks = itertools.count(1)
        self._second: tuple[int, int] = (0, 0)

    @staticmethod
    def rate_limited(retry_after: int = 1) -> Fault:
        return Fault(status=429, body={"ok": False, "error": "ratelimited"},
                     headers={"Retry-After": str(retry_after)})

    @staticmethod
    def error(code: str, **extra: Any) -> Fault:
        """An `ok: false` answer with this error code (HTTP 200, as Slack sends them)."""
        return Fault(status=200, body={"ok": False, "error": code, **extra})

    # -- what happened ---------------------------------------------------------------------

    def top_level(self, channel: str = DRILL_CHANNEL) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def thread(self, ts: str) -> list[Message]:
        return [m for m in self.messages if m.ts == ts or m.thread_ts == ts]

    # -- endpoints -------------------------------------------------------------------------

    def on_auth_test(self, request: Request) -> Response:
        return _ok({"url": "https://example-corp.slack.com/", "team": "Example Corp", "user": "broadcaster",
                    "team_id": "T0EXAMPLE", "user_id": "U0BROADCAST", "bot_id": BOT_ID})

    def on_post_message(self, request: Request) -> Response:
        refusal = self._scope(request, "chat:write")
        if refusal:
            return refusal
        args = arguments(request)
        channel = str(args.get("channel") or "")
        if channel not in self.channels:
            return _error("channel_not_found")
        if not self.channels[channel]:
            return _error("not_in_channel")
        text = args.get("text") or ""
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return _error("invalid_blocks_format")
        problem = _block_problem(blocks) if blocks is not None else None
        if problem:
            return _error("invalid_blocks", errors=[problem])
        if not text and not blocks:
            return _error("no_text")
        if len(text) > 40000:
            return _error("msg_too_long")
        thread_ts = args.get("thread_ts") or None
        with self.lock:
            if thread_ts and not any(m.ts == thread_ts and m.channel == channel for m in self.messages):
                return _error("thread_not_found")
            second, count = self._second
            now = int(time.time())
            count = count + 1 if second == now else 1
            self._second = (now, count)
            if count > self.per_second:
                return json_response({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": "1"})
            ts = f"{now}.{next(self._ticks):06d}"
            broadcast = str(args.get("reply_broadcast")).lower() in ("true", "1")
            message = Message(ts, channel, text, blocks or [], thread_ts, broadcast)
            self.messages.append(message)
        return _ok({"channel": channel, "ts": ts, "message": self._view(message)})

    def on_history(self, request: Request) -> Response:
        args, channel, refusal = self._reading(request)
        if refusal:
            return refusal
        limit = min(int(args.get("limit") or 100), 999)
        with self.lock:
            shown = [m for m in self.messages
                     if m.channel == channel and (m.thread_ts is None or m.broadcast)]
        return _ok({"messages": [self._view(m) for m in reversed(shown)][:limit], "has_more": False})

    def on_replies(self, request: Request) -> Response:
        args, channel, refusal = self._reading(request)
        if refusal:
            return refusal
        ts = str(args.get("ts") or "")
        with self.lock:
            found = [m for m in self.messages if m.channel == channel and (m.ts == ts or m.thread_ts == ts)]
        if not found:
            return _error("thread_not_found")
        limit = min(int(args.get("limit") or 100), 1000)
        return _ok({"messages": [self._view(m) for m in found][:limit], "has_more": False})

    def _reading(self, request: Request) -> tuple[dict[str, Any], str, Response | None]:
        """A history read's parameters and channel, or Slack's refusal (scope, channel)."""
        args = arguments(request)
        channel = str(args.get("channel") or "")
        refusal = self._scope(request, "channels:history")
        if refusal is None and channel not in self.channels:
            refusal = _error("channel_not_found")
        return args, channel, refusal

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if not token:
            return _error("not_authed")
        return None if token in self.tokens else _error("invalid_auth")

    def not_found(self, request: Request) -> Response:
        return _error("unknown_method", status=404)

    # -- helpers ---------------------------------------------------------------------------

    def _scope(self, request: Request, needed: str) -> Response | None:
        scopes = self.tokens[request.headers["Authorization"][7:]]
        if needed in scopes:
            return None
        return _error("missing_scope", needed=needed, provided=",".join(sorted(scopes)))

    @staticmethod
    def _view(message: Message) -> dict[str, Any]:
        view: dict[str, Any] = {"type": "message", "subtype": "bot_message", "text": message.text,
                                "ts": message.ts, "bot_id": BOT_ID, "blocks": message.blocks}
        if message.thread_ts:
            view["thread_ts"] = message.thread_ts
        return view


def _block_problem(blocks: Any) -> str | None:
    """What Slack's block validation would refuse in `blocks`, if anything."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "must be a list of at most 50 blocks"
    for number, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
        if kind == "header" and len(text) > 150:
            return f"[json-pointer:/blocks/{number}/text] must be less than 151 characters"
        if kind == "section" and not 1 <= len(text) <= 3000:
            return f"[json-pointer:/blocks/{number}/text] must be between 1 and 3000 characters"
        if kind == "actions":
            for button in block.get("elements", []):
                if not str(button.get("url", "")).startswith(("http://", "https://")):
                    return f"[json-pointer:/blocks/{number}/elements] invalid url"
        if kind not in ("header", "section", "actions", "context", "divider"):
            return f"[json-pointer:/blocks/{number}/type] unknown block type {kind!r}"
    return None


def _ok(body: dict[str, Any]) -> Response:
    return json_response({"ok": True, **body})


def _error(code: str, status: int = 200, **extra: Any) -> Response:
    return json_response({"ok": False, "error": code, **extra}, status)
