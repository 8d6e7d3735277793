"""Dispatch: the statement first, then every other channel at once, each delivery retried.

The website goes first because every other post links to it. If it fails, nothing else is
sent and the deliveries stay pending for `retry`. Other channels run concurrently, one
thread per channel (a channel's own deliveries keep their order, which threads rely on), and
one channel's failure never stops another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import tenacity
from pydantic import SecretStr

from broadcaster import registry
from broadcaster.channels.base import Channel, Post
from broadcaster.errors import PermanentDeliveryError, TransientDeliveryError
from broadcaster.ledger import Ledger
from broadcaster.masking import mask
from broadcaster.model import Delivery, DeliveryState
from broadcaster.settings import RetrySettings


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

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self.wait,
            retry=tenacity.retry_if_exception_type(TransientDeliveryError),
            sleep=self.sleep,
            reraise=True,
        )


@dataclass(frozen=True)
class Job:
    """A recorded delivery, the channel that sends it and the post it sends."""

    delivery: Delivery
    channel: Channel
    post: Post
    seq: int


class Dispatcher:
    def __init__(self, ledger: Ledger, policy: RetryPolicy, secrets: Iterable[SecretStr]) -> None:
        self.ledger = ledger
        self.policy = policy
        self.secrets = list(secrets)

    def run(self, jobs: Sequence[Job]) -> None:
        """Send the statement, then, if it is live, everything else concurrently."""
        first = [j for j in jobs if j.channel.spec.publishes_statement]
        rest = [j for j in jobs if not j.channel.spec.publishes_statement]
        for job in first:
            self.deliver(job)
        if not rest or not self._statement_live({j.delivery.update_id for j in rest}):
            return
        by_channel: dict[str, list[Job]] = {}
        for job in rest:
            by_channel.setdefault(job.channel.spec.name, []).append(job)
        with ThreadPoolExecutor(max_workers=len(by_channel), thread_name_prefix="channel") as pool:
            for future in [pool.submit(self._deliver_all, group) for group in by_channel.values()]:
                future.result()

    def _statement_live(self, update_ids: set[str]) -> bool:
        """Whether the statement of every update is published (now, or by an earlier run)."""
        known = registry.channels()
        return all(
            delivery.state is DeliveryState.SENT
            for update_id in update_ids
            for delivery in self.ledger.deliveries(update_id=update_id)
            if delivery.channel in known and known[delivery.channel].spec.publishes_statement
        )

    def _deliver_all(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.deliver(job)

    def deliver(self, job: Job) -> None:
        """One delivery through tenacity; the ledger hears of every attempt and the outcome."""
        delivery = job.delivery
        # In flight from an earlier, dead process: its answer may have been lost after the
        # platform acted, so the channel must settle that before posting again.
        resumed = delivery.state is DeliveryState.IN_FLIGHT
        thread = self.ledger.thread(delivery.incident_id, delivery.channel, job.seq)
        attempts = 0
        try:
            for attempt in self.policy.retrying():
                with attempt:
                    attempts += 1
                    self.ledger.start_attempt(delivery.id)
                    receipt = job.channel.send(job.post, thread, resumed=resumed or attempts > 1)
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
