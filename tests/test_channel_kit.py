"""The channel kit: what an author outside this project gets, and the contract it checks."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import Project

from broadcaster import api, registry
from broadcaster.channels.testing import ChannelContractError, check_channel, recording_channel

PIGEON = '''
from broadcaster.channels import Channel, ChannelSettings, ChannelSpec, Post, Receipt


class PigeonSettings(ChannelSettings):
    loft: str = "main"


class PigeonChannel(Channel):
    spec = ChannelSpec(name="pigeon", summary="carrier pigeons from the main loft",
                       settings=PigeonSettings, secrets={"ring": "BROADCASTER_PIGEON_RING"},
                       limit=300)
    templates_package = "pigeonpost.templates"
    sent = []

    def send(self, post: Post, thread, *, resumed: bool) -> Receipt:
        self.sent.append((post, tuple(thread)))
        return Receipt(remote_id=f"bird-{len(self.sent)}", url=f"https://pigeon.example/{len(self.sent)}")
'''

TEMPLATE = """{{ incident.title }}

{{ update.message|plain|shortenable }}
{% if update.apology %}

{{ update.apology|plain }}
{% endif %}
{% if update.guidance %}

{{ t.site.guidance }}: {{ update.guidance|plain }}
{% endif %}

{{ statement_url }}
"""


@pytest.fixture
def pigeonpost(tmp_path: Path):
    """A channel in a package of its own, with its templates inside it (not in broadcaster)."""
    package = tmp_path / "plugins" / "pigeonpost"
    (package / "templates" / "pigeon").mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PIGEON), encoding="utf-8")
    (package / "templates" / "__init__.py").write_text("", encoding="utf-8")
    for kind in ("announce", "update", "resolve", "maintenance"):
        (package / "templates" / "pigeon" / f"{kind}.txt").write_text(TEMPLATE, encoding="utf-8")
    sys.path.insert(0, str(package.parent))
    import pigeonpost

    yield pigeonpost.PigeonChannel
    sys.path.remove(str(package.parent))
    for name in [m for m in sys.modules if m.startswith("pigeonpost")]:
        del sys.modules[name]
    registry.unregister("pigeon")


def test_a_channel_from_another_package_ships_its_templates_and_keeps_the_contract(pigeonpost):
    check_channel(pigeonpost, environ={"BROADCASTER_PIGEON_RING": "r1"})
    assert "pigeon" not in registry.channels(), "the check leaves the registry as it found it"


def test_the_contract_sends_when_asked_and_updates_reply_in_the_thread(pigeonpost):
    check_channel(pigeonpost, environ={"BROADCASTER_PIGEON_RING": "r1"}, send=True)
    posts = pigeonpost.sent
    assert [len(thread) for _, thread in posts] == [0, 1, 2, 3], "the postmortem replies too"
    assert all("https://status.example.com/incidents/" in post.text for post, _ in posts)
    # Written before postmortems existed, it has no template for one: its update's tells it,
    # the postmortem's own words shortened into the limit, the link kept.
    postmortem = posts[-1][0].text
    assert postmortem.startswith("Card payments failing\n\nSummary\n\nA power cut") and "…" in postmortem


def test_the_built_in_channels_keep_the_contract(tmp_path: Path):
    from broadcaster.channels.email import EmailChannel
    from broadcaster.channels.facebook import FacebookChannel
    from broadcaster.channels.twitter import TwitterChannel

    x = {v: "k" for v in TwitterChannel.spec.secrets.values()}
    check_channel(TwitterChannel, environ=x)
    check_channel(FacebookChannel, settings={"page_id": "1234"},
                  environ={"BROADCASTER_FACEBOOK_PAGE_TOKEN": "t"})
    check_channel(EmailChannel, settings={"host": "127.0.0.1", "sender": "Status <status@example.com>"})


def test_the_contract_names_everything_a_broken_channel_gets_wrong(pigeonpost, tmp_path: Path):
    folder = Path(sys.modules["pigeonpost"].__file__).parent / "templates" / "pigeon"
    (folder / "resolve.txt").write_text("{{ incident.title }}: {{ update.message|plain|shortenable }}\n"
                                        "{{ update.apology|plain }}\n", encoding="utf-8")
    (folder / "maintenance.txt").unlink()
    with pytest.raises(ChannelContractError) as refused:
        check_channel(pigeonpost, environ={"BROADCASTER_PIGEON_RING": "r1"})
    assert "maintenance (en): no template pigeon/maintenance" in str(refused.value)

    (folder / "maintenance.txt").write_text(TEMPLATE, encoding="utf-8")
    with pytest.raises(ChannelContractError) as refused:
        check_channel(pigeonpost, environ={"BROADCASTER_PIGEON_RING": "r1"})
    message = str(refused.value)
    assert "resolve: pigeon (en): the text does not link to the statement" in message
    assert "announce" not in message and "update:" not in message, "only what is broken is named"

    class Badly(recording_channel("bad name", secrets={"token": "PIGEON_TOKEN"})):  # type: ignore[misc]
        pass
    with pytest.raises(ChannelContractError) as refused:
        check_channel(Badly)
    assert "spec.name 'bad name'" in str(refused.value)
    assert "'PIGEON_TOKEN' is not a BROADCASTER_… environment variable" in str(refused.value)


def test_a_channel_that_cuts_the_apology_is_caught(pigeonpost):
    folder = Path(sys.modules["pigeonpost"].__file__).parent / "templates" / "pigeon"
    (folder / "resolve.txt").write_text("{{ incident.title }}\n\n{{ statement_url }}\n",
                                        encoding="utf-8")
    with pytest.raises(ChannelContractError, match=r"resolve \(en\): the apology .* is not in the post"):
        check_channel(pigeonpost, environ={"BROADCASTER_PIGEON_RING": "r1"})


def test_the_users_template_folder_wins_over_a_channels_own(pigeonpost, project: Project, monkeypatch):
    registry.register(pigeonpost)
    monkeypatch.setenv("BROADCASTER_PIGEON_RING", "r1")
    own = project.root / "my-templates" / "pigeon"
    own.mkdir(parents=True)
    (own / "announce.txt").write_text("Ours: {{ incident.title }} {{ statement_url }}\n", encoding="utf-8")
    project.write('[templates]\ndir = "my-templates"\n\n[channels.pigeon]\nenabled = true\n')
    outcome = api.announce("Down", "Broken.", dry_run=True, settings=project.config)
    (post,) = [p.post for p in outcome.preview.planned if p.channel == "pigeon"]
    assert post.text.startswith("Ours: Down https://status.example.com/incidents/")


class _Pager(recording_channel("pager")):  # type: ignore[misc]
    """A channel with the staff-notice capability and no email at all."""

    notices: ClassVar[list[tuple[Sequence[str], str, str]]] = []


def test_staff_reminders_go_through_any_channel_that_offers_notices(project: Project):
    from broadcaster.channels.base import StaffNotices

    class Pager(_Pager, StaffNotices):
        def send_notice(self, to: Sequence[str], subject: str, text: str) -> None:
            self.notices.append((tuple(to), subject, text))

    registry.register(Pager)
    try:
        project.write('[channels.pager]\nenabled = false\n', base=project.config.read_text()
                      .replace("[organization]\n", '[organization]\nstaff = ["oncall@example.com"]\n'))
        incident = api.announce("Down", "Broken.", next_update="30m", settings=project.config).incident_id
        report = api.tick(now=datetime.now(UTC) + timedelta(hours=1), settings=project.config)
    finally:
        registry.unregister("pager")
    assert report.reminded and not report.problems
    ((to, subject, text),) = Pager.notices
    assert to == ("oncall@example.com",) and incident in subject and "broadcaster update" in text
