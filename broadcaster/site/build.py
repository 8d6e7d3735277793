"""`broadcaster site build`: the whole status site rewritten from the ledger.

Updates rewrite only what they touch; this is for a new output_dir, changed templates or
settings, or a site that was lost. Files whose content has not changed are not rewritten.
"""

from __future__ import annotations

from dataclasses import replace

from broadcaster.ledger import open_ledger
from broadcaster.model import Incident
from broadcaster.report import BuildReport
from broadcaster.settings import Settings
from broadcaster.site.files import site_files
from broadcaster.site.state import SiteState, site_state


def build_site(settings: Settings) -> BuildReport:
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

        files = site_files(page(incidents[0], state), statement=False, month=False, shared=True)
        for incident in incidents:
            files.update(site_files(page(incident, state), statement=True, month=False, shared=False))
        for key, _ in state.months:
            of_month = ledger.incidents_of_month(key)
            month_state = replace(state, month=(key, of_month))
            files.update(site_files(page(of_month[0], month_state), statement=False, month=True,
                                    shared=False))
    website = open_channel(settings, "website")
    try:
        receipt = website.send(Post(text="", files=files), (), resumed=False)
    except DeliveryError as exc:
        return BuildReport(0, len(files), str(exc), failed=True)
    return BuildReport(len(receipt.meta["written"]), len(files))
