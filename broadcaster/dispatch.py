"""Dispatch: the statement first, then every other channel at once, each delivery retried.

The website goes first because every other post links to it. If it fails, nothing else is
sent and the deliveries stay pending for `retry`. Other channels run concurrently, one
thread per channel (a channel's own deliveries keep their order, which threads rely on), and
one channel's failure never stops another.

A mailing list (a channel with an audience) is shared: its recipients are claimed from the
ledger in batches under a lease (`Sharing`), so any `broadcaster worker` may take batches of
the same update while this process takes others, and a batch whose sender died is taken over
once its lease runs out. The process that recorded the update waits for the last batch, so
its report is whole.
"""

from __future__ import annotations

import copy
import os
import secrets as random_tokens
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace

import tenacity
from pydantic import SecretStr

from broadcaster import defaults, registry
from broadcaster.channels.base import AudienceChannel, Channel, Post, Recipient
from broadcaster.errors import DeliveryError, LedgerWriteError, PermanentDeliveryError, TransientDeliveryError
from broadcaster.ledger import Ledger
from broadcaster.ledger.interface import Claimed
from broadcaster.masking import mask
from broadcaster.model import Delivery, DeliveryState, Receipt
from broadcaster.progress import Progress
from broadcaster.settings import RetrySettings, WorkerSettings

#: Deliveries a sender takes: unsent ones. `retry` also takes failed ones.
UNSENT = ("pending", "in_flight")
UNFINISHED = ("pending", "in_flight", "failed")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by [retry], honouring reset times."""

    attempts: int
    initial_wait: float
    max_wait: float
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, retry: RetrySettings, **overrides: object) -> RetryPolicy:
        return cls(retry.attempts, retry.initial_wait_seconds, retry.max_wait_seconds, **overrides)

    def wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientDeliveryError) and error.retry_at is not None:
            return min(max(0.0, error.retry_at - time.time()), self.max_wait)
        backoff = tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait)
        return backoff(state)

    def retrying(self, free: Callable[[BaseException], bool] | None = None) -> tenacity.Retrying:
        """Attempts until `attempts` of them failed. A failure `free` calls free spends none
        (a mailing list's round whose recipients left were only put off for coming too fast:
        `AudienceBatch`), and the backoff after it is that of the attempts spent so far, so
        free rounds do not widen it: what spaces them is the channel's pace."""
        judged: dict[int, bool] = {}  # attempt number -> free; tenacity asks `wait`, then `stop`

        def spent(state: tenacity.RetryCallState) -> int:
            number = state.attempt_number
            if number not in judged:
                error = state.outcome.exception() if state.outcome else None
                judged[number] = error is not None and free is not None and free(error)
            return number - sum(judged.values())

        def wait(state: tenacity.RetryCallState) -> float:
            counted = copy.copy(state)
            counted.attempt_number = max(1, spent(state))
            return self.wait(counted)

        return tenacity.Retrying(stop=lambda state: spent(state) >= self.attempts, wait=wait,
                                 retry=tenacity.retry_if_exception_type(TransientDeliveryError),
                                 sleep=self.sleep, reraise=True)


@dataclass(frozen=True)
class Job:
    """A recorded delivery, the channel that sends it and the post it sends."""

    delivery: Delivery
    channel: Channel
    post: Post
    seq: int
    #: Render the post again when it is sent, under the site lock (the statement channel: its
    #: shared pages list every incident, so they are rendered from the ledger as it is then,
    #: never from this process's view at preflight, or concurrent writers would erase each other).
    render: Callable[[], Post] | None = None


@dataclass(frozen=True)
class MailingList:
    """An update's recipients on a channel with an audience, sent batch by batch as they are
    claimed from the ledger (never loaded whole): the post per locale, and how many there are."""

    channel: Channel
    incident_id: str
    update_id: str
    seq: int
    posts: Mapping[str, Post]
    total: int


def sender_id() -> str:
    """A name for this process among every sender of the team (host, pid, and a nonce: a pid
    is reused, and a lease must never be mistaken for a dead process's)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random_tokens.token_hex(4)}"


@dataclass(frozen=True)
class Sharing:
    """How this process shares mailing lists with the other senders ([worker] settings)."""

    owner: str
    batch: int = defaults.WORKER_BATCH
    lease_seconds: float = defaults.WORKER_LEASE
    poll_seconds: float = defaults.WORKER_POLL
    #: Which deliveries it takes (`retry` also takes failed ones, once each).
    states: tuple[str, ...] = UNSENT

    @classmethod
    def from_settings(cls, worker: WorkerSettings, states: tuple[str, ...] = UNSENT) -> Sharing:
        return cls(sender_id(), worker.batch, worker.lease_seconds, worker.poll_seconds, states)


class Dispatcher:
    def __init__(
        self, ledger: Ledger, policy: RetryPolicy, secrets: Iterable[SecretStr], *,
        progress: Progress | None = None, sharing: Sharing | None = None,
    ) -> None:
        self.ledger = ledger
        self.policy = policy
        self.secrets = list(secrets)
        self.progress = progress
        self.sharing = sharing or Sharing(sender_id())
        #: Set to stop claiming batches (a worker told to stop finishes the batch in hand).
        self.stop = threading.Event()
        #: The ids of the batch each fan-out (a thread) has in hand, and its channel: the leases
        #: to renew, and the channels whose senders are counted (`_share`).
        self._held: dict[int, tuple[Channel, Sequence[int]]] = {}
        self._held_lock = threading.Lock()

    def run(self, jobs: Sequence[Job], lists: Sequence[MailingList] = ()) -> None:
        """Send the statement, then, if it is live, everything else concurrently."""
        first = [j for j in jobs if j.channel.publishes_statement]
        rest = [j for j in jobs if not j.channel.publishes_statement]
        for job in first:
            self.deliver(job)
        waiting = {j.delivery.update_id for j in rest} | {m.update_id for m in lists}
        if not waiting or not self.statement_live(waiting):
            return
        by_channel: dict[str, list[Job]] = {}
        for job in rest:
            by_channel.setdefault(job.channel.spec.name, []).append(job)
        lists_by_channel: dict[str, list[MailingList]] = {}
        for mailing in sorted(lists, key=lambda m: m.seq):  # one update after another, in order
            lists_by_channel.setdefault(mailing.channel.spec.name, []).append(mailing)
        work: list[Callable[[], None]] = [lambda group=group: self._deliver_all(group)
                                          for group in by_channel.values()]
        work += [lambda group=group: self._send_lists(group) for group in lists_by_channel.values()]
        pool = ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="channel")
        with self.leases(), pool:
            for future in [pool.submit(each) for each in work]:
                future.result()

    @contextmanager
    def leases(self) -> Iterator[None]:
        """Keep this sender's leases alive while the block runs (renewed three times a lease),
        and give back any it still holds at the end (a batch cut short by a full disk).

        Renewed by the ids of the batches in hand: only the leases over them, never one this
        sender gave back or settled. Meanwhile, every `SHARE_EVERY` seconds, each channel in
        hand hears how many send its lists now (`_share`)."""
        stop = threading.Event()
        every = self.sharing.lease_seconds / 3
        renew_at = time.monotonic() + every

        def heartbeat() -> None:
            nonlocal renew_at
            while not stop.wait(min(every, defaults.SHARE_EVERY)):
                for channel in self._channels_in_hand():
                    self._share(channel)
                try:
                    if time.monotonic() >= renew_at:
                        renew_at = time.monotonic() + every
                        if ids := self._in_hand():
                            self.ledger.renew(self.sharing.owner, self.sharing.lease_seconds, ids)
                except Exception:
                    continue

        beat = threading.Thread(target=heartbeat, name="lease", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            with suppress(Exception):  # what is not given back expires with its lease
                if ids := self._in_hand():
                    self.ledger.release(self.sharing.owner, ids)
            with self._held_lock:
                self._held.clear()

    def _hold(self, channel: Channel, ids: Sequence[int]) -> None:
        """The batch this thread's fan-out now has in hand (none: the last one is settled)."""
        with self._held_lock:
            if ids:
                self._held[threading.get_ident()] = (channel, ids)
            else:
                self._held.pop(threading.get_ident(), None)

    def _in_hand(self) -> list[int]:
        with self._held_lock:
            return [i for _, ids in self._held.values() for i in ids]

    def _channels_in_hand(self) -> list[AudienceChannel]:
        with self._held_lock:
            held = {id(channel): channel for channel, _ in self._held.values()}
        return [channel for channel in held.values() if isinstance(channel, AudienceChannel)]

    def _share(self, channel: AudienceChannel) -> None:
        """Tell `channel` how many senders hold batches of its lists now and which of them this
        is (a relay's rate is theirs together): counted from the live leases, this sender's own
        among them."""
        try:
            owners = self.ledger.sending(channel.spec.name)
        except Exception:  # not counted this time (a ledger busy a moment): the share stays as it was
            return
        if self.sharing.owner not in owners:
            owners = sorted([*owners, self.sharing.owner])
        channel.shared_by(len(owners), owners.index(self.sharing.owner))

    def statement_live(self, update_ids: set[str]) -> bool:
        """Whether the statement of every update is published (now, or by an earlier run)."""
        statements = registry.statement_channels()
        return all(
            delivery.state is DeliveryState.SENT
            for update_id in update_ids
            for delivery in self.ledger.deliveries(update_id=update_id, channels=statements)
        )

    def _deliver_all(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.deliver(job)

    def _send_lists(self, lists: Sequence[MailingList]) -> None:
        for m in lists:
            self.fan_out(m.channel, m.incident_id, m.update_id, m.seq, m.posts, total=m.total)

    def fan_out(self, channel: Channel, incident_id: str, update_id: str, seq: int,
                posts: Mapping[str, Post], *, total: int, wait_for_others: bool = True) -> int:
        """Send an update's mailing list batch by batch, claiming each from the ledger, until no
        recipient is left to claim; then (`wait_for_others`) wait for the batches other senders
        hold, taking over any whose lease runs out. How many recipients this sender handled."""
        try:
            return self._fan_out(channel, incident_id, update_id, seq, posts, total=total,
                                 wait_for_others=wait_for_others)
        finally:
            if isinstance(channel, AudienceChannel):
                channel.batches_done()

    def _fan_out(self, channel: Channel, incident_id: str, update_id: str, seq: int,
                 posts: Mapping[str, Post], *, total: int, wait_for_others: bool) -> int:
        name = channel.spec.name
        tally = Tally(self.progress, name, total)
        after, states, handled = 0, self.sharing.states, 0
        while not self.stop.is_set():
            batch = self.ledger.claim(self.sharing.owner, update_id=update_id, channel=name,
                                      limit=self.sharing.batch, lease_seconds=self.sharing.lease_seconds,
                                      states=states, after_id=after)
            if batch:
                after = batch[-1].id
                handled += len(batch)
                self._hold(channel, [d.id for d in batch])
                if isinstance(channel, AudienceChannel):
                    self._share(channel)
                by_locale: dict[str, list[Claimed]] = {}
                for d in batch:  # one batch per rendered post
                    by_locale.setdefault(d.locale, []).append(d)
                for locale, claimed in by_locale.items():
                    AudienceBatch(self, channel, posts[locale], incident_id, seq, claimed, tally).run()
                # Settled: the lease is done (cut short, it stays held: `leases` gives it back).
                self.ledger.release(self.sharing.owner, [d.id for d in batch])
                self._hold(channel, ())
                continue
            if not wait_for_others:
                return handled
            group = next(iter(self.ledger.open_groups([name], update_id=update_id)), None)
            if group is None:
                return handled
            tally.at(total - group.free - group.leased)
            if group.free:  # a lease ran out behind us: take those over, from the start
                after, states = 0, UNSENT
                continue
            time.sleep(min(self.sharing.poll_seconds, 0.5))  # others hold the rest: wait for them
        return handled

    def deliver(self, job: Job) -> None:
        """One delivery through tenacity; the ledger hears of every attempt and the outcome."""
        delivery = job.delivery
        # Any earlier attempt (left in flight by a dead process, or given up on after a
        # timeout) may have reached the platform before its answer was lost: the channel must
        # settle that before posting again. Failed is not proof that nothing was posted.
        resumed = delivery.attempts > 0
        thread = self.ledger.thread(delivery.incident_id, delivery.channel, job.seq)
        post = replace(job.post, to=delivery.recipient) if delivery.recipient else job.post
        attempts = 0
        try:
            for attempt in self.policy.retrying():
                with attempt:
                    attempts += 1
                    self.ledger.start_attempt(delivery.id)
                    if job.render is None:
                        receipt = job.channel.send(post, thread, resumed=resumed or attempts > 1)
                    else:
                        with self.ledger.service_lock("site"):
                            receipt = job.channel.send(job.render(), thread, resumed=resumed or attempts > 1)
        except PermanentDeliveryError as exc:
            self.ledger.mark_failed(delivery.id, self._mask(str(exc)))
        except TransientDeliveryError as exc:
            message = f"gave up after {attempts} attempts: {exc}; `broadcaster retry` resumes"
            self.ledger.mark_failed(delivery.id, self._mask(message))
        except Exception as exc:  # a channel bug must not stop the other channels
            self.ledger.mark_failed(delivery.id, self._mask(f"{type(exc).__name__}: {exc}"))
        else:
            self.ledger.mark_sent(delivery.id, receipt)

    def _mask(self, text: str) -> str:
        return mask(text, self.secrets)


class GroupCommit:
    """Results written to the ledger before the sender goes on, several senders per write.

    A connection's next message waits until its last one is recorded as sent, so a crash at
    any moment leaves at most one message per connection sent but unrecorded (re-sent by
    `retry`, with its original Message-ID). The email channel drives all its connections from
    one thread and hands in the results of every connection that answered at once, so each of
    its hand-ins is one write. A channel may also report from several threads: senders that
    report while a write is under way join the next one, so one fsync covers them all (group
    commit). A write that fails (a full disk) fails every waiting sender with
    LedgerWriteError, and every later one at once, so sending stops.

    Senders released by one write come back at about the same time (their next answer is one
    round trip away), but the first back would write alone and the rest would wait for it: on
    loopback the groups alternated 1, 3, 1, 3. So the sender about to write first waits, at
    most `gather` seconds, until every sender that took part in the last write or queued for
    this one has a result queued: the write every sender waits for anyway then covers them
    all. Counting senders rather than the largest recent group matters: with four senders
    split 1 + 3, the largest group says three, and the fourth is left out every time.

    The wait is also never longer than the last write took. Senders that have not come back
    by then are as well served by the next write (they would have waited for this one to end
    anyway), and against a relay a round trip away the senders drift out of step: waiting the
    whole `gather` for the other half every time cost each message that much more (2 ms a
    round at a 2 ms round trip, groups of 2).
    """

    def __init__(self, write: Callable[[list[tuple[int, Receipt]], list[tuple[int, str]]], None], *,
                 gather: float = defaults.GROUP_COMMIT_GATHER) -> None:
        self.write = write
        self.gather = gather
        self.cond = threading.Condition()
        #: Told each time a result is queued (a writer gathering a group waits on it).
        self.arrived = threading.Condition(self.cond)
        self.sent: list[tuple[int, Receipt]] = []
        self.failed: list[tuple[int, str]] = []
        self.queued = 0  # hand-ins so far (each one sender's results)
        self.written = 0  # hand-ins known to be in the ledger
        self.writing = False
        self.broken: str | None = None
        #: Which write each sender (a thread) last handed a result to: how many are cycling.
        self.senders: dict[int, int] = {}
        self.round = 0  # the number of the next write to start
        self.took = 0.0  # how long the last write took (seconds)

    def record(self, sent: Sequence[tuple[int, Receipt]] = (),
               failed: Sequence[tuple[int, str]] = ()) -> None:
        """Hand in results (one sender's, settled together); return once they are in the
        ledger (LedgerWriteError if they cannot be)."""
        with self.cond:
            if self.broken:
                raise LedgerWriteError(self.broken)
            self.sent.extend(sent)
            self.failed.extend(failed)
            self.queued += 1
            self.senders[threading.get_ident()] = self.round
            self.arrived.notify()
            ticket = self.queued
            while self.written < ticket:
                if self.broken:
                    raise LedgerWriteError(self.broken)
                if self.writing:
                    self.cond.wait()
                    continue
                self.writing = True
                self._gather()
                batch, self.sent, self.failed, upto = (self.sent, self.failed), [], [], self.queued
                self.round += 1
                self.cond.release()
                started = time.monotonic()
                try:
                    self.write(*batch)
                except Exception as exc:
                    error: str | None = (f"the ledger could not record what was sent ({exc}); sending "
                                         "stopped. Free the space (or fix the volume), then run "
                                         "`broadcaster retry`: at most one message per connection is "
                                         "sent again")
                else:
                    error = None
                finally:
                    self.cond.acquire()
                self.took = time.monotonic() - started
                self.writing = False
                if error is None:
                    self.written = upto
                else:
                    self.broken = error
                self.cond.notify_all()

    def _gather(self) -> None:
        """Wait (the lock held but released while waiting) for the senders of the last groups."""
        siblings = sum(1 for last in self.senders.values() if last >= self.round - 1)
        deadline = time.monotonic() + min(self.gather, self.took)
        while self.queued - self.written < siblings and not self.broken:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.arrived.wait(left)


class AudienceBatch:
    """One post to many recipients (a mailing list), each result recorded as it comes.

    Each round marks all its recipients in flight in one transaction (the first: their claim);
    each sent or refused recipient is then recorded before its connection sends the next
    message (`GroupCommit`, one write for all connections at a time). Recipients that hit a
    transient error go round again after the policy's backoff, until the attempts run out. A
    round whose recipients left were only put off for coming too fast spends no attempt while
    the relay is still taking the batch's messages (`_free`). A recipient who unsubscribed
    after the update was recorded is skipped, not sent.
    """

    def __init__(self, dispatcher: Dispatcher, channel: Channel, post: Post, incident_id: str,
                 seq: int, claimed: Sequence[Claimed], tally: Tally) -> None:
        self.d = dispatcher
        self.channel = channel
        self.post = post
        self.incident_id = incident_id
        self.seq = seq
        self.claimed = claimed
        self.lock = threading.Lock()
        self.todo: list[Recipient] = []
        self.again: dict[int, tuple[Recipient, TransientDeliveryError]] = {}
        self.finished: set[int] = set()
        self.tally = tally
        self.ledger = GroupCommit(self.d.ledger.finish)
        #: When a message of this batch was last taken (time.monotonic), or the batch began.
        self.took_at = time.monotonic()

    def run(self) -> None:
        gone = [(c.id, "unsubscribed before this was sent") for c in self.claimed if c.token is None]
        if gone:
            self.d.ledger.finish([], [], gone)
            self.tally.add(len(gone))
        staying = [c for c in self.claimed if c.token is not None]
        threads = self.d.ledger.first_receipts(self.incident_id, self.channel.spec.name, self.seq,
                                               [c.recipient for c in staying])
        self.todo = [Recipient(c.id, c.recipient, c.token, threads.get(c.recipient), c.resumed)  # type: ignore[arg-type]
                     for c in staying]
        rounds = 0
        try:
            for attempt in self.d.policy.retrying(free=self._free):
                with attempt:
                    rounds += 1
                    self._round(resumed=rounds > 1)
        except TransientDeliveryError:
            self.d.ledger.finish([], [
                (r.delivery_id, self.d._mask(f"gave up after {rounds} attempts: {error};"
                                             " `broadcaster retry` resumes"))
                for r, error in self.again.values()
            ])

    def _free(self, error: BaseException) -> bool:
        """Whether a round that left `error` spends no attempt: everyone left was put off for
        coming too fast, and the relay took one of the batch's messages within the last
        `PUT_OFF_PATIENCE` seconds (or the batch began then). A relay that counts by the minute
        refuses everything for the rest of its minute once its burst is spent: six attempts,
        half a minute at most, used to leave a small batch failed there while the next one was
        sent. One that takes nothing for longer is not pacing this sender: the attempts count."""
        return (isinstance(error, TransientDeliveryError) and error.too_fast
                and time.monotonic() - self.took_at < defaults.PUT_OFF_PATIENCE)

    def _round(self, *, resumed: bool) -> None:
        """Send to everyone still to do, once; raise if some are left for another round."""
        todo = [replace(r, resumed=True) for r in self.todo] if resumed else self.todo
        self.again = {}
        if resumed:  # the first round went under the claim's lease
            self.d.ledger.start_attempts([r.delivery_id for r in todo], claimed=True)
        try:
            self.channel.send_batch(self.post, todo, self._report)
        except LedgerWriteError:
            raise  # nothing more may go out; what is in flight stays so for `retry`
        except DeliveryError as exc:  # the channel gave up on everyone (a refused login)
            self._everyone(self._unsettled(todo), exc)
        except Exception as exc:  # a channel bug must not leave the batch in flight
            self._everyone(self._unsettled(todo), PermanentDeliveryError(f"{type(exc).__name__}: {exc}"))
        reported = self.finished | set(self.again)
        unreported = [r for r in todo if r.delivery_id not in reported]
        self._everyone(unreported, TransientDeliveryError("the channel did not report this recipient"))
        self.todo = [r for r, _ in self.again.values()]
        if self.todo:
            reset = max((e.retry_at or 0 for _, e in self.again.values()), default=0)
            raise TransientDeliveryError(f"{len(self.todo)} recipients still to deliver",
                                         retry_at=reset or None,
                                         too_fast=all(e.too_fast for _, e in self.again.values()))

    def _unsettled(self, todo: Sequence[Recipient]) -> list[Recipient]:
        """Those of `todo` not yet recorded sent or failed: a channel that stops half-way must
        not turn what it did send into failures (`retry` would send those again)."""
        with self.lock:
            return [r for r in todo if r.delivery_id not in self.finished]

    def _everyone(self, recipients: Sequence[Recipient], error: DeliveryError) -> None:
        if recipients:
            self._report([(r, error) for r in recipients])

    def _report(self, results: Sequence[tuple[Recipient, Receipt | DeliveryError]]) -> None:
        """Called by the channel (from any of its threads); returns once recorded."""
        sent: list[tuple[int, Receipt]] = []
        failed: list[tuple[int, str]] = []
        again = {}
        for recipient, result in results:
            if isinstance(result, TransientDeliveryError):
                again[recipient.delivery_id] = (recipient, result)
            elif isinstance(result, Receipt):
                sent.append((recipient.delivery_id, result))
            else:
                failed.append((recipient.delivery_id, self.d._mask(str(result))))
        if again:
            with self.lock:
                self.again.update(again)
        if sent:
            self.took_at = time.monotonic()
        if sent or failed:
            self.ledger.record(sent, failed)
            with self.lock:
                self.finished.update(i for i, _ in sent)
                self.finished.update(i for i, _ in failed)
            self.tally.add(len(sent) + len(failed))


class Tally:
    """How far one fan-out has got, for the progress bar: this sender's results, and, while it
    waits for the batches of others, what the ledger says they have done."""

    def __init__(self, progress: Progress | None, channel: str, total: int) -> None:
        self.progress = progress
        self.channel = channel
        self.total = total
        self.done = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self._show(self.done + count)

    def at(self, done: int) -> None:
        with self.lock:
            self._show(done)

    def _show(self, done: int) -> None:
        self.done = max(self.done, min(done, self.total))
        if self.progress is not None:
            self.progress(self.channel, self.done, self.total)
