"""For channel authors' tests: a recording channel, and the contract every channel must keep.

    from broadcaster.channels.testing import check_channel

    def test_pigeon_keeps_the_channel_contract():
        check_channel(PigeonChannel, settings={"api_base": stand_in.url},
                      environ={"BROADCASTER_PIGEON_TOKEN": "t"})

`check_channel` renders a real incident (announce, update, resolution, postmortem, in every
locale, with words long enough to need shortening) through broadcaster's own preview and preflight, and
fails with every broken promise listed: the spec's shape, templates for every kind, the
statement link in every post, the limit, the essentials (guidance, apology) never cut. With
`send=True` it also sends the four through the channel (point `settings` at a local stand-in
of the platform) and checks that each was recorded as sent with a receipt.

`recording_channel` makes a real Channel class that keeps what it is sent, with faults
to raise on cue: the core's own tests use it, and so can a plugin's.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broadcaster.channels.base import Channel, ChannelSettings, ChannelSpec, Post
from broadcaster.model import Receipt

#: The kinds of update every channel renders, each from its own template. A postmortem
#: template is optional: without one, a channel renders the postmortem with its update's.
KINDS = ("announce", "update", "resolve", "maintenance")


@dataclass
class Script:
    """What a recording channel does on each call: an exception to raise, or None to succeed;
    and what it received: (post, thread, resumed) per call."""

    faults: list[BaseException | None] = field(default_factory=list)
    received: list[tuple[Post, tuple[Receipt, ...], bool]] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    on_send: Callable[[], None] | None = None
    text: Callable[[Any], str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class RecorderSettings(ChannelSettings):
    limit_note: str = ""


def recording_channel(name: str = "recorder", script: Script | None = None, *,
                      secrets: Mapping[str, str] | None = None, limit: int | None = 280) -> type[Channel]:
    """A channel class named `name` that records each post in `script` and answers with a
    receipt (or raises the script's next fault). Register it with `broadcaster.registry`."""
    script = script if script is not None else Script()

    class Recorder(Channel):
        spec = ChannelSpec(name=name, summary="records posts (tests)", settings=RecorderSettings,
                           secrets=dict(secrets or {}), limit=limit)

        def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
            if script.barrier is not None:
                script.barrier.wait()
            if script.on_send is not None:
                script.on_send()
            with script.lock:
                fault = script.faults.pop(0) if script.faults else None
                if fault is not None:
                    raise fault
                script.received.append((post, tuple(thread), resumed))
                number = len(script.received)
            return Receipt(remote_id=f"{name}-{number}", url=f"https://{name}.example/{number}")

        def compose(self, page: Any) -> Post:
            """The title, the message and the link (no templates needed), or `script.text`."""
            return Post(text=(script.text or _plain)(page), link=page.statement_url)

    Recorder.script = script  # type: ignore[attr-defined]
    return Recorder


def _plain(page: Any) -> str:
    update = page.variables["update"]
    return f"{update['title']}: {update['message']} {page.statement_url}"


# -- the contract ------------------------------------------------------------------------------

#: Long enough that a channel with a limit must shorten the explanation, never the essentials.
_MESSAGE = ("A power cut at our main data centre stopped the payment servers. " * 12).strip()
_WORDS = {
    "en": {"title": "Card payments failing", "message": _MESSAGE,
           "guidance": "Pay by bank transfer for now.", "apology": "We are sorry for the trouble."},
    "es": {"title": "Fallan los pagos", "message": _MESSAGE,
           "guidance": "Pague por transferencia.", "apology": "Sentimos las molestias."},
}
#: A postmortem as long as real ones, headed as people write them.
_POSTMORTEM = f"## Summary\n\n{_MESSAGE}\n\n## What we are changing\n\n- {_MESSAGE}\n- {_MESSAGE}"


class ChannelContractError(AssertionError):
    """A channel breaks the contract; the message lists every broken promise."""


def check_channel(
    channel: type[Channel], *, settings: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None, send: bool = False,
) -> None:
    """Raise ChannelContractError listing what `channel` gets wrong; return if nothing.

    `settings` are the channel's own keys (`[channels.NAME]`, `enabled` is implied);
    `environ` holds its secrets. Nothing leaves the machine unless `send` is true.
    """
    problems = spec_problems(channel)
    if not problems:
        problems = _render_problems(channel, dict(settings or {}), dict(environ or {}), send)
    if problems:
        raise ChannelContractError(f"{channel.__name__} breaks the channel contract:\n"
                                   + "\n".join(f"  - {p}" for p in problems))


def spec_problems(channel: type[Channel]) -> list[str]:
    """What is wrong with the class's declaration itself (no rendering needed)."""
    spec = getattr(channel, "spec", None)
    if not isinstance(spec, ChannelSpec):
        return ["it has no `spec = ChannelSpec(...)`"]
    problems = []
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        problems.append(f"spec.name {spec.name!r}: lower-case letters, digits and _ (it is a TOML key)")
    if not spec.summary.strip():
        problems.append("spec.summary is empty (it is the channel's line in --help and the README)")
    if not (isinstance(spec.settings, type) and issubclass(spec.settings, ChannelSettings)):
        problems.append("spec.settings must be a subclass of ChannelSettings")
    for key, variable in spec.secrets.items():
        if not re.fullmatch(r"BROADCASTER_[A-Z0-9_]+", variable):
            problems.append(f"secret {key}: {variable!r} is not a BROADCASTER_… environment variable, "
                            "so it would not be masked")
    if spec.limit is not None and spec.limit < 140:
        problems.append(f"spec.limit {spec.limit}: too small for a title, the essentials and the link")
    return problems


def _render_problems(channel: type[Channel], own: dict[str, Any], environ: dict[str, str],
                     send: bool) -> list[str]:
    from broadcaster import api, registry
    from broadcaster.errors import BroadcasterError
    from broadcaster.render import Templates
    from broadcaster.settings import settings_from_dict

    name = channel.spec.name
    registered = registry.channels().get(name)
    if registered is not channel:
        registry.register(channel)
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="broadcaster-contract-") as folder:
            try:
                s = settings_from_dict({
                    "organization": {"name": "Contract Check", "locales": ["en", "es"],
                                     "timezone": "Europe/Madrid"},
                    "site": {"base_url": "https://status.example.com",
                             "output_dir": str(Path(folder) / "site")},
                    "state": {"path": str(Path(folder) / "state.db")},
                    "channels": {name: {**own, "enabled": True}},
                }, environ=environ)
            except BroadcasterError as exc:
                return [f"its settings do not validate: {exc}"]
            templates = Templates(s)
            for kind in KINDS:
                for locale in ("en", "es"):
                    try:
                        templates.find(name, kind, locale, channel.template_extension)
                    except BroadcasterError as exc:
                        problems.append(f"{kind} ({locale}): {exc}")
            if problems:
                return problems
            if channel.has_audience:  # someone to send to, in each locale
                for locale in ("en", "es"):
                    api.add_subscriber(f"contract-{locale}@example.com", locale=locale, settings=s)
            only = [name]
            problems += _attempt("announce", name, ("guidance",), send, lambda: api.announce(
                **_words("en", "title", "message", "guidance"), impact="major",
                translations={"es": _words("es", "title", "message", "guidance")},
                channels=only, dry_run=not send, settings=s))
            if send and not problems:
                incident = api.list_incidents(settings=s)[0].incident.id
            else:  # the update and the resolution need an incident: record one on the site only
                incident = api.announce(**_words("en", "title", "message"), channels=["website"],
                                        settings=s).incident_id
            problems += _attempt("update", name, ("guidance",), send, lambda: api.update(
                incident, _MESSAGE, status="identified", guidance=_WORDS["en"]["guidance"],
                translations={"es": _words("es", "message", "guidance")},
                channels=only, dry_run=not send, settings=s))
            problems += _attempt("resolve", name, ("apology",), send, lambda: api.resolve(
                incident, _MESSAGE, apology=_WORDS["en"]["apology"],
                translations={"es": _words("es", "message", "apology")},
                channels=only, dry_run=not send, settings=s))
            if not send:  # the postmortem needs the resolution recorded: on the site only
                api.resolve(incident, _MESSAGE, apology=_WORDS["en"]["apology"], channels=["website"],
                            settings=s)
            problems += _attempt("postmortem", name, (), send, lambda: api.postmortem(
                incident, _POSTMORTEM, translations={"es": _POSTMORTEM}, channels=only,
                dry_run=not send, settings=s))
    finally:
        if registered is None:
            registry.unregister(name)
        elif registered is not channel:
            registry.register(registered)
    return problems


def _attempt(kind: str, name: str, essentials: Sequence[str], send: bool,
             run: Callable[[], Any]) -> list[str]:
    """What went wrong sending (or previewing) one kind of update, each preflight problem apart."""
    from broadcaster.errors import BroadcasterError, PreflightError

    try:
        outcome = run()
    except PreflightError as exc:
        return [f"{kind}: {p}" for p in exc.problems]
    except BroadcasterError as exc:
        return [f"{kind}: {exc}"]
    return _outcome_problems(kind, outcome, name, essentials, send)


def _words(locale: str, *fields: str) -> dict[str, str]:
    return {f: _WORDS[locale][f] for f in fields}


def _outcome_problems(kind: str, outcome: Any, name: str, essentials: Sequence[str], sent: bool) -> list[str]:
    """The essentials whole in what the channel posts, and (when sent) a receipt per delivery."""
    problems: list[str] = []
    if sent:
        mine = [d for d in outcome.deliveries if d.channel == name]
        if not mine:
            problems.append(f"{kind}: nothing was sent to {name}")
        problems += [f"{kind}: the delivery ({d.locale}) ended {d.status}: {d.error}"
                     for d in mine if d.status != "sent"]
        return problems
    planned = [p for p in outcome.preview.planned if p.channel == name]
    if not planned:
        problems.append(f"{kind}: {name} plans no post")
    for p in planned:
        whole = "\n".join((p.post.text, *p.post.continuation, p.post.html or ""))
        for field_name in essentials:
            words = _WORDS[p.locale if p.locale in _WORDS else "en"][field_name]
            if words not in whole:
                problems.append(f"{kind} ({p.locale}): the {field_name} {words!r} is not in the post whole")
    return problems
