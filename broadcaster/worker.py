"""`broadcaster worker`: finish what nobody is sending, from any host, any number at once.

A worker looks for two kinds of work in the ledger, and both are safe with any number of
workers and commands running:

- **Mailing lists** (channels with an audience). Recipients are claimed in batches under a
  lease (`Ledger.claim`: one row per batch; claims on a list take turns, a few milliseconds
  each). A worker joins any fan-out whose statement is live, including one the command
  that recorded it is still sending, so a large list spreads over every host; and a batch whose
  sender died (its lease not renewed) is taken over when the lease runs out, resumed the way
  `retry` resumes: at most one message per connection of the dead sender goes out twice, with
  its original Message-ID. An update's list waits until the same incident's earlier lists are
  done, so nobody reads "resolved" before "investigating".
- **Everything else** (the statement, social posts), which must go out in order, one thread
  per incident. These are sent under the incident's lock, as the command that records them
  does. A worker tries that lock without waiting: holding it while deliveries are still pending
  or in flight means the process that recorded them is gone (PostgreSQL and the kernel drop a
  dead holder's lock), so the worker finishes them, in order, the statement first.

Failed deliveries are left for `broadcaster retry`: a worker finishes what was interrupted; it
does not try again what a platform refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broadcaster.channels.base import Channel
from broadcaster.dispatch import UNSENT, Dispatcher
from broadcaster.errors import LockTimeoutError
from broadcaster.ledger import Ledger, open_ledger
from broadcaster.ledger.interface import OpenGroup
from broadcaster.pipeline import dispatcher, existing, rendered, resume
from broadcaster.preflight import open_channels
from broadcaster.report import Result
from broadcaster.settings import Settings


@dataclass
class Worker:
    """One worker's view of the ledger: its channels, its fan-out, what it has done."""

    s: Settings
    ledger: Ledger
    chans: Mapping[str, Channel]
    fan_out: Dispatcher
    say: Callable[[str], None] = lambda line: None
    report: WorkerReport = field(default_factory=lambda: WorkerReport(""))

    def step(self) -> int:
        """One look for work, doing what it finds; how many deliveries it settled."""
        return self._orphaned() + self._mailing_lists()

    def others_sending(self) -> bool:
        """Whether another sender holds a batch (which is done by it, or free once its lease
        runs out: `--once` waits for that rather than leave it)."""
        names = [n for n, c in self.chans.items() if c.has_audience]
        return any(g.leased for g in self.ledger.open_groups(names))

    def _orphaned(self) -> int:
        """Statements and social posts left by a process that is gone, incident by incident."""
        names = [n for n, c in self.chans.items() if not c.has_audience]
        handled = 0
        for incident_id in dict.fromkeys(g.incident_id for g in self.ledger.open_groups(names)):
            try:
                with self.ledger.incident_lock(incident_id, wait=0):
                    handled += self._finish(incident_id, names)
            except LockTimeoutError:
                continue  # someone is sending it now
        return handled

    def _finish(self, incident_id: str, names: list[str]) -> int:
        # Read again under the lock: the holder that just let go may have sent everything.
        left = [d for d in self.ledger.deliveries(incident_id=incident_id, unfinished=True, channels=names)
                if d.state.value in UNSENT]
        statement_left = any(self.chans[d.channel].publishes_statement for d in left)
        if not left or (not statement_left and not self.fan_out.statement_live({d.update_id for d in left})):
            return 0  # only posts whose statement failed: `retry` is for that
        incident = existing(self.ledger, incident_id)
        self.say(f"incident {incident_id}: finishing {len(left)} deliveries left by a sender that is gone")
        resume(self.s, self.ledger, incident, left, [], self.chans, self.fan_out)
        self.report.incidents.append(incident_id)
        self.report.deliveries += len(left)
        return len(left)

    def _mailing_lists(self) -> int:
        """Join one fan-out that has recipients free to claim (the oldest first)."""
        names = [n for n, c in self.chans.items() if c.has_audience]
        earlier: set[tuple[str, str]] = set()
        for group in self.ledger.open_groups(names):
            key = (group.incident_id, group.channel)
            if key in earlier:
                continue  # the incident's earlier list is not done: this one waits for it
            earlier.add(key)
            if group.free and self.fan_out.statement_live({group.update_id}):
                return self._join(group)
        return 0

    def _join(self, group: OpenGroup) -> int:
        incident = existing(self.ledger, group.incident_id)
        update = next(u for u in incident.updates if u.id == group.update_id)
        channel = self.chans[group.channel]
        preview = rendered(self.s, self.ledger, self.chans, incident, update,
                           {(group.channel, locale) for locale in self.s.organization.locales})
        posts = {p.locale: p.post for p in preview.planned}
        with self.fan_out.leases():
            handled = self.fan_out.fan_out(channel, group.incident_id, group.update_id, group.seq, posts,
                                           total=group.free + group.leased, wait_for_others=False)
        for line in channel.said():
            self.say(f"{group.channel}: {line}")
        if handled:
            self.say(f"update {group.update_id} ({group.channel}): {handled} recipients")
            self.report.deliveries += handled
            self.report.batches += -(-handled // self.fan_out.sharing.batch)
            if group.update_id not in self.report.updates:
                self.report.updates.append(group.update_id)
        return handled


def run(s: Settings, *, once: bool = False, stop: threading.Event | None = None,
        say: Callable[[str], None] = lambda line: None) -> WorkerReport:
    """Work until `stop` is set (or, with `once`, until nothing is left to take)."""
    stop = stop or threading.Event()
    with open_ledger(s) as ledger:
        fan_out = dispatcher(s, ledger)
        fan_out.stop = stop  # stop claiming: the batch in hand is finished, the rest left to others
        worker = Worker(s, ledger, open_channels(s), fan_out, say, WorkerReport(fan_out.sharing.owner))
        say(f"started as {worker.report.owner}; looking for work every {s.worker.poll_seconds:g}s")
        while not stop.is_set():
            if worker.step():
                continue
            if once and not worker.others_sending():
                break
            stop.wait(s.worker.poll_seconds)
        return worker.report


@dataclass
class WorkerReport(Result):
    """What one `broadcaster worker` did before it stopped (it fills this in as it works)."""

    owner: str
    #: Deliveries it settled (sent, failed or skipped), in fan-outs it joined or took over.
    deliveries: int = 0
    #: Batches of a mailing list it claimed.
    batches: int = 0
    #: Updates whose mailing list it sent some of.
    updates: list[str] = field(default_factory=list)
    #: Incidents whose statement or posts it finished for a sender that was gone.
    incidents: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"worker": self.owner, "deliveries": self.deliveries, "batches": self.batches,
                "updates": self.updates, "incidents": self.incidents}

    def text(self) -> str:
        if not self.deliveries:
            return f"Worker {self.owner} stopped; it found nothing to send."
        parts = [f"{self.deliveries:,} deliveries"]
        if self.updates:
            parts.append(f"{self.batches:,} batches of {len(self.updates)} mailing list"
                         + ("s" if len(self.updates) != 1 else ""))
        if self.incidents:
            parts.append(f"{len(self.incidents)} incidents left by a sender that was gone")
        return f"Worker {self.owner} stopped after {', '.join(parts)}."
