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
from typing import TYPE_CHECKING

from broadcaster.atomic import write_atomic
from broadcaster.channels.base import ChannelSettings, ChannelSpec, Post, StatementChannel, tidy
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.masking import without_secrets
from broadcaster.model import Receipt

if TYPE_CHECKING:
    from broadcaster.render import Page

PUBLISH_COMMAND_TIMEOUT = 300


class WebsiteSettings(ChannelSettings):
    enabled: bool = True


class WebsiteChannel(StatementChannel):
    spec = ChannelSpec(
        name="website",
        summary="the official statement and status pages, as static files in [site] output_dir",
        settings=WebsiteSettings,
    )

    def compose(self, page: Page) -> Post:
        """Every file this update touches: its statement, the indexes, its month, feeds, JSON."""
        from broadcaster.site.files import site_files

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
        from broadcaster.site.files import writing_order

        written = []
        for relative, content in sorted(post.files.items(), key=writing_order):
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


def _inside(root: Path, path: Path) -> bool:
    """Whether writing `path` stays inside `root` (no folder on the way, nor the file, is a
    link leading out). A folder not created yet is inside."""
    probe = path
    while not (probe.exists() or probe.is_symlink()):
        if probe == root or probe == probe.parent:
            return True  # nothing on the way exists yet: it will be created inside
        probe = probe.parent
    return probe.resolve().is_relative_to(root.resolve())
