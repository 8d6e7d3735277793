"""Every error broadcaster raises on purpose, and what the caller should do about it.

    BroadcasterError                  base: anything we raise deliberately
    ├── InputError                    bad input, settings or templates; nothing was sent (exit 2)
    │   ├── SettingsError             the settings file or environment is wrong
    │   ├── UnknownIncidentError      no incident with that id
    │   └── PreflightError            a channel's render failed validation (limits, link, credentials)
    ├── DeliveryError                 one channel could not deliver one post
    │   ├── TransientDeliveryError    worth retrying: timeouts, 429, 5xx, throttling
    │   └── PermanentDeliveryError    retrying cannot help: fix credentials or content first
    ├── LockTimeoutError              another broadcaster holds the incident for too long
    ├── LedgerBusyError               the ledger stayed locked by others longer than we would wait
    └── LedgerWriteError              the ledger cannot be written (a full disk): sending stopped (exit 3)

Anything else escaping a command is a bug and exits 1.
"""

from __future__ import annotations


class BroadcasterError(Exception):
    """Base class: an error broadcaster raises on purpose, with a message meant for a person."""


class InputError(BroadcasterError):
    """Bad input, settings or templates: stopped before anything was sent or written."""


class SettingsError(InputError):
    """The settings file or the environment is wrong; the message names the file and key."""


class UnknownIncidentError(InputError):
    """No incident has this id."""


class PreflightError(InputError):
    """At least one channel's render is invalid, so nothing is sent anywhere."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"preflight failed; nothing was sent:\n{lines}")


class DeliveryError(BroadcasterError):
    """A channel could not deliver a post; subclasses say whether to retry."""


class TransientDeliveryError(DeliveryError):
    """Retry later. `retry_at` is the platform's reset time (Unix seconds) when it gave one.
    `too_fast`: the platform put it off for coming faster than it takes (a relay's rate, as
    SES's 454 "Throttling failure"), nothing about the post itself: sent slower, it goes."""

    def __init__(self, message: str, *, retry_at: float | None = None, too_fast: bool = False) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.too_fast = too_fast


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help; the message says what to fix."""


class LockTimeoutError(BroadcasterError):
    """Another broadcaster process kept the incident busy longer than we would wait."""


class LedgerBusyError(BroadcasterError):
    """The ledger's store stayed busy with other writers past the wait; nothing was written."""


class LedgerWriteError(BroadcasterError):
    """The ledger could not record a result (a full disk, a lost volume): sending stopped at
    once, so that nothing goes out that the ledger cannot account for. `retry` finishes."""
