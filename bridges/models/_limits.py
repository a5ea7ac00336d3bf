"""Per-model pacing: requests in flight, requests and tokens per minute, backoff and `Retry-After`.

Written here rather than with tenacity: the retry decision needs the upstream's `Retry-After`, a
model-wide pause after a 429 (so 32 threads do not each discover the same rate limit), and the
concurrency slot released while waiting; that is a loop of a dozen lines, clearer than the
equivalent tenacity wait/stop/retry objects.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from bridges.models._spec import Limits
from bridges.models._types import ModelUnavailable, RetryableModelError

T = TypeVar("T")
SLOT_POLL_S = 0.05  # how often a coroutine's slot wait checks whether it was cancelled


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

    def _take(self, cost: float) -> float:
        """Takes `cost` and returns 0, or takes nothing and returns the seconds to wait before trying again."""
        need = min(cost, self.capacity)
        with self.lock:
            self._refill(time.monotonic())
            if self.level >= need:
                self.level -= cost
                return 0.0
            return (need - self.level) / self.rate

    def acquire(self, cost: float) -> None:
        while (wait := self._take(cost)) > 0:
            time.sleep(wait)

    async def acquire_async(self, cost: float) -> None:
        while (wait := self._take(cost)) > 0:
            await asyncio.sleep(wait)

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
        self._slot_waiters: ThreadPoolExecutor | None = None  # made when a coroutine first finds every slot taken

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number `attempt` (1-based): Retry-After plus a little jitter, else full jitter."""
        if retry_after is not None:
            return retry_after + random.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        cap = min(self.limits.backoff_max_s, self.limits.backoff_s * 2 ** (attempt - 1))
        return random.uniform(0, cap)

    def pause_all(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def _pause_left(self) -> float:
        return self._resume_at - time.monotonic()

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    @contextmanager
    def slot(self, requests: int, tokens: float) -> Iterator[None]:
        while (wait := self._pause_left()) > 0:
            time.sleep(wait)
        with self.slots:
            if self.requests:
                self.requests.acquire(requests)
            if self.tokens:
                self.tokens.acquire(tokens)
            with self._counted():
                yield

    @asynccontextmanager
    async def slot_async(self, requests: int, tokens: float) -> AsyncIterator[None]:
        """`slot` for a coroutine: the same slots and buckets (threads and coroutines share the limits), waited
        for without blocking the event loop."""
        while (wait := self._pause_left()) > 0:
            await asyncio.sleep(wait)
        if not self.slots.acquire(blocking=False):
            await self._wait_for_slot()
        try:
            if self.requests:
                await self.requests.acquire_async(requests)
            if self.tokens:
                await self.tokens.acquire_async(tokens)
            with self._counted():
                yield
        finally:
            self.slots.release()

    async def _wait_for_slot(self) -> None:
        """Every slot is taken: waits for one on a thread (a semaphore the request threads share has no
        awaitable side). The thread polls, so a cancelled wait ends it within `SLOT_POLL_S` (nothing is left
        blocked at exit); a slot it took just as the wait was cancelled is given back from that thread."""
        with self._lock:
            if self._slot_waiters is None:
                self._slot_waiters = ThreadPoolExecutor(thread_name_prefix=f"slot-wait-{self.name}")
            waiters = self._slot_waiters
        given_up = threading.Event()

        def take() -> bool:
            while not given_up.is_set():
                if self.slots.acquire(timeout=SLOT_POLL_S):
                    return True
            return False

        taking = waiters.submit(take)
        try:
            await asyncio.wrap_future(taking)
        except BaseException:  # cancelled: the slot is not ours to use
            given_up.set()
            taking.add_done_callback(lambda f: self.slots.release() if not f.cancelled() and f.result() else None)
            raise

    def _retry_delay(self, exc: RetryableModelError, attempt: int) -> float:
        """Seconds before the next attempt after failure number `attempt`; `ModelUnavailable` once retries run
        out or the upstream asks for a longer wait than allowed. A Retry-After pauses the whole model."""
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
        delay = self.backoff(attempt, after)
        if after is not None:
            self.pause_all(delay)
        return delay

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
                delay = self._retry_delay(exc, attempt)
                on_retry()
                time.sleep(delay)

    async def call_async(
        self, fn: Callable[[], Awaitable[T]], requests: int, tokens: float, on_retry: Callable[[], None]
    ) -> T:
        """`call` for a coroutine function, on an event loop."""
        attempt = 0
        while True:
            try:
                async with self.slot_async(requests, tokens):
                    return await fn()
            except RetryableModelError as exc:
                attempt += 1
                delay = self._retry_delay(exc, attempt)
                on_retry()
                await asyncio.sleep(delay)
