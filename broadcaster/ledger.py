"""The delivery ledger's interface: what the rest of broadcaster may ask of storage.

The update and its deliveries are recorded before anything is sent; each delivery then
moves pending → in_flight → sent | failed. Three promises rest on this interface:

- a retry never repeats a sent delivery (only unfinished ones are ever attempted);
- a killed process leaves its deliveries `in_flight`, which `retry` finishes, telling the
  channel that the lost attempt may have reached the platform;
- two operators on one incident cannot corrupt it: everything that reads, records and sends
  for an incident happens under `incident_lock`, so updates land one after the other.

`SQLiteLedger` (sqlite_ledger.py) implements it; another store (PostgreSQL) would implement
the same methods and change nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from broadcaster.model import Delivery, Incident, Receipt, Update


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to record as pending together with its update."""

    channel: str
    locale: str
    recipient: str = ""


class Ledger(Protocol):
    def incident(self, incident_id: str) -> Incident:
        """The incident with all its updates; UnknownIncidentError when there is none."""
        ...

    def incidents(
        self, *, open_only: bool = False, include_drafts: bool = False, limit: int | None = None
    ) -> list[Incident]:
        """Incidents, most recently updated first."""
        ...

    def months(self) -> list[tuple[str, int]]:
        """("YYYY-MM", number of incidents that started then), newest first."""
        ...

    def incidents_of_month(self, month: str) -> list[Incident]:
        """Published incidents that started in `month`, newest first."""
        ...

    def record(self, update: Update, deliveries: Sequence[NewDelivery]) -> None:
        """Store the update and its pending deliveries in one transaction."""
        ...

    def publish(self, incident_id: str, deliveries: Sequence[NewDelivery]) -> list[Update]:
        """Turn the incident's drafts into published updates, recording their deliveries."""
        ...

    def incidents_with_drafts(self) -> list[Incident]:
        """Incidents with an unpublished draft waiting."""
        ...

    def revise_draft(self, update: Update) -> None:
        """Replace a draft update in place (same id and place in the incident)."""
        ...

    def discard_drafts(self, incident_id: str) -> list[str]:
        """Set the incident's unpublished drafts aside for the record; their ids."""
        ...

    def deliveries(
        self, *, incident_id: str | None = None, update_id: str | None = None,
        unfinished: bool = False, channels: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Deliveries in the order they were recorded (of `channels` only, if given)."""
        ...

    def unfinished_incidents(self) -> list[str]:
        """Ids of incidents with deliveries not yet sent."""
        ...

    def thread(self, incident_id: str, channel: str, before_seq: int) -> list[Receipt]:
        """Receipts of the incident's earlier sent posts on `channel`, oldest first."""
        ...

    def start_attempt(self, delivery_id: int) -> None:
        """Mark the delivery in flight and count the attempt, before the platform is called."""
        ...

    def mark_sent(self, delivery_id: int, receipt: Receipt) -> None: ...

    def mark_failed(self, delivery_id: int, error: str) -> None: ...

    def start_attempts(self, delivery_ids: Sequence[int]) -> None:
        """`start_attempt` for a batch, in one transaction."""
        ...

    def finish(self, sent: Sequence[tuple[int, Receipt]], failed: Sequence[tuple[int, str]],
               skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Mark a batch of deliveries sent, failed or skipped, in one transaction."""
        ...

    def first_receipts(self, incident_id: str, channel: str, before_seq: int) -> dict[str, Receipt]:
        """Per recipient, the receipt of their first sent delivery of the incident."""
        ...

    def incident_lock(self, incident_id: str) -> AbstractContextManager[None]:
        """Hold the incident for this process; released even if the process is killed."""
        ...

    def service_lock(self, name: Literal["automation", "tick", "site"]) -> AbstractContextManager[None]:
        """Hold one kind of shared work (alert hooks, tick, the site's shared pages)."""
        ...

    def close(self) -> None: ...

