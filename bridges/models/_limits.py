"""Per-model pacing: requests in flight, requests and tokens per minute, backoff and `Retry-After`.

Written here rather than with tenacity: the retry decision needs the upstream's `Retry-After`, a
model-wide pause after a 429 (so 32 threads do not each discover the same rate limit), and the
concurrency slot released while waiting; that is a loop of a dozen lines, clearer than the
equivalent tenacity wait/stop/retry objects.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from bridges.models._spec import Limits
from bridges.models._types import ModelUnavailable, RetryableModelError

T = TypeVar("T")


class TokenBucket:
    """`rate_per_minute` units, refilled continuously; holds at most `burst` units.

    A request costing more than the burst waits for a full bucket and then leaves it in debt, so
    that one large request is possible but the average rate still holds.
    """

    def __init__(self, rate_per_minute: float, burst: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = max(burst, 1.0)
        self.level = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def acquire(self, cost: float) -> None:
        need = min(cost, self.capacity)
        while True:
            with self.lock:
                now = time.monotonic()
                self._refill(now)
                if self.level >= need:
                    self.level -= cost
                    return
                wait = (need - self.level) / self.rate
            time.sleep(wait)

    def refund(self, amount: float) -> None:
        """Gives back (or, negative, charges) the difference once the real cost is known."""
        with self.lock:
            self._refill(time.monotonic())
            self.level = min(self.capacity, self.level + amount)


class Throttle:
    """Everything that paces one model in one process: a slot per request in flight and the buckets."""

    def __init__(self, limits: Limits, name: str) -> None:
        self.limits = limits
        self.name = name
        self.slots = threading.BoundedSemaphore(limits.max_concurrency)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        # A burst of one second's worth: a minute's worth at once is what real upstreams reject.
        self.requests = TokenBucket(rpm, rpm / 60.0) if rpm else None
        self.tokens = TokenBucket(tpm, tpm / 60.0) if tpm else None
        self._resume_at = 0.0  # model-wide pause after a 429 with Retry-After
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number `attempt` (1-based): Retry-After plus a little jitter, else full jitter."""
        if retry_after is not None:
            return retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        cap = min(self.limits.backoff_max_s, self.limits.backoff_s * 2 ** (attempt - 1))
        return random.uniform(0, cap)

    def pause_all(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def _wait_for_pause(self) -> None:
        while (wait := self._resume_at - time.monotonic()) > 0:
            time.sleep(wait)

    @contextmanager
    def slot(self, requests: int, tokens: float) -> Iterator[None]:
        self._wait_for_pause()
        with self.slots:
            if self.requests:
                self.requests.acquire(requests)
            if self.tokens:
                self.tokens.acquire(tokens)
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1

    def call(self, fn: Callable[[], T], requests: int, tokens: float, on_retry: Callable[[], None]) -> T:
        """Runs `fn` (a backend call answering `requests` prompts) in a slot, retrying `RetryableModelError`
        with backoff; the slot is free while waiting. Every prompt counts against requests_per_minute."""
        attempt = 0
        while True:
            try:
                with self.slot(requests, tokens):
                    return fn()
            except RetryableModelError as exc:
                attempt += 1
                after = exc.retry_after
                if after is not None and after > self.limits.max_retry_after_s:
                    raise ModelUnavailable(
                        f"model {self.name}: upstream asks to wait {after:.0f} s"
                        f" (> limits.max_retry_after_s = {self.limits.max_retry_after_s:.0f}): {exc}"
                    ) from exc
                if attempt > self.limits.max_retries:
                    raise ModelUnavailable(
                        f"model {self.name}: gave up after {attempt} attempts"
                        f" (limits.max_retries = {self.limits.max_retries}): {exc}"
                    ) from exc
                on_retry()
                delay = self.backoff(attempt, after)
                if after is not None:
                    self.pause_all(delay)
                time.sleep(delay)
