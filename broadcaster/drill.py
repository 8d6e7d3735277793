"""The drill: a whole incident (announce, update, resolve, postmortem) on local stand-ins.

No settings file, no credentials, no network beyond 127.0.0.1: the drill writes its own
settings into a fresh folder, serves the generated site on a local port, runs the real
pipeline with the embedded incident below, and prints what each channel received and where.
"""

from __future__ import annotations

import re
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from broadcaster import api
from broadcaster.outcome import Outcome
from broadcaster.report import Result, deliveries_table
from broadcaster.settings import Settings, settings_from_dict
from broadcaster.site.preview_server import SiteServer
from broadcaster.standins.bluesky_pds import DRILL_APP_PASSWORD, DRILL_HANDLE, BlueskyStandIn
from broadcaster.standins.graph_api import DRILL_PAGE_ID, DRILL_PAGE_TOKEN, GraphStandIn
from broadcaster.standins.mastodon_api import DRILL_TOKEN as DRILL_MASTODON_TOKEN
from broadcaster.standins.mastodon_api import MastodonStandIn
from broadcaster.standins.slack_api import DRILL_BOT_TOKEN as DRILL_SLACK_TOKEN
from broadcaster.standins.slack_api import DRILL_CHANNEL as DRILL_SLACK_CHANNEL
from broadcaster.standins.slack_api import SlackStandIn
from broadcaster.standins.smtp import SmtpStandIn
from broadcaster.standins.webhook_receiver import DRILL_SECRET as DRILL_WEBHOOK_SECRET
from broadcaster.standins.webhook_receiver import WebhookReceiver
from broadcaster.standins.x_api import DRILL_CREDENTIALS, XStandIn

#: The embedded incident, in the spirit of the seed essays: acknowledge, guide, explain, apologise.
SCRIPT = {
    "announce": {
        "title": "Card payments failing",
        "message": "Some card payments fail at checkout. We are investigating.",
        "guidance": "Pay by **bank transfer** for now; your basket is kept.",
        "impact": "major",
        "components": ["Payments API", "Checkout"],
        "regions": ["Madrid", "Barcelona"],
        "es": {
            "title": "Fallan los pagos con tarjeta",
            "message": "Algunos pagos con tarjeta fallan al pagar. Lo estamos investigando.",
            "guidance": "Pague por **transferencia** por ahora; su cesta se conserva.",
        },
    },
    "update": {
        "status": "identified",
        "message": "A certificate expired at our card processor's gateway. We are renewing it.",
        "es": {"message": "Caducó un certificado en la pasarela del procesador de tarjetas. "
               "Lo estamos renovando."},
    },
    "resolve": {
        "message": "The certificate was renewed at 10:42 and card payments work again. "
        "We now renew certificates automatically, a month ahead.",
        "apology": "We are sorry for the failed payments and the time this cost you.",
        "es": {
            "message": "El certificado se renovó a las 10:42 y los pagos con tarjeta vuelven a "
            "funcionar. Ahora renovamos los certificados automáticamente, con un mes de margen.",
            "apology": "Lamentamos los pagos fallidos y el tiempo que le han hecho perder.",
        },
    },
    # Follow up (seed 000): what happened, why, and what changes; drafted, reviewed, published.
    "postmortem": {
        "body": "## Summary\n\nFrom 09:58 to 10:42, card payments failed for most customers in "
        "Madrid and Barcelona: a certificate at our card processor's gateway expired.\n\n"
        "## What happened\n\n- 09:58: the certificate expired; payments started failing.\n"
        "- 10:05: our monitoring alerted the engineer on call.\n"
        "- 10:42: a new certificate was installed and payments recovered.\n\n"
        "## What we are changing\n\n1. Certificates renew automatically, a month ahead.\n"
        "2. An alert fires 30 days before any certificate expires.",
        "es": "## Resumen\n\nDe 09:58 a 10:42 fallaron los pagos con tarjeta de la mayoría de los "
        "clientes de Madrid y Barcelona: caducó un certificado en la pasarela del procesador de "
        "tarjetas.\n\n## Qué pasó\n\n- 09:58: caducó el certificado; empezaron a fallar los pagos.\n"
        "- 10:05: nuestra monitorización avisó al ingeniero de guardia.\n"
        "- 10:42: se instaló un certificado nuevo y los pagos se recuperaron.\n\n"
        "## Qué vamos a cambiar\n\n1. Los certificados se renuevan solos, con un mes de margen.\n"
        "2. Una alerta salta 30 días antes de que caduque cualquier certificado.",
    },
}


@dataclass
class DrillResult(Result):
    folder: Path
    site_url: str
    steps: list[tuple[str, Outcome]] = field(default_factory=list)
    #: Every email the SMTP server received, as the .eml file the drill kept of it.
    emails: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((o.exit_code for _, o in self.steps), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "site_url": self.site_url,
            "steps": [{"step": name, **o.to_json()} for name, o in self.steps],
            "emails": [str(p) for p in self.emails],
        }

    def text(self) -> str:
        return ""  # the drill tells its story as it goes


@dataclass
class StandIns:
    """Everything the drill talks to, all on 127.0.0.1."""

    site: SiteServer
    x: XStandIn
    graph: GraphStandIn
    smtp: SmtpStandIn
    mastodon: MastodonStandIn
    hooks: WebhookReceiver
    slack: SlackStandIn
    bluesky: BlueskyStandIn


#: The drill's subscribers: one follows everything in Spanish, one the affected component,
#: one a component the incident does not touch (and so gets nothing).
SUBSCRIBERS = [
    ("ana@example.com", "es", (), ()),
    ("bob@example.com", "en", ("Payments API",), ()),
    ("carla@example.com", "en", ("Search",), ()),
]


def drill_settings(folder: Path, stand_ins: StandIns) -> Settings:
    """The drill's settings: every channel pointed at a local stand-in."""
    return settings_from_dict(
        {
            "organization": {"name": "Example Corp", "timezone": "Europe/Madrid",
                             "locales": ["en", "es"]},
            "site": {"base_url": stand_ins.site.url, "output_dir": str(folder / "site")},
            "state": {"path": str(folder / "state.db")},
            "components": [{"name": "Payments API", "group": "Payments", "names": {"es": "API de pagos"}},
                           {"name": "Checkout", "group": "Payments", "names": {"es": "Caja"}},
                           {"name": "Search", "names": {"es": "Búsqueda"}}],
            "groups": [{"name": "Payments", "names": {"es": "Pagos"}}],
            "regions": [{"name": "Madrid", "postcodes": ["28"]},
                        {"name": "Barcelona", "postcodes": ["08"]}, {"name": "Sevilla", "postcodes": ["41"]}],
            "channels": {
                "website": {"enabled": True},
                "twitter": {"enabled": True, "api_base": stand_ins.x.url, "thread_long": True},
                "facebook": {"enabled": True, "page_id": DRILL_PAGE_ID, "api_base": stand_ins.graph.url,
                             "locale": "es"},
                "mastodon": {"enabled": True, "api_base": stand_ins.mastodon.url},
                "bluesky": {"enabled": True, "handle": DRILL_HANDLE, "api_base": stand_ins.bluesky.url},
                "slack": {"enabled": True, "channel": DRILL_SLACK_CHANNEL,
                          "api_base": f"{stand_ins.slack.url}/api"},
                "webhook": {"enabled": True, "urls": [f"{stand_ins.hooks.url}/chatops",
                                                      f"{stand_ins.hooks.url}/partner-status"]},
                "email": {"enabled": True, "host": "127.0.0.1", "port": stand_ins.smtp.port,
                          "sender": "Example Corp Status <status@example.com>", "connections": 2},
            },
            "retry": {"attempts": 3, "initial_wait_seconds": 0.1, "max_wait_seconds": 1},
        },
        # Made-up credentials only the stand-ins accept: never the operator's real ones.
        environ={**DRILL_CREDENTIALS.environ(), "BROADCASTER_FACEBOOK_PAGE_TOKEN": DRILL_PAGE_TOKEN,
                 "BROADCASTER_MASTODON_ACCESS_TOKEN": DRILL_MASTODON_TOKEN,
                 "BROADCASTER_WEBHOOK_SECRET": DRILL_WEBHOOK_SECRET,
                 "BROADCASTER_SLACK_BOT_TOKEN": DRILL_SLACK_TOKEN,
                 "BROADCASTER_BLUESKY_APP_PASSWORD": DRILL_APP_PASSWORD},
    )


def run_drill(output: Path | None = None, hold: bool = False, quiet: bool = False) -> DrillResult:
    """Rehearse announce → update → resolve → postmortem and say what each channel received."""
    folder = (output or Path(tempfile.mkdtemp(prefix="broadcaster-drill-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    say: Callable[[str], None] = (lambda _: None) if quiet else typer.echo
    with SiteServer(folder / "site") as site, XStandIn() as x, GraphStandIn() as graph, \
            SmtpStandIn() as smtp, MastodonStandIn() as mastodon, WebhookReceiver() as hooks, \
            SlackStandIn() as slack, BlueskyStandIn() as bluesky:
        stand_ins = StandIns(site, x, graph, smtp, mastodon, hooks, slack, bluesky)
        settings = drill_settings(folder, stand_ins)
        _subscribe(settings)
        result = DrillResult(folder, site.url)
        say(f"Drill in {folder}\nStatus site served at {site.url}/ while the drill runs; "
            f"X API stand-in at {x.url}, Graph API stand-in at {graph.url}, "
            f"Mastodon stand-in at {mastodon.url}, Bluesky PDS stand-in at {bluesky.url}, "
            f"Slack stand-in at {slack.url}, "
            f"webhook receiver at {hooks.url}, "
            f"SMTP server at 127.0.0.1:{smtp.port}.\n")
        steps: list[tuple[str, Callable[[str | None], Outcome]]] = [
            ("announce", lambda _: _announce(settings)),
            ("update", lambda incident: _update(settings, incident)),
            ("resolve", lambda incident: _resolve(settings, incident)),
            ("postmortem", lambda incident: _postmortem(settings, incident)),
        ]
        incident: str | None = None
        for name, step in steps:
            outcome = step(incident)
            incident = outcome.incident_id
            result.steps.append((name, outcome))
            say(f"── {name} ─────────────────────────────")
            say(deliveries_table(outcome.deliveries, outcome.lists))
            for line in _received(outcome):
                say(f"   {line}")
            say("")
        result.emails = keep_emails(stand_ins.smtp, folder / "emails")
        for line in _social_view(stand_ins):
            say(line)
        say(f"The emails are kept as they were received, to open in a mail reader: {folder / 'emails'}/")
        say(f"\nDrill {'passed' if result.exit_code == 0 else 'FAILED'}: "
            f"{len(result.steps)} steps, incident {incident}.")
        if hold:
            say(f"Serving {site.url}/ until Ctrl-C.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result


def _announce(settings: Settings) -> Outcome:
    step = SCRIPT["announce"]
    return api.announce(
        step["title"], step["message"], impact=step["impact"], guidance=step["guidance"],
        components=step["components"], regions=step["regions"], next_update="30m",
        translations={"es": step["es"]}, settings=settings,
    )


def _update(settings: Settings, incident: str | None) -> Outcome:
    step = SCRIPT["update"]
    return api.update(incident or "", step["message"], status=step["status"], next_update="1h",
                      translations={"es": step["es"]}, settings=settings)


def _resolve(settings: Settings, incident: str | None) -> Outcome:
    step = SCRIPT["resolve"]
    return api.resolve(incident or "", step["message"], apology=step["apology"],
                       translations={"es": step["es"]}, settings=settings)


def _postmortem(settings: Settings, incident: str | None) -> Outcome:
    """Drafted, then published: a postmortem is reviewed before it goes out."""
    step = SCRIPT["postmortem"]
    api.postmortem(incident or "", step["body"], translations={"es": step["es"]}, draft=True,
                   settings=settings)
    return api.publish(incident or "", settings=settings)


def _received(outcome: Outcome) -> list[str]:
    """What a reader gets at each delivered address, fetched over HTTP from the local server."""
    lines = []
    for delivery in outcome.deliveries:
        if delivery.channel != "website" or delivery.status != "sent" or not delivery.url:
            continue  # social posts' URLs are on x.com and facebook.com: shown from the stand-ins
        with urllib.request.urlopen(delivery.url, timeout=5) as answer:  # 127.0.0.1 only
            body = answer.read().decode("utf-8")
            title = re.search(r"<title>(.*?)</title>", body, re.S)
            lines.append(
                f"{delivery.channel}: GET {delivery.url} → {answer.status}, {len(body):,} bytes, "
                f"title {title.group(1).strip() if title else '?'!r}"
            )
    return lines


def _subscribe(settings: Settings) -> None:
    from broadcaster import subscribers
    from broadcaster.ledger import open_ledger
    from broadcaster.model import Subscriber

    with open_ledger(settings) as ledger:
        subscribers.save(ledger, [Subscriber(*row) for row in SUBSCRIBERS], resubscribe=True)


def _social_view(stand_ins: StandIns) -> list[str]:
    """The incident as followers see it: the X and Mastodon threads, the Page post with its
    comments, and the emails."""
    lines = []
    x = stand_ins.x
    for root in (t for t in x.posted() if t.in_reply_to is None):
        lines.append(f"X thread of @{x.username}, as the X API stand-in received it:")
        for depth, tweet in enumerate(x.thread(root.id)):
            label = f"post {tweet.id}" + (" (reply)" if depth else "")
            lines += _block(label, tweet.text)
    for post in stand_ins.graph.feed():
        lines.append("Facebook Page post with its comments, as the Graph API stand-in received them:")
        lines += _block(f"post {post.id}, link {post.link}", post.message)
        for comment in post.comments:
            lines += _block(f"comment {comment.id}", comment.message, indent="      ")
    mastodon = stand_ins.mastodon
    for root in (s for s in mastodon.posted() if s.in_reply_to is None):
        lines.append(f"Mastodon thread of @{mastodon.username}, as the Mastodon stand-in received it:")
        for depth, status in enumerate(mastodon.thread(root.id)):
            label = f"status {status.id}" + (" (reply)" if depth else "") + f", {status.language}"
            lines += _block(label, status.text)
    posts = stand_ins.bluesky.posted()
    if posts:
        lines.append(f"Bluesky thread of @{stand_ins.bluesky.handle}, as the PDS stand-in received it:")
    for post in posts:
        label = f"post {post.rkey}" + (" (reply)" if post.parent else "") + \
            f", link card {post.record['embed']['external']['uri']}"
        lines += _block(label, post.text)
    slack = stand_ins.slack
    for root in slack.top_level():
        lines.append(f"Slack thread in {root.channel}, as the Slack stand-in received it:")
        for message in slack.thread(root.ts):
            label = f"message {message.ts}" + (" (in the thread" if message.thread_ts else "") \
                + (", also in the channel)" if message.broadcast else ")" if message.thread_ts else "")
            lines += _block(label, message.text)
    lines.append("Webhooks, as the receiver verified them (Standard Webhooks signatures):")
    for event in stand_ins.hooks.events:
        data = event.body["data"]
        lines.append(f"   → {event.path}: {event.body['type']} {data['incident']['id']} "
                     f"({data['incident']['status']}), webhook-id {event.id}")
    lines.append("Emails, as the SMTP server received them (carla follows only Search: none for her):")
    for message in stand_ins.smtp.messages:
        threaded = "in reply to the first" if message["In-Reply-To"] else "first of the thread"
        unsubscribe = "one-click unsubscribe" if message["List-Unsubscribe-Post"] else "NO unsubscribe"
        lines.append(f"   → {message['To']}: {message['Subject']} ({threaded}; {unsubscribe})")
    return lines


def keep_emails(smtp: SmtpStandIn, into: Path) -> list[Path]:
    """Each email the SMTP server received, byte for byte, as `NN-recipient.eml` in `into` (in
    the order they came), so a person can read what subscribers got in their own mail reader:
    the drill's printout shows only the subjects."""
    into.mkdir(parents=True, exist_ok=True)
    kept = []
    for n, message in enumerate(smtp.messages, start=1):
        recipient = re.sub(r"[^A-Za-z0-9@._-]", "_", ",".join(message.envelope_to))
        path = into / f"{n:02d}-{recipient}.eml"
        path.write_bytes(message.raw)
        kept.append(path)
    return kept


def _block(label: str, text: str, indent: str = "   ") -> list[str]:
    return [f"{indent}┌ {label}", *(f"{indent}│ {line}".rstrip() for line in text.splitlines())]
