"""`broadcaster site build`: the whole status site rewritten from the ledger.

Updates rewrite only what they touch; this is for a new output_dir, changed templates or
settings, or a site that was lost. Files whose content has not changed are not rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from broadcaster.ledger import open_ledger
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
    from broadcaster.channels.base import Post
    from broadcaster.errors import DeliveryError
    from broadcaster.preflight import open_channel
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
        files = site_files(page(incidents[0], state), statement=False, month=False, shared=True)
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
    website = open_channel(settings, "website")
    try:
        receipt = website.send(Post(text="", files=files), (), resumed=False)
    except DeliveryError as exc:
        return BuildReport(0, len(files) + len(kept), str(exc), failed=True)
    return BuildReport(len(receipt.meta["written"]), len(files) + len(kept))


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
