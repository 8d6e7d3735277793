"""Self-service subscription from the status page: double opt-in, preferences, consent.

The path, each step a function here (`server.py` adds only HTTP):

    form on every page ──► ask() ──► one confirmation email ──► confirm page (GET: a button)
                                                                    │ POST
    "manage your subscription" (every email) ◄── active subscriber ◄┘ confirm()

- **Nothing is learnt from the form.** `ask` answers the same whatever the address (new,
  subscribed, unsubscribed): it records a request and sends one confirmation email. Only the
  link in that email, followed and then *pressed* (a POST: mail scanners follow links with GET
  and never press buttons), makes a subscription active, with the choices of that request.
  An address that unsubscribed comes back only this way.
- **Requests expire** (`[subscriptions] confirm_hours`) and are kept under the SHA-256 of
  their link's token, so neither an old link nor a copy of the ledger confirms anybody.
- **Consent is recorded**: when, the words the form showed, the form's language, and a keyed
  hash of the IP (HMAC: IPv4 addresses are too few for a plain hash to hide them), then when
  it was confirmed.
- **Abuse limits live in the ledger**, so several `serve`s behind one balancer share them:
  form submissions per IP an hour, and confirmation emails per address a day, however many
  requests name it (`Ledger.hit`, one atomic statement).
- **Forms that act on a token carry a CSRF key**: an HMAC of the token, the form's purpose
  and the time it was shown, with a key derived from `BROADCASTER_HOOK_SECRET`. There are no
  sessions or cookies to ride on, so the key proves the POST comes from a page we served in
  the last two hours. (RFC 8058's one-click unsubscribe POST is exempt by design: mail
  programs send it without a page.)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from broadcaster import defaults
from broadcaster.errors import DeliveryError, InputError
from broadcaster.ledger import open_ledger
from broadcaster.model import Subscriber, SubscriptionRequest
from broadcaster.report import Result
from broadcaster.subscribers import keeps_case, make_subscriber

if TYPE_CHECKING:
    from pydantic import SecretStr

    from broadcaster.settings import Settings

log = logging.getLogger("broadcaster.subscriptions")

#: Link and subscriber tokens are url-safe base64 of random bytes; anything else is not one.
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
#: The form's fields; anything else in a body is ignored.
FIELDS = ("email", "locale", "component", "region", "postcode", "website", "csrf")


@dataclass(frozen=True)
class Keys:
    """Secrets derived from the hook secret for CSRF keys and IP hashes (never stored)."""

    csrf: bytes
    ip: bytes

    @classmethod
    def derive(cls, secret: SecretStr) -> Keys:
        raw = secret.get_secret_value().encode()
        return cls(hmac.new(raw, b"broadcaster csrf", hashlib.sha256).digest(),
                   hmac.new(raw, b"broadcaster ip", hashlib.sha256).digest())

    def ip_hash(self, ip: str) -> str:
        return hmac.new(self.ip, ip.encode(), hashlib.sha256).hexdigest()[:32]

    def form_key(self, purpose: str, token: str, now: float | None = None) -> str:
        """The CSRF key a page embeds in its form: time shown, and an HMAC binding it to
        this token and purpose."""
        shown = int(time.time() if now is None else now)
        return f"{shown}.{self._mac(purpose, token, shown)}"

    def form_key_valid(self, key: str, purpose: str, token: str, now: float | None = None) -> bool:
        shown, _, mac = key.partition(".")
        if not shown.isdigit() or not mac:
            return False
        age = (time.time() if now is None else now) - int(shown)
        return (0 <= age + 60 <= defaults.SUBSCRIBE_FORM_SECONDS + 60
                and hmac.compare_digest(mac, self._mac(purpose, token, int(shown))))

    def _mac(self, purpose: str, token: str, shown: int) -> str:
        return hmac.new(self.csrf, f"{purpose}|{token}|{shown}".encode(), hashlib.sha256).hexdigest()[:32]


class Limited(Exception):
    """Too many requests from this IP or for this address: say when to come back (429)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"too many requests; try again in {int(seconds)} s")
        self.seconds = max(int(seconds + 0.999), 1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def address_key(email: str) -> str:
    """The rate-limit counter of one address (a hash: the counters table names nobody)."""
    return "address:" + hashlib.sha256(email.encode()).hexdigest()[:32]


def parse_form(body: bytes) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body as fields; InputError if it is not one."""
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=200,
                          errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"the form could not be read: {exc}") from None
    return {k: v for k, v in fields.items() if k in FIELDS}


def choice_of(settings: Settings, fields: Mapping[str, Sequence[str]], email: str) -> Subscriber:
    """What the form asks for, validated against the settings (InputError says what is wrong):
    components and regions must be ones the page offered."""
    def one(name: str) -> str:
        values = fields.get(name, [])
        return values[0].strip() if values else ""

    offered = {"component": [c.name for c in settings.components],
               "region": [r.name for r in settings.regions]}
    chosen: dict[str, tuple[str, ...]] = {}
    for kind, names in offered.items():
        picked = tuple(dict.fromkeys(v for v in fields.get(kind, []) if v))
        unknown = [v for v in picked if v not in names]
        if unknown:
            raise InputError(f"{kind} {unknown[0][:100]!r} is not one this site offers")
        chosen[kind] = picked
    postcodes = [p for p in re.split(r"[\s,;]+", one("postcode")) if p]
    if len(postcodes) > 5:
        raise InputError("give at most 5 postcodes")
    if postcodes and not settings.regions:
        raise InputError("this site has no regions to follow by postcode")
    return make_subscriber(email, one("locale"), chosen["component"], chosen["region"],
                           settings.organization.locales, postcodes, keep_case=keeps_case(settings))


# -- asking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """The answer to the form: the same for any address (so nothing is learnt from it)."""

    email: str
    locale: str


def ask(settings: Settings, fields: Mapping[str, Sequence[str]], *, ip: str, keys: Keys,
        page_locale: str) -> Asked:
    """Record a subscription request and email its confirmation link.

    Limited (429) past the per-IP or per-address limits; InputError (400) for a bad form.
    A filled honeypot is answered like anyone else, and nothing is recorded or sent.
    """
    email = (fields.get("email") or [""])[0].strip()
    with open_ledger(settings, busy_wait=defaults.UNSUBSCRIBE_WAIT) as ledger:
        now = time.time()
        limits = settings.subscriptions
        wait = ledger.hit("ip:" + keys.ip_hash(ip), limit=limits.per_ip_per_hour, window=3600, now=now)
        if wait is not None:
            raise Limited(wait)
        if any(v.strip() for v in fields.get("website", [])):
            log.info("subscription form: honeypot filled, ignored")
            return Asked(email, page_locale)
        if not email:
            raise InputError("the email address is empty")
        choice = choice_of(settings, fields, email)
        wait = ledger.hit(address_key(choice.email), limit=limits.emails_per_address_per_day,
                          window=86_400, now=now)
        if wait is not None:
            raise Limited(wait)
        token = secrets.token_urlsafe(32)
        moment = datetime.fromtimestamp(now, UTC)
        expires = moment + timedelta(hours=limits.confirm_hours)
        said = words(settings, choice.locale)
        consent = {"at": moment.isoformat(timespec="seconds"), "source": "status page form",
                   "locale": choice.locale, "shown": said["intro"] + " " + said["consent"],
                   "ip_hash": keys.ip_hash(ip)}
        request = SubscriptionRequest(choice, consent, moment, expires)
        ledger.add_subscription_request(token_hash(token), request)
    _send_confirmation(settings, choice, confirm_url(settings, token), expires)
    return Asked(choice.email, choice.locale)


def confirm_url(settings: Settings, token: str) -> str:
    base = settings.subscribe_url or f"{settings.site.base_url}/subscribe"
    return f"{base}/{token}"


def _send_confirmation(settings: Settings, choice: Subscriber, link: str, expires: datetime) -> None:
    """One plain email in the visitor's language, through the subscribers' channel."""
    from broadcaster.channels.base import StaffNotices
    from broadcaster.preflight import open_channel

    name = settings.subscription_channel()
    channel = open_channel(settings, name) if name else None
    if not isinstance(channel, StaffNotices):
        raise DeliveryError("no enabled channel can send the confirmation email")
    said = words(settings, choice.locale)
    org = settings.organization.name
    text = (said["mail_body"].replace("{organization}", org).replace("{link}", link)
            .replace("{expires}", settings.organization.local_time(expires)))
    channel.send_notice([choice.email], said["mail_subject"].replace("{organization}", org), text + "\n")


def words(settings: Settings, locale: str) -> dict[str, str]:
    """The subscription words (templates/strings.{locale}.toml, [subscribe]) in `locale`."""
    from broadcaster.render import Templates

    return Templates(settings).strings(locale)["subscribe"]


# -- confirming -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation link stands for: `state` is confirm (waiting for the button),
    confirmed, used (confirmed before), expired or invalid."""

    state: str
    request: SubscriptionRequest | None = None


def confirmation(settings: Settings, token: str) -> Confirmation:
    """What the link's page shows (a GET changes nothing: scanners follow links)."""
    if not TOKEN_SHAPE.match(token):
        return Confirmation("invalid")
    with open_ledger(settings, read_only=True) as ledger:
        request = ledger.subscription_request(token_hash(token))
    if request is None:
        return Confirmation("invalid")
    if request.confirmed_at is not None:
        return Confirmation("used", request)
    if request.expires_at <= datetime.now(UTC):
        return Confirmation("expired", request)
    return Confirmation("confirm", request)


def confirm(settings: Settings, token: str) -> Confirmation:
    """Press the button: the request becomes an active subscription, once."""
    found = confirmation(settings, token)
    if found.state != "confirm":
        return found
    with open_ledger(settings, busy_wait=defaults.UNSUBSCRIBE_WAIT) as ledger:
        subscriber = ledger.confirm_subscription(token_hash(token), secrets.token_urlsafe(24),
                                                 datetime.now(UTC))
    if subscriber is None:  # confirmed a moment ago by another click, or expired meanwhile
        return confirmation(settings, token)
    return Confirmation("confirmed", found.request)


# -- preferences ----------------------------------------------------------------------------


def subscriber_of(settings: Settings, token: str) -> Subscriber | None:
    if not TOKEN_SHAPE.match(token):
        return None
    with open_ledger(settings, read_only=True) as ledger:
        return ledger.subscriber(token=token)


def save_preferences(settings: Settings, token: str,
                     fields: Mapping[str, Sequence[str]]) -> Subscriber | None:
    """Change an active subscriber's choices (InputError for a bad form); None if they left."""
    current = subscriber_of(settings, token)
    if current is None or not current.active:
        return None
    choice = choice_of(settings, fields, current.email)
    with open_ledger(settings, busy_wait=defaults.UNSUBSCRIBE_WAIT) as ledger:
        if not ledger.update_preferences(token, choice):
            return None
    return Subscriber(current.email, choice.locale, choice.components, choice.regions, token, True,
                      choice.postcodes)


# -- what operators see and do (the CLI) ------------------------------------------------------


@dataclass(frozen=True)
class PersonData(Result):
    """`broadcaster subscribers export EMAIL`: everything held about one address."""

    email: str
    held: Mapping[str, list[dict[str, Any]]]

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, **self.held}

    def text(self) -> str:
        import json

        if not any(self.held.values()):
            return f"Nothing is held about {self.email}."
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Erased(Result):
    """`broadcaster subscribers erase EMAIL`: what was removed."""

    email: str
    counts: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, **self.counts}

    def text(self) -> str:
        c = self.counts
        if not any(c.values()):
            return f"Nothing was held about {self.email}; nothing to erase."
        return (f"Erased {self.email}: subscriber {'deleted' if c['subscribers'] else 'not on file'}, "
                f"{c['subscription_requests']} subscription requests deleted, "
                f"{c['deliveries_cancelled']} unsent emails cancelled, {c['deliveries']} delivery "
                "records kept under an alias that names nobody (they keep every email sent once).")


def _address(settings: Settings, email: str) -> str:
    from broadcaster.addresses import normalize_address

    return normalize_address(email, keep_case=keeps_case(settings))


def export_person(settings: Settings, email: str) -> PersonData:
    address = _address(settings, email)
    with open_ledger(settings, read_only=True) as ledger:
        return PersonData(address, ledger.person(address))


def erase_person(settings: Settings, email: str) -> Erased:
    address = _address(settings, email)
    with open_ledger(settings) as ledger:
        return Erased(address, ledger.erase_person(address, "erased-" + secrets.token_hex(8),
                                                   [address_key(address)]))
