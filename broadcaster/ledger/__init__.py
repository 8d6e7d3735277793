"""The ledger: everything broadcaster stores, behind one interface, opened in one place.

What it holds: incidents and their updates, every delivery (update × channel × recipient)
and its state, email subscribers, the alert groups and signed requests the hooks have seen,
the reminders sent, and the locks that keep two commands on one incident apart.

The update and its deliveries are recorded before anything is sent; each delivery then
moves pending → in_flight → sent | failed | skipped. Three promises rest on this interface:

- a retry never repeats a sent delivery (only unfinished ones are ever attempted);
- a killed process leaves its deliveries `in_flight` (a mailing list's batch under a lease
  that runs out), which `retry` or a worker finishes, telling the channel that the lost
  attempt may have reached the platform;
- two operators on one incident cannot corrupt it: everything that reads, records and sends
  for an incident happens under `incident_lock`, so updates land one after the other.

`open_ledger(settings)` is the only way in. The SQLite implementation (the `sqlite`
subpackage: the class, its schema and migrations, its file locks) is the only code that
knows SQL; tests/test_ledger_contract.py checks every implementation against the promises
written here, so another store (PostgreSQL) is one more subpackage and one more fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from broadcaster.ledger.interface import DeliveryCount, Ledger, NewDelivery, SubscriberSelection

if TYPE_CHECKING:
    from broadcaster.ledger.sqlite.scratch import FirstLines
    from broadcaster.settings import Settings
    from broadcaster.settings_file import Reading

__all__ = ["DeliveryCount", "Ledger", "NewDelivery", "Streamed", "SubscriberSelection", "first_lines",
           "kept_connections", "open_ledger"]

T = TypeVar("T")


@contextmanager
def open_ledger(
    settings: Settings | Reading, *, read_only: bool = False, on_wait: Callable[[str], None] | None = None,
    busy_wait: float | None = None,
) -> Iterator[Ledger]:
    """The ledger `[state]` names, closed when the block ends.

    `read_only` opens a view that writes nothing, not even a new file: with no ledger yet it
    is an empty one in memory, so a preview or a refusal leaves no trace. `on_wait` is told
    when a lock is held by another process; `busy_wait` caps how long a write waits for the
    store (seconds; the default suits commands, a web request wants less).
    """
    from broadcaster import defaults

    busy = busy_wait or defaults.LEDGER_BUSY_WAIT
    ledger: Ledger
    if settings.state.url:
        ledger = _postgres(settings, read_only=read_only, on_wait=on_wait, busy=busy)
    else:
        from broadcaster.ledger.sqlite import SQLiteLedger

        path = settings.state.path
        ledger = (SQLiteLedger.for_preview(path) if read_only else
                  SQLiteLedger(path, on_wait=on_wait, busy_timeout=busy))
    try:
        yield ledger
    finally:
        ledger.close()


class Streamed(Generic[T]):
    """What `read(ledger)` yields, from a read-only ledger opened each time it is gone through
    (and closed at the end): a listing of a million printed as it is read, never held, that a
    caller may still go through twice."""

    def __init__(self, settings: Settings | Reading, read: Callable[[Ledger], Iterable[T]]) -> None:
        self.settings, self.read = settings, read

    def __iter__(self) -> Iterator[T]:
        with open_ledger(self.settings, read_only=True) as ledger:
            yield from self.read(ledger)


def first_lines() -> FirstLines:
    """Where an import keeps the line each address first appeared on (scratch space on disk,
    whatever the store: it does not outlive the command). Close it when done."""
    from broadcaster.ledger.sqlite.scratch import FirstLines

    return FirstLines()


#: Connection pools by url, while a long-running process keeps one (see `kept_connections`).
_POOLS: dict[str, Any] = {}


@contextmanager
def kept_connections(settings: Settings) -> Iterator[None]:
    """While the block runs, every ledger this process opens borrows a connection from a pool
    rather than making one (`serve`: a ledger per request). Nothing changes for SQLite."""
    url = settings.state.url
    if not url or url in _POOLS:
        yield
        return
    from broadcaster import defaults
    from broadcaster.ledger.postgres import Pool

    # One plain connection first: a wrong password or host is said at once, in our words,
    # instead of a pool retrying in the background while every request waits for it.
    with open_ledger(settings, read_only=True):
        pass
    _POOLS[url] = Pool(url, password=_password(), size=defaults.SERVE_LEDGER_CONNECTIONS)
    try:
        yield
    finally:
        _POOLS.pop(url).close()


def _postgres(settings: Settings | Reading, *, read_only: bool, on_wait: Callable[[str], None] | None,
              busy: float) -> Ledger:
    """The PostgreSQL ledger; its password from BROADCASTER_STATE_PASSWORD, else libpq's own
    PGPASSWORD or ~/.pgpass."""
    from broadcaster.errors import SettingsError

    try:
        from broadcaster.ledger.postgres import PostgresLedger
    except ImportError:
        raise SettingsError("state.url: the PostgreSQL ledger needs psycopg: "
                            "pip install 'broadcaster[postgresql]'") from None
    assert settings.state.url is not None
    return PostgresLedger(settings.state.url, password=_password(),
                          read_only=read_only, on_wait=on_wait, busy_timeout=busy,
                          pool=_POOLS.get(settings.state.url))


def _password() -> str | None:
    """The PostgreSQL password broadcaster passes (None: libpq's PGPASSWORD or ~/.pgpass)."""
    import os

    return os.environ.get("BROADCASTER_STATE_PASSWORD") or None
