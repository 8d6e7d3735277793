"""The status site's JSON, in the shapes and values of Statuspage's public API v2.

Widgets, monitors and chat integrations that read a Statuspage page (summary.json,
status.json, components.json, incidents.json, incidents/unresolved.json,
scheduled-maintenances.json) read these files unchanged. Ids are stable hashes of names, so
they survive rebuilds. `regions.json` (what the postcode lookup reads) and `uptime.json` (each
component's last 90 days) are broadcaster's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from broadcaster import markup
from broadcaster.model import Incident, Status, Update
from broadcaster.settings import Settings
from broadcaster.site.state import BY_IMPACT, SiteState, lookup_data, worst
from broadcaster.site.uptime import DOWNTIME_WEIGHT
from broadcaster.vocabulary import CLOSED

DESCRIPTIONS = {"none": "All Systems Operational", "minor": "Minor Service Outage",
                "major": "Partial System Outage", "critical": "Major System Outage",
                "maintenance": "Service Under Maintenance"}


def files(settings: Settings, state: SiteState) -> dict[str, str]:
    """Path under output_dir -> JSON text, for every file of the API."""
    page = _page(settings, state)
    components = _components(settings, state)
    unresolved = [_incident(settings, i) for i in state.open]
    planned = [_maintenance(settings, i) for i in state.maintenance]
    recent_planned = [_maintenance(settings, i) for i in state.newest if i.is_maintenance]
    incidents = [_incident(settings, i) for i in state.newest if not i.is_maintenance]
    status = {"indicator": state.indicator, "description": DESCRIPTIONS[state.indicator]}
    out = {
        "summary.json": {"page": page, "components": components, "incidents": unresolved,
                         "scheduled_maintenances": planned, "status": status},
        "status.json": {"page": page, "status": status},
        "components.json": {"page": page, "components": components},
        "incidents.json": {"page": page, "incidents": incidents},
        "incidents/unresolved.json": {"page": page, "incidents": unresolved},
        "scheduled-maintenances.json": {"page": page, "scheduled_maintenances": recent_planned},
        "scheduled-maintenances/upcoming.json": {
            "page": page, "scheduled_maintenances": [m for m in planned if m["status"] == "scheduled"]},
        "scheduled-maintenances/active.json": {
            "page": page, "scheduled_maintenances": [m for m in planned if m["status"] == "in_progress"]},
        "regions.json": lookup_data(settings, state),
        "uptime.json": {"page": page, **_uptime(settings, state)},
    }
    return {f"api/v2/{name}": json.dumps(body, ensure_ascii=False, indent=1) for name, body in out.items()}


def incident_json(settings: Settings, incident: Incident) -> dict[str, Any]:
    """One incident (or maintenance) as incidents.json lists it: what webhooks send too."""
    return _maintenance(settings, incident) if incident.is_maintenance else _incident(settings, incident)


def _uptime(settings: Settings, state: SiteState) -> dict[str, Any]:
    """broadcaster's own file: each component's last 90 days (see site/uptime.py for how)."""
    days = [d.day for d in state.uptime[0].days] if state.uptime else []
    return {
        "days": len(days), "from": days[0].isoformat() if days else None,
        "to": days[-1].isoformat() if days else None, "time_zone": settings.organization.timezone,
        "downtime_weights": DOWNTIME_WEIGHT,
        "components": [{
            "id": _id(settings.site.base_url, "component", u.name), "name": u.name,
            "uptime_percent": u.percent,
            "days": [{"date": d.day.isoformat(), "state": d.state,
                      "seconds": {state: round(spent) for state, spent in d.seconds}} for d in u.days],
        } for u in state.uptime],
    }


def _id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


def _time(value: datetime | None, settings: Settings) -> str | None:
    return value.astimezone(settings.organization.zone).isoformat(timespec="milliseconds") if value else None


def _page(settings: Settings, state: SiteState) -> dict[str, Any]:
    updated = max((i.updated_at for i in state.newest), default=None)
    return {"id": _id(settings.site.base_url), "name": settings.organization.name,
            "url": settings.home_url(), "time_zone": settings.organization.timezone,
            "updated_at": _time(updated, settings)}


def _components(settings: Settings, state: SiteState) -> list[dict[str, Any]]:
    page_id = _id(settings.site.base_url)
    uptime = {u.name: u for u in state.uptime}
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for position, c in enumerate(state.components, start=1):
        group_id = _id(settings.site.base_url, "group", c.group) if c.group else None
        if c.group and c.group not in groups:
            groups[c.group] = {
                "id": group_id, "name": c.group, "status": "operational", "created_at": None,
                "updated_at": None, "position": position, "description": None, "showcase": False,
                "start_date": None, "group_id": None, "page_id": page_id, "group": True,
                "only_show_if_degraded": False, "components": [],
            }
            out.append(groups[c.group])
        component_id = _id(settings.site.base_url, "component", c.name)
        entry: dict[str, Any] = {
            "id": component_id, "name": c.name, "status": c.status, "created_at": None,
            "updated_at": None, "position": position, "description": c.description or None,
            "showcase": True, "start_date": None, "group_id": group_id, "page_id": page_id,
            "group": False, "only_show_if_degraded": False,
        }
        if c.name in uptime:  # broadcaster's extension: Statuspage readers ignore unknown fields
            entry["uptime_percent_90d"] = uptime[c.name].percent
        out.append(entry)
        if c.group:
            group = groups[c.group]
            group["components"].append(component_id)
            group["status"] = worst([group["status"], c.status])
    return out


def _component_status(incident: Incident) -> str:
    if not incident.is_open:
        return "operational"
    if incident.is_maintenance:
        return "under_maintenance" if incident.status is Status.IN_PROGRESS else "operational"
    return BY_IMPACT[incident.impact]


def _maintenance(settings: Settings, incident: Incident) -> dict[str, Any]:
    """A maintenance as Statuspage lists it: an incident with its window; impact "maintenance"."""
    out = {**_incident(settings, incident), "impact": "maintenance",
           "scheduled_for": _time(incident.starts_at, settings),
           "scheduled_until": _time(incident.ends_at, settings)}
    if incident.status is Status.CANCELLED:  # Statuspage has no such status: done, and said why
        out.update(status="completed", cancelled=True)
    return out


def _incident(settings: Settings, incident: Incident) -> dict[str, Any]:
    default = settings.organization.default_locale
    updates = incident.timeline
    postmortems = incident.postmortems
    monitoring = next((u.created_at for u in updates if u.status is Status.MONITORING), None)
    resolved = next((u.created_at for u in reversed(updates)
                     if u.status in CLOSED), None)
    affected = [
        {"code": _id(settings.site.base_url, "component", name), "name": name,
         "old_status": "operational",
         "new_status": _component_status(incident)}
        for name in incident.components
    ]
    return {
        "id": incident.id,
        "name": incident.title(default),
        "status": incident.status.value,
        "created_at": _time(incident.created_at, settings),
        "updated_at": _time(incident.updated_at, settings),
        "monitoring_at": _time(monitoring, settings),
        "resolved_at": _time(resolved, settings),
        "impact": incident.impact.value,
        "shortlink": settings.statement_url(incident.id),
        "started_at": _time(incident.created_at, settings),
        "page_id": _id(settings.site.base_url),
        "incident_updates": [
            {
                "id": u.id,
                "status": u.status.value,
                "body": markup.to_plain(u.text(default).message),
                "incident_id": incident.id,
                "created_at": _time(u.created_at, settings),
                "updated_at": _time(u.created_at, settings),
                "display_at": _time(u.created_at, settings),
                "affected_components": affected or None,
                "deliver_notifications": True,
                "custom_tweet": None,
                "tweet_id": None,
            }
            for u in reversed(updates)
        ],
        "components": [
            {"id": a["code"], "name": a["name"], "status": a["new_status"]} for a in affected
        ],
        **_postmortem(settings, postmortems),
    }


def _postmortem(settings: Settings, postmortems: Sequence[Update]) -> dict[str, Any]:
    """An incident's postmortem as Statuspage's manage API names its fields: the text (Markdown,
    the default locale's), when it was published, and when it was last corrected."""
    if not postmortems:
        return {"postmortem_body": None, "postmortem_published_at": None,
                "postmortem_body_last_updated_at": None}
    return {"postmortem_body": postmortems[-1].text(settings.organization.default_locale).message,
            "postmortem_published_at": _time(postmortems[0].created_at, settings),
            "postmortem_body_last_updated_at": _time(postmortems[-1].created_at, settings)}
