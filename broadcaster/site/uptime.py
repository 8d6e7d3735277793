"""How each component has done over the last 90 days, from the incident history in the ledger.

Every published update starts a period that lasts until the next update (or until now): an
incident's update puts the components it names in the state of its impact (minor → degraded
performance, major → partial outage, critical → major outage) until the update that resolves
it; a maintenance's "in progress" puts them under maintenance until it completes. Periods are
clipped to each day in the organisation's time zone, and a day shows the worst state it had.

The percentage is counted as Statuspage counts it: a major outage is downtime, a partial outage
counts 30 % of its time, degraded performance and planned maintenance are not downtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from broadcaster import defaults
from broadcaster.model import Incident, Status
from broadcaster.vocabulary import BY_IMPACT, CLOSED, COMPONENT_STATES

DAYS = defaults.UPTIME_DAYS
#: How much of its time each state counts as downtime.
DOWNTIME_WEIGHT = {"major_outage": 1.0, "partial_outage": 0.3}


@dataclass(frozen=True)
class Day:
    """One day of one component: its worst state, and how long it spent in each bad one."""

    day: date
    state: str
    #: Seconds in each state other than operational, worst first.
    seconds: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ComponentUptime:
    name: str
    days: tuple[Day, ...]
    #: Share of the time up, in percent, downtime weighted as the module says.
    percent: float


@dataclass(frozen=True)
class _Period:
    """A stretch in one state, in Unix seconds (comparing aware datetimes of two zones costs
    a zone lookup each time: floats keep a write's 90 days × components cheap)."""

    components: frozenset[str]
    state: str
    start: float
    end: float


def component_uptime(names: Sequence[str], incidents: Iterable[Incident], now: datetime,
                     zone: ZoneInfo, days: int = DAYS) -> list[ComponentUptime]:
    """Each component's last `days` days (today last, until `now`), in `zone`'s days."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    bounds = [_midnight(first + timedelta(days=n), zone).timestamp() for n in range(days + 1)]
    bounds[-1] = min(bounds[-1], now.timestamp())
    periods = [p for p in _periods(incidents, now) if p.end > bounds[0]]
    out = []
    for name in names:
        key = name.casefold()
        mine = [p for p in periods if key in p.components]
        row = [_day(first + timedelta(days=n), mine, bounds[n], bounds[n + 1]) for n in range(days)]
        elapsed = now.timestamp() - bounds[0]
        down = sum(DOWNTIME_WEIGHT.get(state, 0.0) * seconds for d in row for state, seconds in d.seconds)
        percent = 100.0 * (1 - down / elapsed) if elapsed > 0 else 100.0
        out.append(ComponentUptime(name, tuple(row), round(max(0.0, percent), 2)))
    return out


def _periods(incidents: Iterable[Incident], now: datetime) -> list[_Period]:
    """Every stretch of time an update put some components in a state other than operational."""
    found = []
    for incident in incidents:
        updates = sorted(incident.published, key=lambda u: u.created_at)
        for update, following in zip(updates, [*updates[1:], None], strict=True):
            if incident.is_maintenance:
                state = "under_maintenance" if update.status is Status.IN_PROGRESS else None
            else:
                state = None if update.status in CLOSED else BY_IMPACT[update.impact]
            end = following.created_at if following is not None else now
            if state and update.components and end > update.created_at:
                found.append(_Period(frozenset(c.casefold() for c in update.components), state,
                                     update.created_at.timestamp(), min(end, now).timestamp()))
    return found


def _day(day: date, periods: Sequence[_Period], start: float, end: float) -> Day:
    """The day's worst state, and its time in each state (from `start` to `end`, its midnights
    or now): where incidents overlap on a component, each moment counts once, in the worse state."""
    mine = [p for p in periods if p.start < end and p.end > start]
    cuts = sorted({start, end, *(max(p.start, start) for p in mine), *(min(p.end, end) for p in mine)})
    seconds: dict[str, float] = {}
    for left, right in pairwise(cuts):
        covering = [p.state for p in mine if p.start <= left and p.end >= right]
        if covering and right > left:
            state = max(covering, key=COMPONENT_STATES.index)
            seconds[state] = seconds.get(state, 0.0) + (right - left)
    ordered = tuple(sorted(seconds.items(), key=lambda kv: COMPONENT_STATES.index(kv[0]), reverse=True))
    return Day(day, ordered[0][0] if ordered else "operational", ordered)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)
