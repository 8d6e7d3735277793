"""How times read: in the organisation's zone, in the reader's language, the zone named.

Every page, post, email, feed and JSON that shows a time to a person goes through here, so a
maintenance window reads the same everywhere ("24 Nov 2026, 02:00–05:00 CET"): minutes, not
seconds, and the zone named the same way in every locale (Babel would say "CET" in Spanish
but "+0100" in English), or as `[organization] timezone_label` says.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broadcaster.settings import Settings


class Clock:
    """Times for one locale of one organisation."""

    def __init__(self, settings: Settings, locale: str) -> None:
        from babel import Locale

        self.zone = settings.organization.zone
        self.label = settings.organization.zone_label
        self.locale = Locale.parse(locale, sep="-")
        #: Times already written: a history lists hundreds, and Babel is the costly part.
        self._written: dict[datetime, str] = {}

    def date(self, value: datetime | None) -> str:
        """"24 Nov 2026" / "24 nov 2026"."""
        from babel.dates import format_date

        return "" if value is None else format_date(value.astimezone(self.zone), "medium", locale=self.locale)

    def clock(self, value: datetime) -> str:
        from babel.dates import format_time

        return format_time(value, "HH:mm", tzinfo=self.zone, locale=self.locale)

    def time(self, value: datetime | None) -> str:
        """"14:30 CET"."""
        return "" if value is None else f"{self.clock(value)} {self.label(value)}"

    def datetime(self, value: datetime | None) -> str:
        """"23 Nov 2026, 09:46 CET"."""
        if value is None:
            return ""
        written = self._written.get(value)
        if written is None:
            if len(self._written) > 10_000:  # a whole site's build: keep it bounded
                self._written.clear()
            written = self._written[value] = f"{self.date(value)}, {self.time(value)}"
        return written

    def window(self, starts: datetime | None, ends: datetime | None) -> str:
        """"24 Nov 2026, 02:00–05:00 CET", or with both dates when it spans midnight."""
        if starts is None or ends is None:
            return ""
        label = self.label(ends)
        if starts.astimezone(self.zone).date() == ends.astimezone(self.zone).date():
            return f"{self.date(starts)}, {self.clock(starts)}–{self.clock(ends)} {label}"
        return f"{self.date(starts)}, {self.clock(starts)} – {self.date(ends)}, {self.clock(ends)} {label}"
