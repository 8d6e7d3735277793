"""The status site's Atom feed (one per locale), with feedgen: one entry per update."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broadcaster import defaults, markup
from broadcaster.model import Kind
from broadcaster.settings import Settings
from broadcaster.site.state import SiteState

#: Entries in a feed: the newest updates of the newest incidents.
ENTRIES = defaults.FEED_ENTRIES


def atom(settings: Settings, state: SiteState, locale: str, words: Mapping[str, Any]) -> str:
    """The feed for `locale`; `words` are that locale's interface words (strings.<locale>.toml)."""
    from feedgen.feed import FeedGenerator

    home = settings.home_url(locale)
    # The timeline's updates, and the postmortem as one entry that a revision updates.
    updates = sorted(((u, i) for i in state.newest for u in (*i.timeline, *i.postmortems[-1:])),
                     key=lambda pair: pair[0].created_at, reverse=True)[:ENTRIES]
    feed = FeedGenerator()
    feed.id(home)
    feed.title(f"{settings.organization.name} · {words['site']['title']}")
    feed.author({"name": settings.organization.name})
    feed.link(href=home, rel="alternate")
    feed.link(href=f"{home}feed.atom", rel="self")
    feed.language(locale)
    feed.updated(updates[0][0].created_at if updates else _epoch())
    for update, incident in reversed(updates):  # feedgen puts the last added first
        postmortem = update.kind is Kind.POSTMORTEM
        url = f"{settings.statement_url(incident.id, locale)}#" + \
            ("postmortem" if postmortem else f"update-{update.seq}")
        entry = feed.add_entry()
        entry.id(url)
        heading = (words["maintenance"]["heading"] if incident.is_maintenance else words["status"])
        label = words["postmortem"]["title"] if postmortem else heading[update.status.value]
        entry.title(f"{label}: {incident.title(locale)}")
        entry.link(href=url, rel="alternate")
        entry.published(incident.postmortems[0].created_at if postmortem else update.created_at)
        entry.updated(update.created_at)
        entry.content(markup.to_html(update.text(locale).message), type="html")
    return feed.atom_str(pretty=True).decode("utf-8")


def _epoch():  # a feed with no entries still needs an <updated>
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)
