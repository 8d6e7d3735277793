"""Defaults in one place: the numbers a reader looks for when tuning or debugging."""

from __future__ import annotations

#: Settings file used when neither --config nor $BROADCASTER_CONFIG is given.
CONFIG_FILE = "settings.toml"
CONFIG_ENV = "BROADCASTER_CONFIG"
#: The embedded ledger's file, relative to the settings file, when [state] names none.
STATE_PATH = ".broadcaster/state.db"

#: Seconds a channel waits for one answer from a platform before calling it a timeout.
REQUEST_TIMEOUT = 15.0

#: Retry policy when [retry] leaves a value out (see settings.RetrySettings).
RETRY_ATTEMPTS = 6
RETRY_INITIAL_WAIT = 1.0
RETRY_MAX_WAIT = 120.0
#: A mailing list's recipients the relay put off for coming too fast go round again without
#: spending their attempts while the relay took one of their batch's messages this recently
#: (seconds), or the batch began this recently: a relay counts by the second (Amazon SES) or by
#: the minute (Postfix's anvil, Exchange Online), and one that counts by the minute refuses
#: everything for the rest of its minute once its burst is spent, longer than the attempts
#: last (six, 31 s at most with the default waits). Past it, the attempts count again.
PUT_OFF_PATIENCE = 90.0

#: How long a command waits for another process working on the same incident.
INCIDENT_LOCK_WAIT = 300.0

#: Sharing a mailing list between senders ([worker]): recipients claimed at a time, how long a
#: claim lasts unless its holder renews it (a third of it, while it sends), and how often an idle
#: `broadcaster worker` looks for work. A batch of 5,000 rather than 500: each batch costs a few
#: writes and reads of its own, and its connections finish their shares unevenly (the first
#: idle while the last ends); at 100,000 with 16 connections, five pairs side by side, 500 →
#: 5,000 sent 6 % more a second on average (0 to 13 % a pair; README, Benchmarks). Still 20
#: batches to share at 100,000.
WORKER_BATCH = 5000
#: Connections in a row an SMTP server may close before any message gets through, before the
#: email channel leaves the rest of a round for the next one.
SMTP_STALLS = 3
#: After an SMTP server refused some connections, a batch goes this many messages a connection
#: at a time, asking for more between slices, until it has them all or is refused again: a
#: relay that refused most for a moment (restarting) is not left with a whole batch of 5,000
#: on one connection (at 20 ms a round trip, 100 s). A slice is 0.2 s at 2 ms, 2 s at 20 ms.
SMTP_RAMP_SLICE = 100
WORKER_LEASE = 60.0
WORKER_POLL = 2.0
#: How often (seconds) a sender holding a batch asks the ledger who else sends the channel's
#: lists, to take its share of the relay's rate: a worker that joins is heeded this soon. Until
#: then both go at more than their share: at a second, a worker joining a command sending 100 a
#: second had the relay put off 47 texts (`bench/email_relay_rate.py`); one small read each time.
SHARE_EVERY = 0.25

#: Resolved incidents listed on the status page's index.
RECENT_HISTORY = 20

#: Length of generated incident ids (from a 31-letter alphabet: ~49 bits, unguessable).
INCIDENT_ID_LENGTH = 10

#: `broadcaster serve`: what one client can hold (issue: 1,000 slow clients must not stall it).
#: Connections served at once; past it uvicorn answers 503 at once instead of piling up.
SERVE_MAX_CONNECTIONS = 2000
#: Seconds a client has to send a whole request body (a slow client is cut off after it).
SERVE_BODY_SECONDS = 10.0
#: Bytes of request line and headers one client may send (h11's buffer).
SERVE_MAX_HEADER_BYTES = 16 * 1024
#: The same log message at most this many times a minute; then one line says how many were dropped.
SERVE_LOG_REPEATS_PER_MINUTE = 20

#: Connections `serve` keeps open to a PostgreSQL ledger (its requests borrow them).
SERVE_LEDGER_CONNECTIONS = 8

#: Seconds a write waits for the ledger while other processes write (SQLite's busy timeout).
LEDGER_BUSY_WAIT = 30.0
#: `broadcaster list` (CLI and Python API): at most this many incidents unless told otherwise.
LIST_LIMIT = 50

#: The status site: incidents the JSON and the lookup know of, entries in each Atom feed, and
#: how far ahead a planned maintenance shows in a place's lookup.
SITE_NEWEST = 50
FEED_ENTRIES = 50
MAINTENANCE_AHEAD_DAYS = 7

#: Alert hooks: the largest body read, how far the signed timestamp may be from now (seconds;
#: a signature is remembered twice as long, so a replay is refused for as long as it is valid).
HOOK_MAX_BODY = 1 << 20  # 1 MiB
HOOK_MAX_SKEW = 300
#: The shortest BROADCASTER_HOOK_SECRET `serve` accepts.
HOOK_SECRET_MIN_LENGTH = 16
#: Alert sources and groups the flood limits remember before forgetting the quiet ones.
HOOK_FLOOD_KEYS = 10_000

#: A fan-out shows a progress bar on a terminal from this many recipients.
PROGRESS_MINIMUM = 100

#: One-click unsubscribe: how long it waits for a busy ledger before answering 503, and the
#: Retry-After it sends then (a 200 must mean the person is out).
UNSUBSCRIBE_WAIT = 3.0
UNSUBSCRIBE_RETRY = 5

# -- self-service subscription (the status page's form, served by `serve`) ------------------
#: An unconfirmed request's link works this long ([subscriptions] confirm_hours).
SUBSCRIBE_CONFIRM_HOURS = 48.0
#: Form submissions one IP may make an hour; past it, 429 with Retry-After.
SUBSCRIBE_PER_IP_PER_HOUR = 10
#: Confirmation emails one address may get a day, however many requests name it.
SUBSCRIBE_EMAILS_PER_ADDRESS_PER_DAY = 3
#: A subscription form, confirm or preferences body is a few hundred bytes; more is refused.
SUBSCRIBE_MAX_BODY = 16 * 1024
#: A confirm or preferences page's form may be submitted for this long after it was shown.
SUBSCRIBE_FORM_SECONDS = 2 * 3600

#: Days of history the status page's uptime bars show (Statuspage and most status pages: 90).
UPTIME_DAYS = 90
#: Months the history page lists in full, newest first (older months are links to their page).
HISTORY_MONTHS = 3
#: Incidents the history page tells per month, and a component's page in all, newest first;
#: past it, a link to the month's own page says how many more. A page of hundreds is read by
#: nobody, and an update that rewrote it would cost more the busier the months were.
HISTORY_STORIES = 25
#: The longest (seconds) a sender about to record its results waits for the others', so that
#: one write covers them all: threads reporting to one batch (dispatch.GroupCommit), and the
#: email channel's connections, driven from one thread (smtp_pipelining.converse). Neither
#: waits longer than the last write took.
GROUP_COMMIT_GATHER = 0.002
