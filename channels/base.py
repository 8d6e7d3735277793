"""The one small interface every channel implements.

A channel knows its platform and nothing else: how to turn rendered text into a post
(`compose`), how long a text is by the platform's rules (`length`), and how to send one post,
raising `TransientDeliveryError` or `PermanentDeliveryError` so the core knows whether to
retry (`send`). Storage, retries, ordering and the other channels are the core's business.

A channel declares itself in one `ChannelSpec`: its name, settings model, the environment
variables holding its secrets, and its limit. That one declaration drives settings
validation, preflight and the masking of secrets. Two roles are subclasses rather than flags:
`StatementChannel` (the website) and `AudienceChannel` (email); `StaffNotices` is a capability
a channel may add. Authors import everything from `broadcaster.channels`, and check their
channel with `broadcaster.channels.testing`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from broadcaster.errors import DeliveryError
from broadcaster.model import Receipt
from broadcaster.vocabulary import CLOSED

if TYPE_CHECKING:
    from broadcaster.render import Page
    from broadcaster.settings import Settings


class ChannelSettings(BaseModel):
    """Settings every channel has; a channel subclasses this to add its own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Keys that must be set once the channel is enabled, each with what to put there (for
    #: the refusal: "page_id is required when the channel is enabled (the Page's numeric id)").
    required_when_enabled: ClassVar[Mapping[str, str]] = {}

    enabled: bool = False
    #: Bind the account to one locale (default: the organisation's first locale).
    locale: str | None = None

    @model_validator(mode="after")
    def _required_when_enabled(self) -> ChannelSettings:
        for key, what in self.required_when_enabled.items():
            if self.enabled and not getattr(self, key):
                raise ValueError(f"{key} is required when the channel is enabled ({what})")
        return self


@dataclass(frozen=True)
class ChannelSpec:
    """What a channel is, declared once: it drives settings validation, preflight, `--help`
    and the masking of secrets."""

    name: str
    summary: str
    settings: type[ChannelSettings] = ChannelSettings
    #: settings-style name -> environment variable that holds the secret.
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: Whether every variable in `secrets` must be set (false: a login is optional).
    secrets_required: bool = True
    #: Longest post the platform accepts, measured by `Channel.length`; None for no limit.
    limit: int | None = None


@dataclass(frozen=True)
class Post:
    """What one delivery sends. `text` is what the limit applies to."""

    text: str
    #: The official statement this post links to.
    link: str = ""
    html: str | None = None
    #: The platform's own rich form of the text (Slack's blocks, as JSON), if it has one.
    rich: str | None = None
    subject: str | None = None
    #: For the website: path under output_dir -> file content.
    files: Mapping[str, str] = field(default_factory=dict)
    #: Further posts that continue this one as replies (a long update as an X thread).
    continuation: tuple[str, ...] = ()
    #: What the person sending should know about this post (it was shortened, for instance).
    notes: tuple[str, ...] = ()
    #: What the platform charges for this post and its replies, in US dollars (X), if anything.
    cost: float | None = None
    #: The update this post belongs to (email Message-IDs and idempotency keys are built from it).
    update_id: str = ""
    #: The language the post is written in (platforms that tag posts with one use it).
    locale: str = ""
    #: Which of the channel's destinations this delivery goes to (see `Channel.destinations`).
    to: str = ""
    #: The update closes the incident (resolved, or a maintenance completed or cancelled): a
    #: channel may show it more widely (Slack shows the thread's last reply in the channel too).
    closes: bool = False
    #: What each recipient's copy fills in, and how a preview shows it: placeholder -> words
    #: (the email channel's unsubscribe token reads "{token}", as the URL settings write it).
    personal: Mapping[str, str] = field(default_factory=dict)

    def shown(self, text: str) -> str:
        """`text` as the person sending reads it in a preview: the placeholders in words."""
        for placeholder, words in self.personal.items():
            text = text.replace(placeholder, words)
        return text

    def linked_parts(self) -> dict[str, str]:
        """The parts a reader sees, each of which must carry the statement link."""
        parts = {"text": self.text}
        if self.html is not None:
            parts["html"] = self.html
        if self.rich is not None:
            parts["rich"] = self.rich
        return parts


@dataclass(frozen=True)
class Recipient:
    """One subscriber's copy of a post, for channels with an audience."""

    delivery_id: int
    address: str
    #: The subscriber's opaque token (their unsubscribe link carries it).
    token: str
    #: The receipt of their first message about this incident, to thread replies under it.
    first: Receipt | None = None
    #: An earlier attempt may have reached them (see `Channel.send`).
    resumed: bool = False


#: How a batch reports its recipients, several at once when they are settled together (one
#: write records them all): each with a Receipt, or the DeliveryError that stopped it. It
#: returns once they are recorded.
Report = Callable[[Sequence[tuple[Recipient, "Receipt | DeliveryError"]]], None]


@dataclass(frozen=True)
class ChannelContext:
    """What a channel may know about its surroundings."""

    settings: Settings
    secrets: Mapping[str, SecretStr]
    timeout: float


def tidy(text: str) -> str:
    """Plain text as a post shows it: no trailing spaces, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


class Channel(ABC):
    """Base class for channels. Subclasses set `spec` and implement `send`."""

    spec: ClassVar[ChannelSpec]
    #: A post can go on in replies (`Post.continuation`), as on X. Then essentials that do not
    #: fit one post follow as replies; otherwise they must fit one post or preflight refuses.
    replies: ClassVar[bool] = False
    #: Extension of this channel's templates: html is autoescaped, txt is not.
    template_extension: ClassVar[str] = "txt"
    #: The package whose folder holds this channel's own templates (`{name}/{kind}.txt`, and a
    #: `strings.{locale}.toml` beside them if it needs words of its own), for a channel that
    #: comes from another package. The user's template folder still wins; the shipped
    #: templates come last.
    templates_package: ClassVar[str | None] = None
    #: Set by `StatementChannel` and `AudienceChannel`, never by hand: what the core must know.
    publishes_statement: ClassVar[bool] = False
    has_audience: ClassVar[bool] = False

    def __init__(self, settings: ChannelSettings, context: ChannelContext) -> None:
        self.settings = settings
        self.context = context

    def said(self) -> list[str]:
        """What the person should hear of that no result says (the email channel: a server
        that took fewer connections than asked for), since the last call; nothing by default."""
        return []

    def compose(self, page: Page) -> Post:
        """Turn the rendered template for this update into the post (or posts) to send."""
        return self.fitted(page, tidy(page.render(page.kind, marked=True)))

    def fitted(self, page: Page, text: str) -> Post:
        """`text` fitted into this channel's limit: only the marked explanation is shortened.

        See `fitting`: the guidance, apology, window, next-update promise and link are never
        cut; what does not fit one post follows in replies where the channel has them.
        """
        from broadcaster.channels.fitting import fit, unmarked

        post = Post(text=unmarked(text), link=page.statement_url, update_id=page.update.id,
                    locale=page.locale, closes=page.update.status in CLOSED)
        limit = self.limit
        if limit is None:
            return post
        # A reply leaves room for the link, should the platform refuse it in the thread.
        room = limit - self.length("\n\n" + page.statement_url)
        fitted = fit(text, limit=limit, length=self.length, link=page.statement_url,
                     thread_long=self.thread_long, replies=self.replies, fields=page.essentials(),
                     reply_limit=room if self.replies else None)
        return replace(post, text=fitted.parts[0], continuation=fitted.parts[1:], notes=fitted.notes())

    def destinations(self) -> tuple[str, ...]:
        """Where each update goes, one delivery per name.

        `("",)`, the default, is the channel's own account: one post. A channel that posts to
        several fixed places (webhook URLs) names each, and each is then a delivery of its own
        in the ledger, retried and reported on its own; `send` gets the name in `Post.to`.
        Names are stored and shown, so they must hold no secret.
        """
        return ("",)

    def readiness(self, today: date) -> tuple[list[str], list[str]]:
        """Problems (refuse) and warnings about the channel's own set-up on `today`: an API
        version near or past its end, for instance. Nothing by default."""
        return [], []

    @property
    def limit(self) -> int | None:
        """Longest post, measured by `length`: the spec's, unless the account's own server says
        otherwise (a Mastodon instance sets its own)."""
        return self.spec.limit

    @property
    def thread_long(self) -> bool:
        """Continue a shortened explanation in replies rather than leave it to the statement."""
        return False

    def length(self, text: str) -> int:
        """Length of `text` by the platform's rules (X weighs characters, for instance)."""
        return len(text)

    @abstractmethod
    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        """Deliver one post.

        `thread` holds the receipts of this incident's earlier posts on this channel, oldest
        first, so updates can reply in the incident's thread. `resumed` is true when an earlier
        attempt may have reached the platform before its answer was lost: the channel must
        settle that (duplicate detection, a lookup) rather than post again blindly.
        """

    def send_batch(self, post: Post, recipients: Sequence[Recipient], report: Report) -> None:
        """Deliver `post` to each recipient (channels with an audience only).

        Report each recipient once, from any thread, with a list of (recipient, outcome): a
        Receipt when delivered, a TransientDeliveryError to have the core try that recipient
        again later, or a PermanentDeliveryError when retrying cannot help (the address was
        refused). Recipients settled together go in one call: one write records them all.
        """
        raise NotImplementedError(f"{self.spec.name} has no audience")


class StatementChannel(Channel):
    """The channel that publishes the official statement (the website): it goes first, nothing
    else goes out until it has succeeded, it is always enabled, and one delivery carries every
    locale. Its posts are the statement, so they need no link to it."""

    publishes_statement: ClassVar[bool] = True
    template_extension: ClassVar[str] = "html"


class AudienceChannel(Channel):
    """A channel with one delivery per subscriber (email): the core picks who follows the
    incident, and the channel sends each rendered post to its recipients in batches."""

    has_audience: ClassVar[bool] = True

    def send(self, post: Post, thread: Sequence[Receipt], *, resumed: bool) -> Receipt:
        from broadcaster.errors import PermanentDeliveryError

        raise PermanentDeliveryError(f"{self.spec.name} sends to subscribers in batches (send_batch)")

    @abstractmethod
    def send_batch(self, post: Post, recipients: Sequence[Recipient], report: Report) -> None:
        """Deliver `post` to each recipient; see `Channel.send_batch`."""

    @property
    def rate(self) -> float | None:
        """The most it sends a second, if it was told of a limit (the email relay's `rate`):
        the preview says how long a large list will then take. None: as fast as it can."""
        return None

    def shared_by(self, senders: int, rank: int) -> None:
        """`senders` send this channel's lists now (`worker`s beside the command, all holding
        batches), this one the `rank`th of them: a channel that paces itself to what its
        service takes a second goes at its share of it. Told when it claims a batch, and every
        `SHARE_EVERY` seconds while it holds one; a channel with no such limit needs nothing here."""

    def batches_done(self) -> None:
        """The fan-out has sent every batch it could claim (or stopped): let go of what was kept
        open from one batch to the next (the email channel's connections). Called once at the
        end of each fan-out, whatever happened; a channel that keeps nothing needs nothing here."""


class StaffNotices(ABC):
    """A capability a channel may offer: a plain notice to the organisation's own staff (tick's
    reminders of an overdue update), not to the public. Mix it into a channel class."""

    @abstractmethod
    def send_notice(self, to: Sequence[str], subject: str, text: str) -> None:
        """Send one notice to `to` ([organization] staff); raise a DeliveryError if it fails."""
