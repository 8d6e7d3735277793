"""The status site as files: which pages, feeds and JSON an update touches, and in what order
they are written (statements first, so no index ever links to a page not written yet)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broadcaster.site import feeds, statuspage
from broadcaster.site.state import component_slug

if TYPE_CHECKING:
    from broadcaster.render import Page


def site_files(page: Page, *, statement: bool, month: bool, shared: bool = True) -> dict[str, str]:
    """The pages (every locale) and shared files of the site that `page` touches.

    `statement`: the incident's own page; `month`: its month in the history; `shared`: the
    index, the history index, each component's page, the feeds and the JSON, which every write
    refreshes.
    """
    settings = page.settings
    default = settings.organization.default_locale
    pages: dict[str, str] = {}
    if statement:
        pages[f"incidents/{page.incident.id}/index.html"] = "statement"
    if month and page.site.month is not None:
        pages[f"history/{page.site.month[0]}/index.html"] = "month"
    extra: dict[str, dict[str, str]] = {}
    if shared:
        pages["index.html"] = "index"
        pages["history/index.html"] = "history"
        for component in settings.components:  # each with its bar and incidents
            path = f"components/{component_slug(component.name)}/index.html"
            pages[path] = "component"
            extra[path] = {"component": component.name}
    files: dict[str, str] = {}
    for locale in page.locales:
        localized = page.for_locale(locale)
        prefix = "" if locale == default else f"{locale}/"
        for path, template in pages.items():
            folder = path.removesuffix("index.html")
            alternates = {loc: settings.home_url(loc) + folder for loc in page.locales}
            files[prefix + path] = localized.render(template, alternates=alternates, **extra.get(path, {}))
            if template in ("statement", "month"):  # what it was made from: `site build` skips it
                files[prefix + path] += digest_mark(page.digest(template))
        if shared:
            files[f"{prefix}feed.atom"] = feeds.atom(settings, page.site, locale, localized.variables["t"])
    if shared:
        files.update(statuspage.files(settings, page.site))
    return files


def digest_mark(digest: str) -> str:
    """The comment a statement or month page ends with: the digest of what it was made from."""
    return f"<!-- broadcaster inputs {digest} -->\n"


def page_paths(page: Page, template: str) -> list[str]:
    """The statement's or the month's page in every locale."""
    default = page.settings.organization.default_locale
    path = (f"incidents/{page.incident.id}/index.html" if template == "statement"
            else f"history/{page.site.month[0] if page.site.month else ''}/index.html")
    return [("" if locale == default else f"{locale}/") + path for locale in page.locales]


def writing_order(item: tuple[str, str]) -> tuple[bool, str]:
    """Write statements before anything else, so nothing ever links to a page not yet written."""
    return ("incidents/" not in item[0] or item[0].endswith(".json"), item[0])
