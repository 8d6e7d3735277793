"""Defaults in one place: the numbers a reader looks for when tuning or debugging."""

from __future__ import annotations

#: Settings file used when neither --config nor $BROADCASTER_CONFIG is given.
CONFIG_FILE = "settings.toml"
CONFIG_ENV = "BROADCASTER_CONFIG"

#: Seconds a channel waits for one answer from a platform before calling it a timeout.
REQUEST_TIMEOUT = 15.0

#: Retry policy when [retry] leaves a value out (see settings.RetrySettings).
RETRY_ATTEMPTS = 6
RETRY_INITIAL_WAIT = 1.0
RETRY_MAX_WAIT = 120.0

#: How long a command waits for another process working on the same incident.
INCIDENT_LOCK_WAIT = 300.0

#: Resolved incidents listed on the status page's index.
RECENT_HISTORY = 20

#: Length of generated incident ids (from a 31-letter alphabet: ~49 bits, unguessable).
INCIDENT_ID_LENGTH = 10
