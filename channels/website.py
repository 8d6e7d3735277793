"""The company website: the official statement and the status index, as static files.

It is published first, and its statement page is what every other channel links to. Pages
are rendered for every configured locale (the default at the root, the others under
/{locale}/) and written atomically, so a web server never serves half a page.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from broadcaster.atomic import write_atomic
from broadcaster.channels.base import Channel, ChannelSettings, ChannelSpec, Post, tidy
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.masking import without_secrets
from broadcaster.model import Receipt
from broadcaster.render import Page

PUBLISH_COMMAND_TIMEOUT = 300


class WebsiteSettings(ChannelSettings):
    enabled: bool = True


class WebsiteChannel(Channel):
    spec = ChannelSpec(
        name="website",
        summary="the official statement and status pages, as static files in [site] output_dir",
        settings=WebsiteSettings,
        needs_statement_link=False,
        publishes_statement=True,
        every_locale=True,
        template_extension="html",
    )

    def compose(self, page: Page) -> Post:
        """Every file this update touches: its statement, the indexes, its month, feeds, JSON."""
        # A draft is written nowhere: rendering the whole site for it would only slow the hooks.
        files = {} if page.update.draft else site_files(
            page, statement=not page.incident.is_draft, month=page.site.month is not None)
        # What the statement says in each locale, as the preview shows it before publishing.
        words = [tidy(replace(page.for_locale(loc), extension="txt").render("statement"))
                 for loc in page.locales]
        return Post(text="\n\n".join(words), link=page.statement_url, files=files)

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        # Writing the same files again is harmless, so a resumed attempt needs no special care.
        root: Path = self.context.settings.site.output_dir
        written = []
        for relative, content in sorted(post.files.items(), key=_index_last):
            path = root / relative
            if not _inside(root, path):
                raise PermanentDeliveryError(
                    f"cannot write {path}: it leads outside {root} through a link; the site is "
                    "written only inside output_dir (remove the link, then `broadcaster retry`)")
            try:
                if write_atomic(path, content):
                    written.append(relative)
            except OSError as exc:
                raise PermanentDeliveryError(
                    f"cannot write {path}: {exc.strerror or exc}; fix it and run `broadcaster retry`"
                ) from None
        self._run_publish_command(root)
        return Receipt(url=post.link, meta={"written": written})

    def _run_publish_command(self, root: Path) -> None:
        command = self.context.settings.site.publish_command
        if not command:
            return
        try:
            # The command gets no secret: it is the site's business, not the platforms'.
            done = subprocess.run(
                shlex.split(command), cwd=root, capture_output=True, text=True,
                timeout=PUBLISH_COMMAND_TIMEOUT, check=False, env=without_secrets(os.environ),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TransientDeliveryError(f"publish_command could not run: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TransientDeliveryError(
                f"publish_command exited {done.returncode}: {' | '.join(tail)}"
            )


def site_files(page: Page, *, statement: bool, month: bool, shared: bool = True) -> dict[str, str]:
    """The pages (every locale) and shared files of the site that `page` touches.

    `statement`: the incident's own page; `month`: its month in the history; `shared`: the
    index, the history index, the feeds and the JSON, which every write refreshes.
    """
    from broadcaster import feeds, statuspage

    settings = page.settings
    default = settings.organization.default_locale
    pages: dict[str, str] = {}
    if statement:
        pages[f"incidents/{page.incident.id}/index.html"] = "statement"
    if month and page.site.month is not None:
        pages[f"history/{page.site.month[0]}/index.html"] = "month"
    if shared:
        pages["index.html"] = "index"
        pages["history/index.html"] = "history"
    files: dict[str, str] = {}
    for locale in page.locales:
        localized = page.for_locale(locale)
        prefix = "" if locale == default else f"{locale}/"
        for path, template in pages.items():
            folder = path.removesuffix("index.html")
            alternates = {loc: settings.home_url(loc) + folder for loc in page.locales}
            files[prefix + path] = localized.render(template, alternates=alternates)
        if shared:
            files[f"{prefix}feed.atom"] = feeds.atom(settings, page.site, locale, localized.variables["t"])
    if shared:
        files.update(statuspage.files(settings, page.site))
    return files


def _inside(root: Path, path: Path) -> bool:
    """Whether writing `path` stays inside `root` (no folder on the way, nor the file, is a
    link leading out). A folder not created yet is inside."""
    probe = path
    while not (probe.exists() or probe.is_symlink()):
        if probe == root or probe == probe.parent:
            return True  # nothing on the way exists yet: it will be created inside
        probe = probe.parent
    return probe.resolve().is_relative_to(root.resolve())


def _index_last(item: tuple[str, str]) -> tuple[bool, str]:
    """Write statements before anything else, so nothing ever links to a page not yet written."""
    return ("incidents/" not in item[0] or item[0].endswith(".json"), item[0])
