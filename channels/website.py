"""The company website: the official statement and the status index, as static files.

It is published first, and its statement page is what every other channel links to. Pages
are rendered for every configured locale (the default at the root, the others under
/{locale}/) and written atomically, so a web server never serves half a page.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from broadcaster.atomic import write_atomic
from broadcaster.channels.base import Channel, ChannelSettings, ChannelSpec, Post
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
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
        files: dict[str, str] = {}
        default = page.settings.organization.default_locale
        statements = {loc: page.settings.statement_url(page.incident.id, loc) for loc in page.locales}
        homes = {loc: page.settings.home_url(loc) for loc in page.locales}
        for locale in page.locales:
            localized = page.for_locale(locale)
            prefix = "" if locale == default else f"{locale}/"
            if not page.incident.is_draft:
                files[f"{prefix}incidents/{page.incident.id}/index.html"] = localized.render(
                    "statement", alternates=statements
                )
            files[f"{prefix}index.html"] = localized.render("index", alternates=homes)
        return Post(text=page.statement_url, link=page.statement_url, files=files)

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        # Writing the same files again is harmless, so a resumed attempt needs no special care.
        root: Path = self.context.settings.site.output_dir
        written = []
        for relative, content in sorted(post.files.items(), key=_index_last):
            path = root / relative
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
            done = subprocess.run(
                shlex.split(command), cwd=root, capture_output=True, text=True,
                timeout=PUBLISH_COMMAND_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TransientDeliveryError(f"publish_command could not run: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TransientDeliveryError(
                f"publish_command exited {done.returncode}: {' | '.join(tail)}"
            )


def _index_last(item: tuple[str, str]) -> tuple[bool, str]:
    """Write statements before indexes, so no index ever links to a page not yet written."""
    return ("incidents/" not in item[0], item[0])
