"""A stand-in for an integrator's webhook endpoint: it verifies and keeps what it receives.

`POST /<any path>`: the request must carry Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature`) that verify with the shared `whsec_…` secret
through the `standardwebhooks` library (a wrong signature, or a timestamp more than five
minutes off, is answered 401), and a JSON body. As the specification asks of receivers, a
`webhook-id` already seen is acknowledged and not acted on again, so `events` holds each
event once while `calls` shows every attempt. Faults are scripted as for every stand-in
(`fail("receive", …)`): 429 or 503 with `Retry-After`, a redirect, 410 Gone, a dropped answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from broadcaster.standins.server import Fault, StandIn, json_response

#: A made-up secret the drill uses (whsec_ and base64 of 32 bytes): only this stand-in knows it.
DRILL_SECRET = "whsec_ZHJpbGwtd2ViaG9vay1zZWNyZXQtMzItYnl0ZXMhIQ=="


@dataclass(frozen=True)
class Event:
    """One webhook as the receiver acted on it."""

    path: str
    id: str
    timestamp: int
    body: Mapping[str, Any]


class WebhookReceiver(StandIn):
    name = "webhook receiver stand-in"
    url_map = Map([Rule("/<path:path>", methods=["POST"], endpoint="receive")])

    def __init__(self, secret: str = DRILL_SECRET) -> None:
        super().__init__()
        self.secret = secret
        self.events: list[Event] = []

    @staticmethod
    def busy(status: int = 503, retry_after: str = "1") -> Fault:
        """The receiver cannot take it now and says when to come back."""
        return Fault(status=status, body={"error": "busy"}, headers={"Retry-After": retry_after})

    def on_receive(self, request: Request, path: str) -> Response:
        from standardwebhooks import Webhook, WebhookVerificationError

        body = request.get_data(as_text=True)
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            return json_response({"error": f"signature: {exc}"}, 401)
        except json.JSONDecodeError:
            return json_response({"error": "the body is not JSON"}, 400)
        with self.lock:
            if any(e.id == request.headers["webhook-id"] for e in self.events):
                return json_response({"ok": True, "duplicate": True})
            self.events.append(Event("/" + path, request.headers["webhook-id"],
                                     int(request.headers["webhook-timestamp"]), payload))
        return json_response({"ok": True}, 202)

    def at(self, path: str) -> list[Event]:
        """The events one URL (by its path) received, once each, in order."""
        with self.lock:
            return [e for e in self.events if e.path == path]
