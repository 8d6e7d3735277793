"""The words of the domain as enums: statuses, impacts, kinds of update, delivery states.

Kept apart from model.py so that the CLI can offer them as choices without paying for the
dataclasses at start-up.
"""

from enum import StrEnum


class Status(StrEnum):
    """Where the response stands; `resolved` closes an incident, `completed` or `cancelled` a
    maintenance."""

    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    # Planned maintenance (Statuspage's words): announced, under way, done.
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


#: The statuses that close an incident or a maintenance.
CLOSED = (Status.RESOLVED, Status.COMPLETED, Status.CANCELLED)


class UpdateStatus(StrEnum):
    """The statuses a person gives with `broadcaster update`."""

    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"


class Impact(StrEnum):
    """How bad it is for customers."""

    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class Kind(StrEnum):
    """Which template an update is rendered with."""

    ANNOUNCE = "announce"
    UPDATE = "update"
    RESOLVE = "resolve"
    MAINTENANCE = "maintenance"
    #: What happened, why, and what changes, published after the resolution (a section of the
    #: statement page, and a reply in every channel's thread); never part of the timeline.
    POSTMORTEM = "postmortem"


class DeliveryState(StrEnum):
    """A delivery's life: pending → in_flight → sent | failed (failed and in_flight can retry).

    `skipped` is final: the recipient left (unsubscribed) before their copy went out.
    """

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


#: Statuspage's component states, best to worst; an open incident's impact sets the state.
COMPONENT_STATES = ("operational", "under_maintenance", "degraded_performance", "partial_outage",
                    "major_outage")
BY_IMPACT = {Impact.MINOR: "degraded_performance", Impact.MAJOR: "partial_outage",
             Impact.CRITICAL: "major_outage"}
