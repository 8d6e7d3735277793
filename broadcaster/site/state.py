"""The status site's state: what its pages and feeds show besides the incident at hand.

Every write reads only bounded slices of the ledger (open incidents, the newest incidents,
the month of the incident being written, the list of months), so the cost of publishing an
update does not grow with years of history. `broadcaster site build` is the one operation
that walks everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from broadcaster import defaults
from broadcaster.ledger import Ledger
from broadcaster.model import Impact, Incident, Status
from broadcaster.settings import Settings
from broadcaster.site.uptime import ComponentUptime, component_uptime
from broadcaster.vocabulary import BY_IMPACT, COMPONENT_STATES

#: Statuspage's overall indicator by the worst open impact ("maintenance" while a window runs
#: and nothing is broken).
INDICATOR = {None: "none", Impact.MINOR: "minor", Impact.MAJOR: "major", Impact.CRITICAL: "critical"}
#: How many incidents the feeds, the JSON and the index consider (Statuspage lists 50).
NEWEST = defaults.SITE_NEWEST
UPTIME_DAYS = defaults.UPTIME_DAYS
#: How many of the latest months the history page tells in full (the rest are links).
HISTORY_MONTHS = defaults.HISTORY_MONTHS


@dataclass(frozen=True)
class ComponentState:
    name: str
    group: str | None
    status: str
    description: str = ""


@dataclass(frozen=True)
class SiteState:
    """What the status site lists besides the incident at hand."""

    open: Sequence[Incident] = ()
    #: Planned maintenance not yet completed: scheduled or in progress.
    maintenance: Sequence[Incident] = ()
    recent: Sequence[Incident] = ()
    #: The newest incidents, open or not (feeds and incidents.json).
    newest: Sequence[Incident] = ()
    #: The month page being written: ("YYYY-MM", its incidents).
    month: tuple[str, Sequence[Incident]] | None = None
    months: Sequence[tuple[str, int]] = ()
    components: Sequence[ComponentState] = field(default_factory=tuple)
    #: Each component's last 90 days, as of when the state was read.
    uptime: Sequence[ComponentUptime] = ()
    #: The latest months with incidents, newest first, each with its incidents (newest first):
    #: what the history page tells in full, and what the component pages list.
    history: Sequence[tuple[str, Sequence[Incident]]] = ()
    #: What every variant of this state shares: `dataclasses.replace(state, month=…)` keeps it,
    #: so the site-wide views (bars, history, areas) are made once, not once per month page.
    shared: object = field(default_factory=object)

    @property
    def worst_impact(self) -> Impact | None:
        order = list(Impact)
        return max((i.impact for i in self.open), key=order.index, default=None)

    @property
    def in_progress(self) -> list[Incident]:
        """Maintenance windows running now."""
        return [m for m in self.maintenance if m.status is Status.IN_PROGRESS]

    @property
    def indicator(self) -> str:
        if self.worst_impact is None and self.in_progress:
            return "maintenance"
        return INDICATOR[self.worst_impact]


def component_states(settings: Settings, open_incidents: Sequence[Incident],
                     maintenance: Sequence[Incident] = ()) -> list[ComponentState]:
    """Each configured component's state, from the open incidents and maintenance naming it."""
    affected = [(BY_IMPACT[i.impact], i) for i in open_incidents]
    affected += [("under_maintenance", m) for m in maintenance if m.status is Status.IN_PROGRESS]
    states = []
    for component in settings.components:
        key = component.name.casefold()
        status = worst(cause for cause, i in affected if key in {c.casefold() for c in i.components})
        states.append(ComponentState(component.name, component.group, status, component.description))
    return states


def worst(states: Iterable[str]) -> str:
    """The worst of some component states (operational when there are none)."""
    return max(states, key=COMPONENT_STATES.index, default="operational")


def site_state(ledger: Ledger, settings: Settings, incident: Incident | None = None, *,
               now: datetime | None = None) -> SiteState:
    """The site as it will be once `incident` (about to be recorded) is in the ledger, with the
    uptime bars ending at `now` (the present unless told)."""

    def merged(found: Sequence[Incident], belongs: bool) -> list[Incident]:
        rest = [i for i in found if incident is None or i.id != incident.id]
        if incident is not None and belongs and not incident.is_draft:
            rest.append(incident)
        return sorted(rest, key=lambda i: i.updated_at, reverse=True)

    open_all = merged(ledger.incidents(open_only=True), incident is not None and incident.is_open)
    open_now = [i for i in open_all if not i.is_maintenance]
    maintenance = sorted((i for i in open_all if i.is_maintenance), key=lambda i: i.starts_at)
    newest = merged(ledger.incidents(limit=NEWEST), True)[:NEWEST]
    recent = [i for i in newest if not i.is_open and not i.is_maintenance][: settings.site.recent_history]
    month = None
    months = dict(ledger.months())
    if incident is not None and not incident.is_draft:
        key = incident.created_at.strftime("%Y-%m")
        of_month = merged(ledger.incidents_of_month(key), True)
        months[key] = len(of_month)
        month = (key, sorted(of_month, key=lambda i: i.created_at, reverse=True))
    return SiteState(
        open=open_now, maintenance=maintenance, recent=recent, newest=newest, month=month,
        months=sorted(months.items(), reverse=True),
        components=component_states(settings, open_now, maintenance),
        **_recent(ledger, settings, merged, open_all, months, now or datetime.now(UTC)),
    )


def _recent(ledger: Ledger, settings: Settings,
            merged: Callable[[Sequence[Incident], bool], list[Incident]],
            open_all: Sequence[Incident], months: dict[str, int], now: datetime) -> dict[str, Any]:
    """The components' last 90 days and the latest months' incidents: read from the months the
    90 days span (and one before, for an incident that began earlier) and every open incident;
    a bounded read, like the rest."""
    seen: dict[str, Incident] = {i.id: i for i in open_all}  # the incident at hand as it will be
    wanted = {key for key, _ in sorted(months.items(), reverse=True)[:HISTORY_MONTHS]}
    day = now - timedelta(days=UPTIME_DAYS + 31)
    while day <= now + timedelta(days=31):
        wanted.add(day.strftime("%Y-%m"))
        day += timedelta(days=28)
    by_month: dict[str, list[Incident]] = {}
    for key in sorted(wanted):
        for i in merged(ledger.incidents_of_month(key), True):
            seen.setdefault(i.id, i)
    for i in seen.values():
        if not i.is_draft:
            by_month.setdefault(i.created_at.strftime("%Y-%m"), []).append(i)
    history = [(key, sorted(found, key=lambda i: i.created_at, reverse=True))
               for key, found in sorted(by_month.items(), reverse=True)][:HISTORY_MONTHS]
    uptime = component_uptime([c.name for c in settings.components], seen.values(), now,
                              settings.organization.zone, UPTIME_DAYS) if settings.components else []
    return {"uptime": uptime, "history": history}


def component_slug(name: str) -> str:
    """A component's folder on the site: `components/{slug}/` ("Payments API" → payments-api)."""
    import hashlib
    import re
    import unicodedata

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug or hashlib.sha256(name.encode()).hexdigest()[:10]


#: How far ahead the lookup shows planned maintenance for a place.
MAINTENANCE_AHEAD = timedelta(days=defaults.MAINTENANCE_AHEAD_DAYS)


def lookup_data(settings: Settings, state: SiteState) -> dict[str, Any]:
    """What the page's postcode and region lookup reads (api/v2/regions.json).

    Names are canonical (the JSON's); `label` gives each locale's. The script applies the
    nesting rules of `places` and shows maintenance running or starting within 7 days.
    """
    from broadcaster.clock import Clock

    locales = settings.organization.locales
    clocks = {loc: Clock(settings, loc) for loc in locales}

    def entry(i: Incident) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": i.id,
            "kind": "maintenance" if i.is_maintenance else "incident",
            "impact": i.impact.value,
            "status": i.status.value,
            "regions": list(i.regions),
            "components": list(i.components),
            "title": {loc: i.title(loc) for loc in locales},
            "url": {loc: settings.statement_url(i.id, loc) for loc in locales},
        }
        if i.is_maintenance:
            out.update(starts_at=i.starts_at.isoformat() if i.starts_at else None,
                       ends_at=i.ends_at.isoformat() if i.ends_at else None,
                       window={loc: clocks[loc].window(i.starts_at, i.ends_at) for loc in locales})
        return out

    return {
        "regions": [{"name": r.name, "postcodes": r.postcodes,
                     "label": {loc: r.names.get(loc, r.name) for loc in locales}} for r in settings.regions],
        "incidents": [entry(i) for i in state.open],
        "maintenance": [entry(m) for m in state.maintenance],
    }


def soon(maintenance: Incident, now: datetime) -> bool:
    """Running now, or starting within `MAINTENANCE_AHEAD`: what a place's lookup lists."""
    return maintenance.status is Status.IN_PROGRESS or (
        maintenance.starts_at is not None and maintenance.starts_at - now <= MAINTENANCE_AHEAD)


def areas(settings: Settings, state: SiteState, now: datetime) -> list[tuple[str, list[Incident]]]:
    """Each configured region with what concerns it now (the lookup's answers, for readers
    without JavaScript): open incidents, and maintenance running or starting soon."""
    from broadcaster.places import Places

    places = Places.of(settings.regions)
    items = [*state.open, *(m for m in state.maintenance if soon(m, now))]
    return [(r.name, [i for i in items if places.touches(i.regions, [r.name])]) for r in settings.regions]
