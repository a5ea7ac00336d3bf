"""The persistent response cache every model call goes through, and its hit/miss report.

One SQLite file (WAL, so readers never block the writer and several processes share it safely:
OpenCompass, `oaieval` and lm-eval call the layer from their own subprocesses). An answer is
written the moment it arrives, so a run killed at any point loses none it already paid for. The
one exception is an event loop's answers (`put_soon`, `benchbridge serve` awaiting an `openai`
model): a writer thread commits them within `WRITE_BEHIND_S` (5 ms) and at exit, so only a
`kill -9` within those milliseconds can lose one.

Where it lives and whether it is used come from the environment, so that framework subprocesses
inherit the run's choice: `BENCHBRIDGE_CACHE` (file path; default
`$XDG_CACHE_HOME/benchbridge/responses.sqlite`, i.e. `~/.cache/...`), `BENCHBRIDGE_NO_CACHE=1`
(neither read nor write answers), `BENCHBRIDGE_CACHE_SESSION` (the run id the counts are filed
under). `configure_cache` sets them; `benchbridge run` calls it from the run config's `cache:`.

Counts (hits, misses, model calls, retries, tokens saved) are kept per process in memory and
written to the same file under the session id: at the end of each `generate` (at most every
half second) and at exit; `cache_report(session)` adds up every process of a run.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from bridges._errors import BenchbridgeError
from bridges.models._types import ChatResponse, TokenLogprob
from bridges.sqlite import connect_wal

ENV_PATH = "BENCHBRIDGE_CACHE"
ENV_DISABLED = "BENCHBRIDGE_NO_CACHE"
ENV_SESSION = "BENCHBRIDGE_CACHE_SESSION"
# How long the writer thread gathers `put_soon` answers into one commit: a kill -9 can lose answers this recent.
WRITE_BEHIND_S = 0.005
WRITER_RETRY_S = 1.0  # after a failed commit (another process holding the write lock past the busy timeout...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    session TEXT NOT NULL,
    process TEXT NOT NULL,
    hits INTEGER NOT NULL,
    misses INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    tokens_saved INTEGER NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (session, process)
);
"""


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "benchbridge" / "responses.sqlite"


def configure_cache(
    path: str | os.PathLike[str] | None = None, *, enabled: bool = True, session: str | None = None
) -> None:
    """Chooses the cache for this process and every subprocess it starts afterwards (via the environment).

    `path=None` keeps `$BENCHBRIDGE_CACHE` (or the default); `session` files the counts under a run id.
    """
    if path is not None:
        os.environ[ENV_PATH] = str(Path(path).expanduser().resolve())
    if enabled:
        os.environ.pop(ENV_DISABLED, None)
    else:
        os.environ[ENV_DISABLED] = "1"
    if session is not None:
        os.environ[ENV_SESSION] = session


@dataclass
class Usage:
    """What the cache saved, for one process or summed over a session."""

    hits: int = 0  # answers served from the cache (or shared with an identical request in the same batch)
    misses: int = 0  # answers the model had to give
    calls: int = 0  # backend calls that returned (a batch of an hf/python model is one call)
    retries: int = 0  # attempts that failed transiently and were retried
    tokens_saved: int = 0  # usage tokens of cached answers (characters/4 where the backend reports none)

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class CacheReport(Usage):
    path: str = ""
    enabled: bool = True
    session: str = ""

    def line(self) -> str:
        if not self.enabled:
            return f"response cache off: {self.misses} answers asked of the models in {self.calls} calls"
        total = self.hits + self.misses
        return (
            f"response cache: {self.hits} hits, {self.misses} misses of {total} answers"
            f" ({self.calls} model calls, {self.retries} retries), ~{self.tokens_saved} tokens saved [{self.path}]"
        )


def response_to_json(resp: ChatResponse) -> str:
    return json.dumps(asdict(resp), ensure_ascii=False, separators=(",", ":"))


def response_from_json(text: str) -> ChatResponse:
    data = json.loads(text)
    if data.get("logprobs") is not None:
        data["logprobs"] = [
            TokenLogprob(t["token"], t["logprob"], [(tok, lp) for tok, lp in t.get("top") or []])
            for t in data["logprobs"]
        ]
    known = {f.name for f in fields(ChatResponse)}
    return ChatResponse(**{k: v for k, v in data.items() if k in known})


class ResponseCache:
    """Answers by key in one SQLite file. Thread-safe (one connection, one lock); process-safe (WAL).

    Writes are group commits: an answer joins a queue, and whichever thread holds the connection
    commits everything queued. A thread that finds the connection busy does not wait for it
    (`put_many(wait=False)`): the holder commits its rows right after its own, within a commit's
    time (well under a millisecond). At 32 threads that keeps the cache off the request path.

    Lookups do not take the writer's connection: they read through a pool of read connections (WAL
    readers never wait for a writer), after looking at the rows still queued or being committed, so
    an answer is found from the moment it is queued. Serving one request per call, a lookup queued
    behind commits took a third of a request thread's time.
    """

    def __init__(self, path: Path, *, enabled: bool, session: str) -> None:
        self.path = path
        self.enabled = enabled
        self.session = session
        self.usage = Usage()
        self.pid = os.getpid()
        self._process = f"{self.pid}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()  # the connection
        self._pending_lock = threading.Lock()  # rows waiting for a commit, and the counts
        self._pending: list[tuple[str, str, str, float]] = []
        self._in_commit: list[tuple[str, str, str, float]] = []  # taken from _pending, not committed yet
        self._readers: list[sqlite3.Connection] = []  # idle read connections
        self._all_readers: list[sqlite3.Connection] = []
        self._last_flush = 0.0
        self._conn: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None  # commits what `put_soon` queues; started on its first use
        self._writer_wake = threading.Event()
        self._writer_failed = False
        self._flush_wanted = False
        self._closed = False

    def _db(self) -> sqlite3.Connection:
        # Opened on first use: a process that never calls a model never creates the file.
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = connect_wal(self.path, check_same_thread=False)
                conn.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise BenchbridgeError(
                    f"response cache {self.path}: cannot open ({exc}); choose another file with cache.path in the run"
                    f" config or ${ENV_PATH}, or run with --no-cache"
                ) from None
            self._conn = conn
        return self._conn

    def _commit_pending(self) -> None:
        """With the connection held: commits every queued row (looping while other threads add more)."""
        while True:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                self._in_commit = batch
            if not batch:
                return
            try:
                db = self._db()
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", batch)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except BaseException:  # not committed (no file, "database is locked", a full disk): queued again
                with self._pending_lock:
                    self._pending[:0] = batch
                raise
            finally:
                with self._pending_lock:
                    self._in_commit = []

    def _has_pending(self) -> bool:
        with self._pending_lock:
            return bool(self._pending)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, queued answers committed first. On release, rows queued meanwhile are committed too."""
        with self._lock:
            self._commit_pending()
            yield self._db()
        # A thread that queued rows while we held the connection returned without waiting for them.
        while self._has_pending() and self._lock.acquire(blocking=False):
            try:
                self._commit_pending()
            finally:
                self._lock.release()

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read connection of the pool (opened when none is idle); the writer creates the file first."""
        with self._pending_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            if self._conn is None:
                with self._lock:
                    self._db()
            try:
                conn = connect_wal(self.path, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise BenchbridgeError(f"response cache {self.path}: cannot open for reading ({exc})") from None
            with self._pending_lock:
                self._all_readers.append(conn)
        try:
            yield conn
        finally:
            with self._pending_lock:
                self._readers.append(conn)

    def get_many(self, keys: Sequence[str]) -> dict[str, ChatResponse]:
        if not self.enabled or not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        # Rows not committed yet first: once they leave memory they are committed, so the SELECT after sees them.
        wanted = set(unique)
        with self._pending_lock:
            queued = [(row[0], row[2]) for row in (*self._in_commit, *self._pending) if row[0] in wanted]
        found = {key: response_from_json(text) for key, text in queued}
        rest = [key for key in unique if key not in found]
        with self._reader() as db:
            for i in range(0, len(rest), 500):
                part = rest[i : i + 500]
                marks = ",".join("?" * len(part))
                for key, text in db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", part):
                    found[key] = response_from_json(text)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, ChatResponse]], *, wait: bool = True) -> None:
        """Queues answers for a commit. `wait=True` returns once they are committed; `wait=False` once a
        thread is committing them (this one, or the one holding the connection, right after its own)."""
        if not self.enabled:
            return
        self._queue(model, items)
        if wait:
            self.sync()
            return
        while self._has_pending() and self._lock.acquire(blocking=False):
            try:
                self._commit_pending()
            finally:
                self._lock.release()

    def put_soon(self, model: str, items: Iterable[tuple[str, ChatResponse]]) -> None:
        """Queues answers for the cache's writer thread, which commits them within `WRITE_BEHIND_S` (and `close`,
        at exit, what is left): for an event loop, which must neither commit nor wait for a lock. Found by
        `get_many` from the moment they are queued, like every queued answer."""
        if not self.enabled:
            return
        self._queue(model, items)
        self._wake_writer()

    def _queue(self, model: str, items: Iterable[tuple[str, ChatResponse]]) -> None:
        now = time.time()
        rows = [(key, model, response_to_json(resp), now) for key, resp in items]
        with self._pending_lock:
            self._pending.extend(rows)

    def flush_soon(self) -> None:
        """`flush(force=False)` on the writer thread."""
        if self.enabled and not self._closed and time.monotonic() - self._last_flush >= 0.5:
            self._flush_wanted = True
            self._wake_writer()

    def _wake_writer(self) -> None:
        with self._pending_lock:
            closed = self._closed
            if self._writer is None and not closed:
                self._writer = threading.Thread(target=self._write_behind, name="response-cache-writer", daemon=True)
                self._writer.start()
        if closed:  # an answer that arrives after `close` (a request still in flight at exit): committed here
            self.sync()
        else:
            self._writer_wake.set()

    def _write_behind(self) -> None:
        while True:
            self._writer_wake.wait()
            if self._closed:  # `close` commits what is left
                return
            time.sleep(WRITE_BEHIND_S)  # the answers of the next few milliseconds join the same commit
            self._writer_wake.clear()
            try:
                self.sync()
                if self._flush_wanted:
                    self._flush_wanted = False
                    self.flush(force=False)
            except Exception as exc:  # any failure: the rows stay queued (found by lookups), retried in a second
                if not self._writer_failed:
                    print(f"benchbridge: warning: response cache {self.path}: {exc}; retrying", file=sys.stderr)
                self._writer_failed = True
                time.sleep(WRITER_RETRY_S)
                self._writer_wake.set()
            else:
                self._writer_failed = False

    def sync(self) -> None:
        """Returns once every answer queued so far (by any thread) is committed."""
        if self.enabled:
            with self._connection():
                pass

    def count(self, usage: Usage) -> None:
        with self._pending_lock:
            self.usage.add(usage)

    def flush(self, *, force: bool = True) -> None:
        """Writes this process's counts under the session (idempotent: absolute totals per process)."""
        if not force and time.monotonic() - self._last_flush < 0.5:
            return
        with self._pending_lock:
            u = replace(self.usage)
        if u == Usage() and self._conn is None:
            return
        with self._connection() as db:
            self._last_flush = time.monotonic()
            db.execute(
                "INSERT OR REPLACE INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.session, self._process, u.hits, u.misses, u.calls, u.retries, u.tokens_saved, time.time()),
            )

    def report(self, session: str | None = None) -> CacheReport:
        self.flush()
        session = session or self.session
        with self._connection() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(hits),0), COALESCE(SUM(misses),0), COALESCE(SUM(calls),0),"
                " COALESCE(SUM(retries),0), COALESCE(SUM(tokens_saved),0) FROM usage WHERE session = ?",
                (session,),
            ).fetchone()
        hits, misses, calls, retries, tokens_saved = row
        return CacheReport(
            hits=hits,
            misses=misses,
            calls=calls,
            retries=retries,
            tokens_saved=tokens_saved,
            path=str(self.path),
            enabled=self.enabled,
            session=session,
        )

    def close(self) -> None:
        with self._pending_lock:
            self._closed = True  # the writer thread stops; later answers are committed by their caller
        self._writer_wake.set()
        if self._conn is not None or self._has_pending():
            self.sync()
        with self._pending_lock:
            readers, self._all_readers, self._readers = self._all_readers, [], []
        for conn in readers:
            conn.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_CURRENT: tuple[tuple[str | int | None, ...], ResponseCache] | None = None
_CURRENT_LOCK = threading.Lock()
_PROCESS_SESSION = f"process-{os.getpid()}-{secrets.token_hex(4)}"


def response_cache() -> ResponseCache:
    """The cache the environment currently chooses (reopened when `configure_cache` changes it)."""
    global _CURRENT
    # The variables that decide, not the path they make: serve asks this for every request, and building the
    # default path (expanduser, Path) cost more than the lookup it keys.
    settings = (
        os.environ.get(ENV_PATH),
        os.environ.get("XDG_CACHE_HOME"),
        os.environ.get("HOME"),
        os.environ.get(ENV_DISABLED, ""),
        os.environ.get(ENV_SESSION) or _PROCESS_SESSION,
        os.getpid(),  # a forked child must not use its parent's SQLite connection
    )
    with _CURRENT_LOCK:
        if _CURRENT is None or _CURRENT[0] != settings:
            if _CURRENT is not None and _CURRENT[1].pid == os.getpid():
                _retire(_CURRENT[1])
            path = Path(settings[0]) if settings[0] else default_cache_path()
            disabled, session = settings[3], settings[4]
            _CURRENT = (settings, ResponseCache(path, enabled=disabled in ("", "0"), session=session))
        return _CURRENT[1]


def cache_report(session: str | None = None) -> CacheReport:
    """Hits, misses, model calls and tokens saved for a session (default: the current one), all processes."""
    return response_cache().report(session)


def _retire(cache: ResponseCache) -> None:
    """Files the counts of a cache this process stops using, and closes it."""
    try:
        cache.flush()
        cache.close()
    except (BenchbridgeError, sqlite3.Error):
        pass  # its answers were committed as they came (or their error raised then): only the counts are lost


@atexit.register
def _flush_at_exit() -> None:
    if _CURRENT is not None and _CURRENT[1].pid == os.getpid():
        _retire(_CURRENT[1])
