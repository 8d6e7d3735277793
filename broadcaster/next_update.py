"""When the next update is promised: "30m", "1h30m", "14:30" (next such time) or an ISO date."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from broadcaster.errors import InputError

_DURATION = re.compile(r"^(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m(?:in)?)?$")


def parse_next_update(
    value: datetime | timedelta | str | None, now: datetime, zone: ZoneInfo
) -> datetime | None:
    """The promised time as an aware datetime, or None when nothing is promised."""
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return _future(now + value, value)
    if isinstance(value, datetime):
        return _future(value if value.tzinfo else value.replace(tzinfo=zone), value)
    text = value.strip()
    match = _DURATION.match(text)
    if match and (match["h"] or match["m"]):
        return now + timedelta(hours=int(match["h"] or 0), minutes=int(match["m"] or 0))
    try:
        clock = time.fromisoformat(text)
    except ValueError:
        pass
    else:
        local = now.astimezone(zone)
        candidate = datetime.combine(local.date(), clock, tzinfo=zone)
        return candidate if candidate > local else candidate + timedelta(days=1)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"--next-update {value!r}: give a delay (30m, 1h30m), a time (14:30) "
            "or a date and time (2026-11-22T14:30)"
        ) from None
    return _future(when if when.tzinfo else when.replace(tzinfo=zone), value)


def _future(when: datetime, given: object) -> datetime:
    if when.tzinfo is not None and when < datetime.now(when.tzinfo) - timedelta(minutes=1):
        raise InputError(f"--next-update {given!s}: that is in the past")
    return when
