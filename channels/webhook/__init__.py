"""Outbound webhooks: one signed POST per URL per update, as Standard Webhooks describes them.

Integrators (a chat relay, a customer's own status board, a ticketing system) get every
update as JSON: the event type (`incident.created`, `incident.updated`, `incident.resolved`,
`maintenance.scheduled`, …), the incident in the shape of the status site's
`api/v2/incidents.json`, the update, a readable `message` and the statement URL. Each request
carries `webhook-id`, `webhook-timestamp` and `webhook-signature` (HMAC-SHA256 of
`id.timestamp.body` with the `whsec_…` secret, signed by the `standardwebhooks` library), so a
receiver verifies it with any Standard Webhooks library.

Each URL is a delivery of its own in the ledger (`Channel.destinations`): one receiver that is
down is retried and reported alone. The `webhook-id` is the same for every attempt at one
delivery, so a receiver that de-duplicates by it (as the specification asks) never acts twice
on a retry after a lost answer; a lost answer is therefore simply sent again.

Redirects are not followed (a receiver that moved says so, and the setting is fixed), and a
URL is stored and shown without its query string, which may hold a receiver's token.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from broadcaster.channels.base import Channel, ChannelContext, ChannelSettings, ChannelSpec, Post, tidy
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.model import Receipt
from broadcaster.vocabulary import Kind, Status

if TYPE_CHECKING:
    import requests
    from standardwebhooks import Webhook

    from broadcaster.render import Page

#: Event types by kind of update; maintenance by its status.
EVENTS = {Kind.ANNOUNCE: "incident.created", Kind.UPDATE: "incident.updated",
          Kind.RESOLVE: "incident.resolved", Kind.POSTMORTEM: "incident.postmortem"}
MAINTENANCE_EVENTS = {Status.SCHEDULED: "maintenance.scheduled", Status.IN_PROGRESS: "maintenance.started",
                      Status.COMPLETED: "maintenance.completed", Status.CANCELLED: "maintenance.cancelled"}
#: HTTP statuses worth trying again: the receiver is busy, down or timed out.
TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
#: How much of a refusing receiver's answer the error quotes.
QUOTED = 200


def destination(url: str) -> str:
    """What the ledger and the reports call a URL: without its query, fragment and login."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


class WebhookSettings(ChannelSettings):
    required_when_enabled: ClassVar[Mapping[str, str]] = {"urls": "where to POST each update"}
    #: Where every update is POSTed, each a delivery of its own.
    urls: list[str] = Field(default_factory=list)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for number, url in enumerate(urls, start=1):
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in url):
                raise ValueError(f"urls[{number}] {destination(url) if parts.hostname else url!r} is not "
                                 "an http:// or https:// address")
        return urls

    @model_validator(mode="after")
    def _usable(self) -> WebhookSettings:
        seen: dict[str, int] = {}
        for number, url in enumerate(self.urls, start=1):
            if destination(url) in seen:
                raise ValueError(f"urls[{number}] and urls[{seen[destination(url)]}] differ only in their "
                                 f"query string ({destination(url)}): each receiver needs its own path")
            seen[destination(url)] = number
        return self


class WebhookChannel(Channel):
    spec = ChannelSpec(
        name="webhook",
        summary="POSTs each update as signed JSON (Standard Webhooks) to every URL in urls",
        settings=WebhookSettings,
        secrets={"secret": "BROADCASTER_WEBHOOK_SECRET"},
        limit=None,
    )
    settings: WebhookSettings
    templates_package = "broadcaster.channels.webhook.templates"

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        super().__init__(settings, context)
        self._session: requests.Session | None = None

    def destinations(self) -> tuple[str, ...]:
        return tuple(destination(url) for url in self.settings.urls)

    def readiness(self, today: date) -> tuple[list[str], list[str]]:
        """Refuse a secret that is not `whsec_` and base64; warn of plain-http receivers."""
        problems, warnings = [], []
        secret = self.context.secrets.get(self.spec.secrets["secret"])
        if secret is not None and _signer(secret.get_secret_value()) is None:
            problems.append(f"{self.spec.secrets['secret']} is not a Standard Webhooks secret: "
                            "whsec_ followed by base64 (at least 24 bytes), as `openssl rand -base64 32` "
                            "gives after whsec_")
        for url in self.settings.urls:
            parts = urlsplit(url)
            if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                warnings.append(f"{destination(url)} is plain http: every update travels unencrypted")
        return problems, warnings

    def compose(self, page: Page) -> Post:
        """The readable message as the text (what the preview shows), the JSON event as the
        rich form (what is sent)."""
        message = tidy(page.render(page.kind))
        body = event(page, message)
        return Post(text=message, rich=json.dumps(body, ensure_ascii=False), link=page.statement_url,
                    update_id=page.update.id, locale=page.locale)

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        import requests

        from broadcaster.channels.http_session import network_problem, retry_after

        url = next((u for u in self.settings.urls if destination(u) == post.to), None)
        if url is None:
            raise PermanentDeliveryError(f"{post.to} is no longer in [channels.webhook] urls; add it back "
                                         "and run `broadcaster retry`, or leave this delivery failed")
        signer = _signer(self.context.secrets[self.spec.secrets["secret"]].get_secret_value())
        if signer is None:
            raise PermanentDeliveryError(f"{self.spec.secrets['secret']} is not a Standard Webhooks secret")
        message_id = webhook_id(post.update_id, post.to)
        body = post.rich or post.text
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json; charset=utf-8", "user-agent": "broadcaster",
            "webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(message_id, now, body),
        }
        try:
            answer = self.session.post(url, data=body.encode(), headers=headers,
                                       timeout=self.context.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise TransientDeliveryError(f"{post.to}: {network_problem(exc)}") from None
        status = answer.status_code
        if 200 <= status < 300:
            return Receipt(remote_id=message_id, url=None, meta={"to": post.to, "status": status})
        said = " ".join(answer.text.split())[:QUOTED]
        if status in TRANSIENT_STATUSES:
            raise TransientDeliveryError(f"{post.to} answered {status} {said}".rstrip(),
                                         retry_at=retry_after(answer.headers.get("Retry-After")))
        if 300 <= status < 400:
            raise PermanentDeliveryError(f"{post.to} redirects ({status}) to "
                                         f"{destination(answer.headers.get('Location', '?'))}: redirects are "
                                         "not followed; put the address it points to in urls")
        if status == 410:
            raise PermanentDeliveryError(f"{post.to} answered 410 Gone: the receiver no longer wants these; "
                                         "remove it from urls")
        secret = self.spec.secrets["secret"]
        hint = f" (does the receiver have the same {secret}?)" if status in (401, 403) else ""
        raise PermanentDeliveryError(f"{post.to} refused the webhook ({status}){hint}: {said}".rstrip(": "))

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            session = requests.Session()
            session.trust_env = False  # no proxies or .netrc from the environment
            self._session = session
        return self._session


def event(page: Page, message: str) -> dict[str, object]:
    """The JSON body of one update's webhook (the same for every URL and every attempt)."""
    from broadcaster import markup
    from broadcaster.site.statuspage import incident_json

    update, incident, settings = page.update, page.incident, page.settings
    if update.kind is Kind.MAINTENANCE:
        first = incident.updates[0].id == update.id
        kind = MAINTENANCE_EVENTS.get(update.status, "maintenance.updated")
        kind = "maintenance.rescheduled" if kind == "maintenance.scheduled" and not first else kind
    else:
        kind = EVENTS[update.kind]
    text = update.text(page.locale)
    return {
        "type": kind,
        "timestamp": _utc(update.created_at),
        "data": {
            "incident": incident_json(settings, incident),
            "update": {"id": update.id, "status": update.status.value, "body": markup.to_plain(text.message),
                       "created_at": _utc(update.created_at)},
            "statement_url": page.statement_url,
            "locale": page.locale,
            "message": message,
        },
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def webhook_id(update_id: str, to: str) -> str:
    """The same for every attempt at one delivery (receivers de-duplicate by it), and only it."""
    return "msg_" + hashlib.sha256(f"{update_id}\n{to}".encode()).hexdigest()[:32]


def _signer(secret: str) -> Webhook | None:
    """A signer for a `whsec_…` secret, or None if it is not one."""
    import base64
    import binascii

    from standardwebhooks import Webhook

    if not secret.startswith("whsec_"):
        return None
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except (binascii.Error, ValueError):
        return None
    return Webhook(secret) if len(key) >= 24 else None
