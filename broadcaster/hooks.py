"""Alerts from monitoring become draft incidents: signatures, the payloads, the rules.

A monitoring system may start an announcement, but a false alarm must never reach Twitter on
its own. So an alert makes a *draft* that a person publishes (`broadcaster publish`), unless
`[automation] publish_impacts` says otherwise for that impact, and then only to
`publish_channels`. The same alert group firing again revises that draft instead of opening
a second incident. A resolved alert drafts the resolution.

Requests are signed: `X-Broadcaster-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{raw
body}">` keyed with BROADCASTER_HOOK_SECRET, `X-Broadcaster-Timestamp` within 300 s of now,
compared in constant time; the same signed request is accepted once. This module is the
logic; server.py is the HTTP around it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from broadcaster import defaults
from broadcaster.errors import UnknownIncidentError
from broadcaster.model import Impact
from broadcaster.settings import AutomationSettings, Settings

if TYPE_CHECKING:
    from broadcaster.ledger import Ledger
    from broadcaster.model import Incident

MAX_BODY = defaults.HOOK_MAX_BODY
MAX_SKEW = defaults.HOOK_MAX_SKEW
SECRET_ENV = "BROADCASTER_HOOK_SECRET"


class HookRefused(Exception):
    """A request the hooks refuse, with the HTTP status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes (used by tests and by senders' docs)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check_signature(secret: SecretStr, timestamp: str | None, signature: str | None, body: bytes,
                    now: float | None = None) -> str:
    """The verified signature (the replay key), or HookRefused(401) saying what is wrong."""
    if not timestamp or not signature:
        raise HookRefused(401, "X-Broadcaster-Timestamp and X-Broadcaster-Signature are required")
    # Plain decimal digits only: int() would also take "+1763…", "1_763…", " 1763" and
    # zero-padding, each a different signed string for the same moment.
    if not re.fullmatch(r"[1-9][0-9]{0,11}", timestamp):
        raise HookRefused(401, "X-Broadcaster-Timestamp must be Unix seconds, plain decimal digits")
    moment = int(timestamp)
    if abs((now if now is not None else time.time()) - moment) > MAX_SKEW:
        raise HookRefused(401, f"X-Broadcaster-Timestamp is more than {MAX_SKEW} s away from now")
    expected = sign(secret.get_secret_value(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise HookRefused(401, "X-Broadcaster-Signature does not match the body")
    return expected


# -- the payloads ------------------------------------------------------------------------


class _Payload(BaseModel):
    """Field names are the senders' own (camelCase); fields we do not use are allowed."""

    model_config = ConfigDict(extra="allow")


class PrometheusAlert(_Payload):
    """One alert, as Alertmanager and Grafana send it."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class AlertmanagerPayload(_Payload):
    """Alertmanager's webhook_config body, version 4."""

    version: str
    groupKey: str = Field(min_length=1, max_length=1000)
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[PrometheusAlert] = Field(min_length=1, max_length=1000)


class GrafanaPayload(AlertmanagerPayload):
    """Grafana alerting's webhook contact point body (Alertmanager's, plus a few fields)."""

    orgId: int | None = None
    title: str = ""
    state: str = ""
    message: str = ""


class GenericPayload(_Payload):
    """For scripts and systems without an Alertmanager-style webhook."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=20_000)
    impact: Impact = Impact.MINOR
    components: list[str] = Field(default_factory=list, max_length=100)
    regions: list[str] = Field(default_factory=list, max_length=100)
    status: Literal["firing", "resolved"] = "firing"
    dedupe_key: str = Field(min_length=1, max_length=500)


# -- from a payload to an alert ----------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """What any payload says, in broadcaster's terms."""

    key: str
    firing: bool
    title: str
    message: str
    impact: Impact
    components: tuple[str, ...]
    regions: tuple[str, ...]


def from_prometheus(source: str, payload: AlertmanagerPayload, rules: AutomationSettings) -> Alert:
    firing = [a for a in payload.alerts if a.status == "firing"] or payload.alerts
    common = payload.commonAnnotations
    name = payload.groupLabels.get("alertname") or payload.commonLabels.get("alertname") or \
        firing[0].labels.get("alertname", "Service problem")
    title = common.get("summary") or firing[0].annotations.get("summary") or name
    described = [a.annotations.get("description") or a.annotations.get("summary") or "" for a in firing]
    message = common.get("description") or "\n".join(f"- {d}" for d in dict.fromkeys(described) if d)
    severities = [a.labels.get("severity") or payload.commonLabels.get("severity", "") for a in firing]
    impacts = [rules.severity_impacts.get(s.lower(), Impact.MINOR) for s in severities]
    order = list(Impact)
    return Alert(
        key=f"{source}:{payload.groupKey}",
        firing=payload.status == "firing",
        title=title[:200],
        message=message or f"Our monitoring reports: {title}.",
        impact=max(impacts, key=order.index, default=Impact.MINOR),
        components=_mapped(firing, rules.component_label, rules.components),
        regions=_mapped(firing, rules.region_label, rules.regions),
    )


def from_generic(payload: GenericPayload, rules: AutomationSettings) -> Alert:
    """A generic body names components and regions as monitoring knows them, like labels do:
    the same `[automation]` mappings turn them into the names customers know."""
    return Alert(
        key=f"generic:{payload.dedupe_key}", firing=payload.status == "firing",
        title=payload.title, message=payload.message, impact=payload.impact,
        components=_renamed(payload.components, rules.components),
        regions=_renamed(payload.regions, rules.regions),
    )


def _mapped(alerts: list[PrometheusAlert], label: str, names: dict[str, str]) -> tuple[str, ...]:
    return _renamed([a.labels.get(label, "") for a in alerts], names)


def _renamed(values: list[str], names: dict[str, str]) -> tuple[str, ...]:
    stripped = (v.strip() for v in values)
    return tuple(dict.fromkeys(names.get(v, v) for v in stripped if v))


# -- what an alert does -----------------------------------------------------------------


Action = Literal["drafted", "published", "draft_revised", "resolution_drafted", "unchanged"]


@dataclass(frozen=True)
class HookResult:
    action: Action
    incident_id: str | None
    statement_url: str | None
    outcome: Any = None  # the api Outcome, when something was recorded

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "incident_id": self.incident_id,
                               "statement_url": self.statement_url}
        if self.outcome is not None:
            out.update(draft=self.outcome.draft,
                       deliveries=[d.to_json() for d in self.outcome.deliveries])
        return out


@dataclass(frozen=True)
class Wait:
    seconds: int
    reason: str


class FloodGate:
    """Sliding one-minute windows per source and per alert group: a flood of alerts (1,000
    distinct ones made 1,000 drafts before) is answered 429 with Retry-After, not drafted."""

    def __init__(self, rules: AutomationSettings) -> None:
        import threading

        self.rules = rules
        self.lock = threading.Lock()
        self.seen: dict[str, list[float]] = {}

    def admit(self, alert: Alert, now: float | None = None) -> Wait | None:
        """None if the alert may go on (and it is counted), else how long to wait."""
        now = time.monotonic() if now is None else now
        source = alert.key.split(":", 1)[0]
        limits = ((f"from source {source}", self.rules.alerts_per_minute),
                  (f"for alert group {alert.key}", self.rules.changes_per_key_per_minute))
        with self.lock:
            for name, limit in limits:
                recent = [t for t in self.seen.get(name, []) if now - t < 60]
                self.seen[name] = recent
                if len(recent) >= limit:
                    return Wait(max(1, int(60 - (now - recent[0])) + 1), f"at most {limit} a minute {name}")
            for name, _ in limits:
                self.seen[name].append(now)
            if len(self.seen) > defaults.HOOK_FLOOD_KEYS:  # forget quiet keys: memory stays bounded
                self.seen = {k: v for k, v in self.seen.items() if v and now - v[-1] < 60}
        return None


def handle(alert: Alert, settings: Settings) -> HookResult:
    """Draft (or, where the settings allow, publish), revise or resolve the alert's incident."""
    from broadcaster import api
    from broadcaster.ledger import open_ledger

    # One alert at a time: two deliveries of the same group must not open two incidents.
    with open_ledger(settings) as ledger, ledger.service_lock("automation"):
        known = ledger.hook_incident(alert.key)
        try:
            incident = ledger.incident(known) if known else None
        except UnknownIncidentError:
            incident = None  # a person discarded it as a false alarm: this firing is new
        if incident is not None and not incident.is_open:
            incident = None  # that incident is over: this is a new one
        if alert.firing:
            if incident is None:
                return _start(alert, settings, ledger)
            if incident.is_draft:
                return _revise(alert, settings, ledger, incident)
            return HookResult("unchanged", incident.id, settings.statement_url(incident.id))
        if incident is None:
            return HookResult("unchanged", None, None)
        outcome = api.resolve(incident.id, f"{alert.title}: resolved.", draft=True, settings=settings)
        return HookResult("resolution_drafted", incident.id, outcome.statement_url, outcome)


def _start(alert: Alert, settings: Settings, ledger: Ledger) -> HookResult:
    from broadcaster import api

    rules = settings.automation
    # Automatic publication is capped: past the hourly budget, even a critical alert waits
    # for a person, so an alert storm cannot put twenty incidents live on its own.
    published = ledger.auto_published_since(datetime.now(UTC) - timedelta(hours=1))
    publish = alert.impact in rules.publish_impacts and published < rules.publish_per_hour
    outcome = api.announce(
        alert.title, alert.message, impact=alert.impact, components=alert.components,
        regions=alert.regions, draft=not publish,
        channels=settings.automation.publish_channels if publish else None, settings=settings,
    )
    ledger.save_hook_key(alert.key, outcome.incident_id, auto_published=publish)
    return HookResult("published" if publish else "drafted", outcome.incident_id,
                      outcome.statement_url, outcome)


def _revise(alert: Alert, settings: Settings, ledger: Ledger, incident: Incident) -> HookResult:
    from broadcaster.model import Text

    latest = incident.updates[-1]
    default = settings.organization.default_locale
    revised = latest._replace(
        impact=alert.impact, components=alert.components or latest.components,
        regions=alert.regions or latest.regions,
        texts={**latest.texts, default: Text(alert.title, alert.message)},
        created_at=datetime.now(UTC),
    )
    ledger.revise_draft(revised)
    return HookResult("draft_revised", incident.id, settings.statement_url(incident.id))


def forget(ledger: Ledger, signature: str) -> None:
    """Drop a signature whose request was refused as bad input: it was not accepted, so the
    sender may correct nothing else and send it again, and be told what is wrong again."""
    ledger.forget_signature(signature)


def remember(ledger: Ledger, signature: str, now: float | None = None) -> bool:
    """Record an accepted signature; False if it was seen before (a replay). A signature is
    kept twice as long as its timestamp is accepted, so a replay is refused while it is valid."""
    return ledger.remember_signature(signature, now if now is not None else time.time(), 2 * MAX_SKEW)
