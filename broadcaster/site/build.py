"""`broadcaster site build`: the whole status site rewritten from the ledger.

Updates rewrite only what they touch; this is for a new output_dir, changed templates or
settings, or a site that was lost. Files whose content has not changed are not rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from broadcaster.ledger import Ledger, open_ledger
from broadcaster.model import Incident
from broadcaster.report import Result
from broadcaster.settings import Settings
from broadcaster.site.files import digest_mark, page_paths, site_files
from broadcaster.site.state import SiteState, site_state

if TYPE_CHECKING:
    from broadcaster.render import Page


def _unchanged(settings: Settings, page: Page, template: str) -> dict[str, str]:
    """The page's files as they are on disk if they were made from exactly what they would be
    made from now (the digest they end with); else nothing, and the page is rendered."""
    mark = digest_mark(page.digest(template))
    found: dict[str, str] = {}
    for path in page_paths(page, template):
        try:
            with (settings.site.output_dir / path).open("rb") as file:
                file.seek(0, 2)
                file.seek(max(0, file.tell() - len(mark)))
                if file.read() != mark.encode():
                    return {}
        except OSError:
            return {}
        found[path] = ""
    return found


def build_site(settings: Settings, *, full: bool = False) -> BuildReport:
    """Render every statement, every month, the index, feeds and JSON; write them through the
    website channel (so its link checks and publish_command apply)."""
    from broadcaster.errors import DeliveryError
    from broadcaster.render import Page, Templates

    with open_ledger(settings, read_only=True) as ledger:
        incidents = ledger.incidents()
        if not incidents:
            return BuildReport(0, 0, "no published incidents yet: the site is written with the first one")
        templates = Templates(settings)
        state = site_state(ledger, settings)
        default = settings.organization.default_locale

        def page(incident: Incident, site: SiteState) -> Page:
            return Page("website", "html", incident.latest, incident, default, templates, site)

        # Statements and months made from what they would be made from now are left as they
        # are (not rendered, not compared): a build that changes nothing renders only the
        # shared pages. `kept` counts them.
        files: dict[str, str] = {}
        kept: dict[str, str] = {}
        for incident in incidents:
            statement = page(incident, state)
            unchanged = {} if full else _unchanged(settings, statement, "statement")
            kept.update(unchanged)
            if not unchanged:
                files.update(site_files(statement, statement=True, month=False, shared=False))
        for key, _ in state.months:
            of_month = ledger.incidents_of_month(key)
            month = page(of_month[0], replace(state, month=(key, of_month)))
            unchanged = {} if full else _unchanged(settings, month, "month")
            kept.update(unchanged)
            if not unchanged:
                files.update(site_files(month, statement=False, month=True, shared=False))
        # The shared pages list every incident: rendered under the site lock from the ledger
        # as it is then, as every update's are, so a build never writes them as they were
        # before an update published while it rendered the statements.
        try:
            with ledger.service_lock("site"):
                now = site_state(ledger, settings)
                latest = ledger.incidents(limit=1)[0]
                files.update(site_files(page(latest, now), statement=False, month=False, shared=True))
                written = _write(settings, files)
        except DeliveryError as exc:
            return BuildReport(0, len(files) + len(kept), str(exc), failed=True)
    return BuildReport(written, len(files) + len(kept))


def _write(settings: Settings, files: dict[str, str]) -> int:
    """Write `files` through the website channel (its link checks and publish_command apply);
    how many had changed. Raises DeliveryError."""
    from broadcaster.channels.base import Post
    from broadcaster.preflight import open_channel

    receipt = open_channel(settings, "website").send(Post(text="", files=files), (), resumed=False)
    return len(receipt.meta["written"])


def turn_the_day(settings: Settings, ledger: Ledger, now: datetime) -> str | None:
    """Rewrite the shared pages (index, history, component pages, feeds, JSON) if the
    organisation's day has turned since they were last written; what was done, or None.

    The uptime bars end with today and every write redraws them, but a quiet week writes
    nothing: the bar would still end on the day of the last incident, and its "today" would be
    a week old. `tick` runs every minute, so this moves the bars on at midnight in the
    organisation's zone. The day the pages were made for is the `to` of `api/v2/uptime.json`.
    They are rendered under the site lock from the ledger as it is then, like every write, so
    an update published at the same moment is never undone. Raises DeliveryError.
    """
    from broadcaster.render import Page, Templates

    today = now.astimezone(settings.organization.zone).date().isoformat()
    try:
        shown = json.loads((settings.site.output_dir / "api" / "v2" / "uptime.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None  # no site yet: the first published update writes it (or `site build`)
    if shown.get("to") == today and shown.get("time_zone") == settings.organization.timezone:
        return None
    with ledger.service_lock("site"):
        latest = ledger.incidents(limit=1)
        if not latest:
            return None
        page = Page("website", "html", latest[0].latest, latest[0], settings.organization.default_locale,
                    Templates(settings), site_state(ledger, settings, now=now))
        files = site_files(page, statement=False, month=False, shared=True)
        written = _write(settings, files)
    return f"the status page's day turned from {shown.get('to')} to {today}: {written} files rewritten"


@dataclass(frozen=True)
class BuildReport(Result):
    """What `site build` wrote."""

    written: int
    files: int
    note: str = ""
    failed: bool = False

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "files": self.files, "note": self.note or None,
                "exit_code": self.exit_code}

    def text(self) -> str:
        done = f"{self.files} files in the site; {self.written} written (the rest were unchanged)."
        return f"{done}\n{self.note}" if self.note else done
