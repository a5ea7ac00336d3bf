"""The model layer at speed: response cache, concurrency, rate limits, retries, resume.

Real loopback HTTP servers (`bridges.loopback`, 127.0.0.1, bounded lifetime) stand in for the
upstream; `tests._layer_models.CountingModel` counts the calls of a `python` model across
processes. Timing is asserted loosely (order and counts); speed lives in benchmarks/model_layer.py.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridges import BenchbridgeError, load_config
from bridges.cli import build_parser
from bridges.loopback import Faults, LoopbackUpstream
from bridges.models import (
    ChatRequest,
    ChatResponse,
    Model,
    ModelRequestRejected,
    ModelUnavailable,
    RetryableModelError,
    cache_report,
    configure_cache,
    get_model,
    parse_model_spec,
    response_cache,
)
from bridges.models._cache import ENV_DISABLED, ENV_PATH, ENV_SESSION
from bridges.models._limits import TokenBucket
from bridges.models._types import cut_at_stops
from tests._layer_models import read_log
from tests.conftest import ROOT

KEY_ENV = "BENCHBRIDGE_TEST_UPSTREAM_KEY"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache file and session; subprocesses inherit both."""
    path = tmp_path / "cache.sqlite"
    monkeypatch.setenv(ENV_PATH, str(path))
    monkeypatch.setenv(ENV_SESSION, f"test-{tmp_path.name}")
    monkeypatch.setenv(ENV_DISABLED, "")  # recorded, so configure_cache(enabled=False) is undone after the test
    monkeypatch.setenv(KEY_ENV, "sk-loopback")
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[LoopbackUpstream]:
    with LoopbackUpstream(latency_s=0.02, max_seconds=300) as up:
        yield up


def counting_spec(log: Path, name: str = "counter", **extra: Any) -> dict[str, Any]:
    spec = {"name": name, "kind": "python", "target": "tests._layer_models:CountingModel", "args": {"log": str(log)}}
    return {**spec, **extra}


def openai_spec(up: LoopbackUpstream, name: str = "loop", **limits: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "openai",
        "model": "loopback",
        "base_url": up.base_url,
        "api_key_env": KEY_ENV,
        "limits": {"backoff_s": 0.05, **limits},
    }


def questions(n: int, **settings: Any) -> list[ChatRequest]:
    return [ChatRequest((("user", f"question {i}"),), **settings) for i in range(n)]


def fresh(spec: dict[str, Any]) -> Model:
    """A new Model object (nothing loaded, no in-process state) for the spec."""
    return Model(parse_model_spec(spec))


def answered(up: LoopbackUpstream) -> int:
    return sum(up.stats()["answered"].values())


# The layer's two entry points: `generate` (threads block in the backend) and `generate_async` (an event loop
# awaits it: `benchbridge serve`). The same limits, retries and errors must hold for both.
ENTRY_POINTS = ["threads", "event loop"]


def ask(model: Model, requests: list[ChatRequest], how: str) -> list[ChatResponse]:
    """`generate`, or `generate_async` on an event loop of its own (its connections closed before it ends)."""
    if how == "threads":
        return model.generate(requests)

    async def on_a_loop() -> list[ChatResponse]:
        try:
            return await model.generate_async(requests)
        finally:
            await model.close_async()

    return asyncio.run(on_a_loop())


# --- the response cache -------------------------------------------------------------------------


def test_cache_hits_only_for_the_same_question_to_the_same_model(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    first = fresh(counting_spec(log)).generate(questions(5))
    assert len(read_log(str(log))) == 5

    # Another display name, other limits, another batch size: the same model -> all hits.
    renamed = counting_spec(log, name="renamed", limits={"max_concurrency": 9}, batch_size=2)
    assert fresh(renamed).generate(questions(5)) == first
    assert len(read_log(str(log))) == 5

    # Each of these changes the answer a model would give -> misses.
    changes = [
        (counting_spec(log, system_prompt="Answer briefly."), {}),
        (counting_spec(log, generation={"max_new_tokens": 7}), {}),
        (counting_spec(log, generation={"temperature": 0.5, "seed": 1}), {}),
        (counting_spec(log, args={"log": str(log), "prefix": "v2-"}), {}),
        (counting_spec(log), {"seed": 3}),
        (counting_spec(log), {"stop": ("\n",)}),
        (counting_spec(log), {"logprobs": True, "top_logprobs": 2}),
        (counting_spec(log), {"tool": ("pick", '{"type": "object"}')}),
    ]
    for i, (spec, settings) in enumerate(changes, start=1):
        fresh(spec).generate(questions(5, **settings))
        assert len(read_log(str(log))) == 5 + 5 * i, (spec, settings)

    # A request the spec would complete identically (its default max_new_tokens spelled out) is a hit.
    fresh(counting_spec(log)).generate(questions(5, max_new_tokens=256))
    assert len(read_log(str(log))) == 5 + 5 * len(changes)

    report = cache_report()
    assert (report.misses, report.hits) == (5 + 5 * len(changes), 10)
    assert report.calls == 1 + len(changes)  # a python model answers a batch of up to 8 in one call
    assert report.tokens_saved > 0


def test_identical_requests_in_one_call_are_asked_once_and_progress_counts_them(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    seen: list[int] = []
    reqs = questions(3) * 3
    out = fresh(counting_spec(log)).generate(reqs, progress=seen.append)
    assert [o.text for o in out[:3]] == [o.text for o in out[3:6]] == [o.text for o in out[6:]]
    assert len(read_log(str(log))) == 3
    assert sum(seen) == 9
    seen.clear()
    fresh(counting_spec(log)).generate(reqs, progress=seen.append)
    assert seen == [9]


def test_editing_a_python_models_source_is_a_new_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "pymods" / "editable_model.py"
    module.parent.mkdir()
    module.write_text("def answer(batch):\n    return ['one' for _ in batch]\n")
    monkeypatch.syspath_prepend(str(module.parent))
    spec = {"name": "edit", "kind": "python", "target": "editable_model:answer"}
    assert fresh(spec).chat(["q"]) == ["one"]
    module.write_text("def answer(batch):\n    return ['second' for _ in batch]\n")
    sys.modules.pop("editable_model", None)
    assert fresh(spec).chat(["q"]) == ["second"]


def test_a_python_model_edited_after_this_process_imported_it_answers_with_the_new_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models load in benchbridge's process (served to the frameworks): a second run in the same process
    (a notebook, the tests) after the module changed must not answer with the module already imported."""
    module = tmp_path / "pymods" / "reedited_model.py"
    module.parent.mkdir()
    module.write_text("def answer(batch):\n    return ['one' for _ in batch]\n")
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.delitem(sys.modules, "reedited_model", raising=False)
    spec = {"name": "reedit", "kind": "python", "target": "reedited_model:answer"}
    assert fresh(spec).chat(["q"]) == ["one"]
    module.write_text("def answer(batch):\n    return ['second' for _ in batch]\n")
    assert fresh(spec).chat(["q"]) == ["second"]  # still in sys.modules, with the old code
    module.write_text("def answer(batch):\n    return ['third' for _ in batch]\n")
    assert fresh(spec).chat(["q"]) == ["third"]


def test_an_edit_of_the_same_size_in_the_same_second_is_not_hidden_by_cached_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python checks a .pyc against its source's size and whole-second time only: the answer must come from
    the source on disk, whose hash the cache keys carry, both in this process and in a new one."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as Python runs by default: .pyc files written
    module = tmp_path / "pymods" / "same_size_model.py"
    module.parent.mkdir()
    monkeypatch.syspath_prepend(str(module.parent))
    monkeypatch.delitem(sys.modules, "same_size_model", raising=False)
    spec = {"name": "same-size", "kind": "python", "target": "same_size_model:answer"}
    stamp = time.time_ns()
    for answer in ("aaa", "bbb", "ccc"):
        module.write_text(f"def answer(batch):\n    return ['{answer}' for _ in batch]\n")
        os.utime(module, ns=(stamp, stamp))  # the same second, the same size: only the content differs
        if answer == "ccc":  # a new process: nothing imported yet, the .pyc of "bbb" on disk
            del sys.modules["same_size_model"]
        assert fresh(spec).chat(["q"]) == [answer]
    assert list((module.parent / "__pycache__").glob("same_size_model.*.pyc"))  # bytecode was in play


def test_no_cache_neither_reads_nor_writes(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    fresh(counting_spec(log)).generate(questions(4))
    configure_cache(enabled=False)
    fresh(counting_spec(log)).generate(questions(4) + questions(6)[4:])
    assert len(read_log(str(log))) == 4 + 6
    configure_cache(enabled=True)
    fresh(counting_spec(log)).generate(questions(6))
    assert len(read_log(str(log))) == 4 + 6 + 2  # questions 4 and 5 were not written while off


def test_cache_is_shared_by_processes_running_at_once(tmp_path: Path, own_cache: Path) -> None:
    """Three subprocesses write overlapping answers at the same time; then the parent asks nothing."""
    log = tmp_path / "calls.log"
    spec = json.dumps(counting_spec(log, batch_size=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests._layer_models", spec, "60", str(tmp_path / f"out{i}.json")], env=env
        )
        for i in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(3)]
    assert outs[0] == outs[1] == outs[2]
    asked = len(read_log(str(log)))
    assert 60 <= asked <= 180  # racing processes may each ask a question before another's answer lands

    again = fresh(counting_spec(log, batch_size=1)).generate(questions(60))
    assert [a.text for a in again] == outs[0]
    assert len(read_log(str(log))) == asked  # a warm rerun makes zero model calls
    report = cache_report()  # every process filed its counts under this test's session
    assert report.hits + report.misses == 4 * 60
    assert report.misses == asked
    with sqlite3.connect(own_cache) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 60


def test_answers_written_without_waiting_are_all_committed(own_cache: Path) -> None:
    """Group commit: 16 threads that do not wait for the connection still see every answer committed."""
    cache = response_cache()

    def write(t: int) -> None:
        for i in range(50):
            cache.put_many("m", [(f"key-{t}-{i}", ChatResponse(text=f"{t}/{i}"))], wait=False)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sqlite3.connect(own_cache) as db:  # another connection: only committed rows are visible
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 800
    assert cache.get_many(["key-3-7"])["key-3-7"] == ChatResponse(text="3/7")


def test_answers_put_soon_are_found_at_once_and_committed_by_the_writer_thread(own_cache: Path) -> None:
    """`put_soon` (an event loop's writes): the caller neither commits nor waits; the writer thread commits
    within `WRITE_BEHIND_S`, and what it has not committed yet is committed by `close`."""
    cache = response_cache()
    cache.put_many("m", [("committed", ChatResponse(text="c"))])  # the file and its connection exist
    with cache._lock:  # the connection is busy: nothing can be committed meanwhile
        started = time.monotonic()
        cache.put_soon("m", [(f"soon-{i}", ChatResponse(text=str(i))) for i in range(5)])
        assert time.monotonic() - started < 0.05  # did not wait for the lock
        assert cache.get_many(["soon-3"]) == {"soon-3": ChatResponse(text="3")}  # found while only queued
    deadline = time.monotonic() + 5
    while True:  # another connection sees only committed rows
        with sqlite3.connect(own_cache) as db:
            if db.execute("SELECT COUNT(*) FROM responses WHERE key LIKE 'soon-%'").fetchone()[0] == 5:
                break
        assert time.monotonic() < deadline, "the writer thread did not commit"
        time.sleep(0.01)
    with cache._lock:  # the writer cannot commit these: `close` must
        cache.put_soon("m", [("late", ChatResponse(text="late"))])
    cache.close()
    with sqlite3.connect(own_cache) as db:
        assert db.execute("SELECT response FROM responses WHERE key = 'late'").fetchone() is not None


def test_answers_put_soon_survive_a_commit_that_fails(own_cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Another process holding the write lock past the busy timeout: the writer thread keeps the answers
    queued (found by lookups), says so once, and commits them when it can."""
    cache = response_cache()
    cache.put_many("m", [("first", ChatResponse(text="1"))])
    assert cache._conn is not None
    cache._conn.execute("PRAGMA busy_timeout = 200")  # stands for the 60 s busy timeout running out
    other = sqlite3.connect(own_cache, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    cache.put_soon("m", [("kept", ChatResponse(text="K"))])
    time.sleep(0.6)
    assert cache.get_many(["kept"]) == {"kept": ChatResponse(text="K")}
    other.execute("ROLLBACK")
    other.close()
    deadline = time.monotonic() + 5
    while True:  # retried without another answer coming to wake it
        with sqlite3.connect(own_cache) as db:
            if db.execute("SELECT COUNT(*) FROM responses WHERE key = 'kept'").fetchone()[0]:
                break
        assert time.monotonic() < deadline, "the writer did not commit the answer once the lock was free"
        time.sleep(0.05)
    assert capfd.readouterr().err.count("database is locked; retrying") == 1


def test_lookups_see_queued_answers_and_do_not_wait_for_the_writer(own_cache: Path) -> None:
    """A lookup reads through its own connection: it neither queues behind a commit nor misses an
    answer that is queued but not committed yet (the writer's connection is held meanwhile)."""
    cache = response_cache()
    cache.put_many("m", [("committed", ChatResponse(text="c"))])
    with cache._lock:  # the writer is busy: rows queued now stay queued
        cache.put_many("m", [("queued", ChatResponse(text="q"))], wait=False)
        found: dict[str, ChatResponse] = {}
        reader = threading.Thread(target=lambda: found.update(cache.get_many(["committed", "queued", "absent"])))
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive()
        assert found == {"committed": ChatResponse(text="c"), "queued": ChatResponse(text="q")}
        with sqlite3.connect(own_cache) as db:
            assert db.execute("SELECT key FROM responses").fetchall() == [("committed",)]
    cache.sync()
    with sqlite3.connect(own_cache) as db:
        assert sorted(db.execute("SELECT key FROM responses").fetchall()) == [("committed",), ("queued",)]


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """OpenCompass and friends may fork: the child must not reuse the parent's SQLite connection."""
    log = tmp_path / "calls.log"
    fresh(counting_spec(log)).generate(questions(2))  # the parent's connection is open now
    child = multiprocessing.get_context("fork").Process(target=_ask_in_child, args=(str(log),))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert response_cache().pid == os.getpid()
    fresh(counting_spec(log)).generate(questions(3))
    assert len(read_log(str(log))) == 3  # the child's answer to question 2 is in the parent's cache


def _ask_in_child(log: str) -> None:
    fresh(counting_spec(Path(log))).generate(questions(3))
    assert response_cache().pid == os.getpid()


def test_an_unusable_cache_file_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_PATH, "/proc/no-such-dir/answers.sqlite")
    with pytest.raises(BenchbridgeError, match="response cache /proc/no-such-dir/answers.sqlite: cannot open"):
        fresh(counting_spec(tmp_path / "calls.log")).generate(questions(1))


def test_unseeded_sampling_keeps_its_draws(upstream: LoopbackUpstream) -> None:
    """temperature > 0 without a seed: n identical requests are n draws; a rerun replays them."""
    spec = openai_spec(upstream, name="sampler")
    reqs = [ChatRequest((("user", "tell me a story"),), temperature=0.8)] * 3
    before = answered(upstream)
    first = [a.text for a in fresh(spec).generate(reqs)]
    assert len(set(first)) == 3  # the upstream draws at random: three different answers
    assert [a.text for a in fresh(spec).generate(reqs)] == first
    assert answered(upstream) - before == 3


def test_hf_model_answers_from_the_cache_without_loading(tiny_model_path: Path) -> None:
    spec = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "batch_size": 2}
    spec["generation"] = {"max_new_tokens": 4}
    model = fresh(spec)
    first = model.generate(questions(5))
    assert model._backend is not None
    again = fresh(spec)
    assert again.generate(questions(5)) == first
    assert again._backend is None  # all five from the cache: the weights were never loaded


def test_hf_requests_differing_only_in_their_stops_share_one_generation(tiny_model_path: Path) -> None:
    # lm-eval asks with `until` stops, OpenCompass and OpenAI evals without: in parity mode the same
    # conversation. An hf model generates the same tokens either way (stops only cut the text), so the
    # layer asks once and cuts per request; the cut answers equal the backend's own with the stops.
    spec = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "batch_size": 1}
    spec["generation"] = {"max_new_tokens": 8}
    model = fresh(spec)
    plain = [a.text for a in model.generate(questions(3))]
    backend = model.backend
    calls: list[int] = []
    original = backend.generate

    def counted(requests: list[ChatRequest]) -> list[ChatResponse]:
        calls.append(len(requests))
        return original(requests)

    backend.generate = counted  # type: ignore[method-assign]
    stops = [text[2:4] for text in plain]  # each answer's third and fourth characters: a cut that shows
    assert all(len(s) == 2 for s in stops), plain
    stopped = model.generate([replace(q, stop=(s,)) for q, s in zip(questions(3), stops, strict=True)])
    assert calls == []  # every stopped request answered from the unstopped generation
    assert [a.text for a in stopped] == [t[: t.index(s)] for t, s in zip(plain, stops, strict=True)]
    direct = [
        original([replace(q, max_new_tokens=8, stop=(s,))])[0].text for q, s in zip(questions(3), stops, strict=True)
    ]
    assert [a.text for a in stopped] == direct


def test_stops_cut_at_the_earliest_match_and_unseeded_draws_keep_their_own_keys(tiny_model_path: Path) -> None:
    assert cut_at_stops("abc", ("c", "bc")) == "a"  # the earliest match, whatever the stops' order
    assert cut_at_stops("abc", ("", "x")) == "abc"
    # Unseeded sampling: each request is its own draw. Requests differing only in their stops keep separate keys,
    # so a rerun in another order replays each one's own draw (a shared key would hand out draws by position).
    spec = {"name": "tiny", "kind": "hf", "path": str(tiny_model_path), "batch_size": 1}
    spec["generation"] = {"max_new_tokens": 6, "temperature": 1.0}
    a, b = (ChatRequest((("user", "same question"),), stop=(stop,)) for stop in ("\x00a", "\x00b"))
    first = [r.text for r in fresh(spec).generate([a, b])]
    assert first[0] != first[1], first  # two draws
    assert [r.text for r in fresh(spec).generate([b, a])] == [first[1], first[0]]


# --- concurrency, rate limits, retries ------------------------------------------------------------


def test_concurrency_limit_holds_across_threads(upstream: LoopbackUpstream) -> None:
    upstream.reset()
    model = get_model(parse_model_spec(openai_spec(upstream, name="five", max_concurrency=5)))
    errors: list[BaseException] = []

    def ask(offset: int) -> None:
        try:
            model.generate([ChatRequest((("user", f"c{offset} {i}"),)) for i in range(30)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    stats = upstream.stats()
    assert stats["statuses"] == {"200": 90}
    assert stats["max_in_flight"] == 5  # three callers, one model: never more than its limit
    assert model.throttle.max_in_flight == 5


def test_threads_and_coroutines_share_one_concurrency_limit(upstream: LoopbackUpstream) -> None:
    """A served model answers on the event loop while the run's own threads may call it too: one limit."""
    upstream.reset()
    model = get_model(parse_model_spec(openai_spec(upstream, name="shared", max_concurrency=4)))
    errors: list[BaseException] = []

    def on_threads() -> None:
        try:
            model.generate([ChatRequest((("user", f"thread {i}"),)) for i in range(24)])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=on_threads)
    thread.start()
    async_answers = ask(model, [ChatRequest((("user", f"loop {i}"),)) for i in range(24)], "event loop")
    thread.join(timeout=60)
    assert not errors
    assert [a.text.split(" to: ")[1] for a in async_answers] == [f"loop {i}" for i in range(24)]
    stats = upstream.stats()
    assert stats["statuses"] == {"200": 48}
    assert stats["max_in_flight"] == 4  # both callers together, never more than the limit
    assert model.throttle.max_in_flight == 4


def test_a_coroutine_cancelled_while_waiting_for_a_slot_gives_the_slot_back() -> None:
    model = fresh({"name": "one-slot", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                   "api_key_env": KEY_ENV, "limits": {"max_concurrency": 1}})  # fmt: skip
    throttle = model.throttle
    throttle.slots.acquire()  # a thread holds the only slot

    async def wait_then_cancel() -> None:
        waiting = asyncio.ensure_future(throttle.call_async(lambda: asyncio.sleep(0), 1, 1, lambda: None))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # waiting for the slot, the loop free meanwhile
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(wait_then_cancel())  # the loop is closed now, as a stopped server's is
    throttle.slots.release()  # the thread holding it is done
    time.sleep(0.3)  # time for a waiter still blocked on a thread to take it (it must not: the wait was cancelled)
    assert throttle.slots.acquire(timeout=1), "the cancelled wait kept the slot"
    throttle.slots.release()
    assert throttle.in_flight == 0


def test_event_loop_answers_are_the_thread_answers_and_share_their_cache(upstream: LoopbackUpstream) -> None:
    upstream.reset()
    spec = openai_spec(upstream, name="both-ways", max_concurrency=8)
    reqs = [*questions(20), *questions(3, temperature=0.0, max_new_tokens=5), *questions(2)]  # 2 repeated
    on_loop = ask(fresh(spec), reqs, "event loop")
    assert answered(upstream) == 23  # the repeated two asked once
    configure_cache(enabled=False)
    on_threads = fresh(spec).generate(reqs)
    assert on_loop == on_threads
    configure_cache(enabled=True)
    upstream.reset()
    assert ask(fresh(spec), reqs, "threads") == on_loop  # what the loop cached, the threads find (and back)
    assert ask(fresh(spec), reqs, "event loop") == on_loop
    assert answered(upstream) == 0
    report = cache_report()
    # Each call counts its repeated question as a hit; the cache-off call counts under the same session too.
    assert (report.hits, report.misses) == (2 + 2 + 25 + 25, 23 + 23)


def test_token_bucket_paces_after_its_burst() -> None:
    bucket = TokenBucket(rate_per_minute=1200, burst=5)  # 20 a second, 5 at once
    t0 = time.monotonic()
    bucket.acquire(5)
    assert time.monotonic() - t0 < 0.1
    bucket.acquire(5)
    assert time.monotonic() - t0 >= 0.2
    bucket.acquire(25)  # more than a burst: waits for a full bucket, then leaves it in debt
    t1 = time.monotonic()
    bucket.acquire(1)
    assert time.monotonic() - t1 >= 0.9  # the debt of 20, and 1 more, paid at 20 a second
    bucket.refund(100)
    t2 = time.monotonic()
    bucket.acquire(5)
    assert time.monotonic() - t2 < 0.1


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_requests_per_minute_limit(upstream: LoopbackUpstream, how: str) -> None:
    upstream.reset()
    spec = openai_spec(upstream, name="rpm", max_concurrency=8, requests_per_minute=240)  # 4 a second
    ask(fresh(spec), questions(12), how)
    arrivals = sorted(upstream.stats()["arrivals"])
    assert len(arrivals) == 12
    assert sum(a - arrivals[0] < 0.5 for a in arrivals) <= 6  # a burst of 4, then one every 0.25 s
    assert arrivals[-1] - arrivals[0] >= 1.5  # 8 after the burst at 4 a second: ~2 s


def test_tokens_per_minute_limit(tmp_path: Path) -> None:
    """Each request is estimated at prompt/4 + 4 per message + max_new_tokens = 16 tokens."""
    limited = counting_spec(tmp_path / "calls.log", batch_size=1, limits={"tokens_per_minute": 6000})  # 100/s
    t0 = time.monotonic()
    fresh(limited).generate(questions(10, max_new_tokens=10))  # a burst of 100 tokens, then 100 a second
    assert time.monotonic() - t0 >= 0.4  # 160 tokens: ~0.6 s
    t0 = time.monotonic()
    fresh(counting_spec(tmp_path / "calls.log", batch_size=1)).generate(questions(10, max_new_tokens=11))
    assert time.monotonic() - t0 < 0.4


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_retry_after_is_honoured_by_the_whole_model(how: str) -> None:
    faults = Faults(burst_every=4, burst_s=1.0)  # requests 4, 8, ... open one second of 429s
    with LoopbackUpstream(latency_s=0.01, faults=faults, max_seconds=120) as up:
        out = ask(fresh(openai_spec(up, name="polite", max_concurrency=4)), questions(10), how)
        stats = up.stats()
    assert len(out) == 10
    assert stats["statuses"]["429"] >= 1
    assert stats["early_retries"] == 0  # nobody came back before the time it was told
    assert sum(stats["answered"].values()) == 10
    assert cache_report().retries == stats["statuses"]["429"]


def test_fault_injection_loses_no_answer_and_changes_none() -> None:
    """500 requests through 20% 500s, 5% dropped connections and 429 bursts == a clean upstream. (The event
    loop's path through faults: tests/test_serve.py::test_an_openai_model_is_answered_on_the_event_loop_through_faults.)"""
    faults = Faults(error_rate=0.2, drop_rate=0.05, burst_every=150, burst_s=1.0, seed=7)
    reqs = questions(500)
    limits = {"max_concurrency": 32, "max_retries": 12, "backoff_s": 0.02, "backoff_max_s": 0.5}
    with LoopbackUpstream(latency_s=0.005, faults=faults, max_seconds=120) as up:
        faulty = [a.text for a in fresh(openai_spec(up, name="faulty", **limits)).generate(reqs)]
        stats = up.stats()
    report = cache_report()
    configure_cache(enabled=False)
    with LoopbackUpstream(latency_s=0.005, max_seconds=120) as up:
        clean = [a.text for a in fresh(openai_spec(up, name="clean")).generate(reqs)]
    assert faulty == clean
    assert len(set(faulty)) == 500
    assert stats["statuses"]["500"] > 50 and stats["statuses"]["dropped"] > 10 and stats["statuses"]["429"] > 0
    assert sorted(stats["answered"].values()) == [1] * 500  # each answered once: nothing lost, nothing doubled
    assert stats["early_retries"] == 0
    assert report.retries == stats["requests"] - 500


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_unauthorized_fails_fast_with_a_clear_message(how: str) -> None:
    with LoopbackUpstream(latency_s=0.0, api_key="the-right-key", max_seconds=60) as up:
        t0 = time.monotonic()
        with pytest.raises(ModelRequestRejected) as info:
            ask(fresh(openai_spec(up, name="locked", max_concurrency=4)), questions(40), how)
        assert time.monotonic() - t0 < 5
        assert up.stats()["statuses"]["401"] <= 4  # the first answers stop the rest: no retries, no queue
    message = str(info.value)
    assert "401" in message and "Incorrect API key" in message and f"${KEY_ENV}" in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_not_found_and_unreachable_upstreams_fail_without_hanging(upstream: LoopbackUpstream, how: str) -> None:
    spec = openai_spec(upstream, name="wrongpath")
    spec["base_url"] = upstream.root + "/v2"
    with pytest.raises(ModelRequestRejected, match="404"):
        ask(fresh(spec), questions(1), how)
    closed = openai_spec(upstream, name="closed", max_retries=2, backoff_s=0.01)
    closed["base_url"] = "http://127.0.0.1:9/v1"  # the discard port: connection refused
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailable, match="gave up after 3 attempts"):
        ask(fresh(closed), questions(1), how)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_a_slow_upstream_times_out_and_is_retried_a_bounded_number_of_times(how: str) -> None:
    with LoopbackUpstream(latency_s=2.0, max_seconds=60) as up:
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailable, match="gave up after 2 attempts.*TimeoutError"):
            ask(fresh(openai_spec(up, name="slow", timeout_s=0.3, max_retries=1)), questions(1), how)
        assert time.monotonic() - t0 < 3
        assert up.stats()["requests"] == 2


def test_python_models_can_ask_for_a_retry(tmp_path: Path) -> None:
    class Flaky:
        batched = True
        calls = 0

        def generate(self, requests: list[ChatRequest]) -> list:
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise RetryableModelError("busy", retry_after=0.05)
            return [ChatResponse(text="ok") for _ in requests]

    model = fresh(counting_spec(tmp_path / "unused.log", limits={"backoff_s": 0.01}))
    model._backend = Flaky()
    assert model.chat(["q"]) == ["ok"]
    assert Flaky.calls == 3
    assert cache_report().retries == 2


# --- resume after a kill ------------------------------------------------------------------------


def run_driver(spec: dict[str, Any], n: int, out: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    cmd = [sys.executable, "-m", "tests._layer_models", json.dumps(spec), str(n), str(out)]
    return subprocess.Popen(cmd, env=env)


def test_killed_run_resumes_without_asking_again_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    spec = counting_spec(log, batch_size=4)
    # SIGKILL on the 5th batch, 16 answers in; the same spec, so the resumed run has the same cache keys.
    proc = run_driver(spec, 40, tmp_path / "killed.json", COUNTING_MODEL_KILL_AT_CALL="5")
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert len(read_log(str(log))) == 16
    proc = run_driver(spec, 40, tmp_path / "resumed.json")
    assert proc.wait(timeout=120) == 0
    calls = read_log(str(log))
    assert len(calls) == 40 and len(set(calls)) == 40  # the union of both runs' calls: each question once

    monkeypatch.setenv(ENV_PATH, str(tmp_path / "other-cache.sqlite"))
    proc = run_driver(counting_spec(tmp_path / "clean.log", batch_size=4), 40, tmp_path / "clean.json")
    assert proc.wait(timeout=120) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed == json.loads((tmp_path / "clean.json").read_text())


def test_killed_run_resumes_without_asking_again_openai(tmp_path: Path, own_cache: Path) -> None:
    """SIGKILL from outside while 4 requests are in flight: what was cached is never asked again."""
    with LoopbackUpstream(latency_s=0.02, max_seconds=120) as up:
        spec = openai_spec(up, name="resumable", max_concurrency=4)
        proc = run_driver(spec, 200, tmp_path / "killed.json")
        deadline = time.monotonic() + 60
        while answered(up) < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        time.sleep(0.3)  # requests in flight at the kill still reach the upstream's counters
        with sqlite3.connect(own_cache) as db:
            cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        first_run = answered(up)
        assert 60 <= cached <= first_run < 200
        proc = run_driver(spec, 200, tmp_path / "resumed.json")
        assert proc.wait(timeout=120) == 0
        stats = up.stats()
    second_run = sum(stats["answered"].values()) - first_run
    assert second_run == 200 - cached  # no cached answer was asked again
    assert first_run - cached <= 4  # only answers in flight at the kill were asked twice
    assert len(stats["answered"]) == 200

    with LoopbackUpstream(latency_s=0.0, max_seconds=60) as clean:
        configure_cache(enabled=False)
        expected = fresh(openai_spec(clean, name="clean")).generate(questions(200))
    assert json.loads((tmp_path / "resumed.json").read_text()) == [a.text for a in expected]


# --- configuration ------------------------------------------------------------------------------


def test_run_config_and_cli_choose_the_cache(tmp_path: Path) -> None:
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        "name: t\nmodels:\n  - {name: m, kind: python, target: 'tests._layer_models:CountingModel', "
        "args: {log: x}, limits: {max_concurrency: 2, requests_per_minute: 30, max_retries: 1}}\n"
        "cache: {path: cache/answers.sqlite, enabled: false}\n"
    )
    cfg = load_config(cfg_path)
    assert cfg.cache_path == tmp_path / "cache" / "answers.sqlite"
    assert cfg.cfg.cache.enabled is False
    assert cfg.models[0].limits.requests_per_minute == 30
    assert build_parser().parse_args(["run", str(cfg_path), "--no-cache"]).no_cache is True
    configure_cache(cfg.cache_path, enabled=False, session="run-1")
    cache = response_cache()
    assert (cache.path, cache.enabled, cache.session) == (cfg.cache_path, False, "run-1")


def test_both_transports_send_the_same_request_through_an_authenticating_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread's client and the event loop's (`_http`, `_async_http`) ask the same: the absolute URL of `base_url`'s path, the
    key, and the proxy's credentials (on the request for http, on the CONNECT
    for https). A recording proxy answers the one and refuses the tunnel."""
    seen: list[list[str]] = []
    body = b'{"choices":[{"message":{"content":"hi"}}]}'
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def proxy() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                data += chunk
            head = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
            seen.append([head[0], *sorted(h for h in head[1:] if h.lower().startswith(("proxy-", "authorization")))])
            if head[0].startswith("CONNECT"):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            conn.close()

    threading.Thread(target=proxy, daemon=True).start()
    for name in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(name, f"http://pu:pp@127.0.0.1:{listener.getsockname()[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_DISABLED, "1")  # each transport asks, none answers from the other's cache
    plain = {"name": "p", "kind": "openai", "model": "x", "base_url": "http://upstream.example:8080/v1",
             "api_key_env": KEY_ENV, "limits": {"timeout_s": 5, "max_retries": 0}}  # fmt: skip
    try:
        for how in ENTRY_POINTS:
            assert [a.text for a in ask(fresh(plain), questions(1), how)] == ["hi"]
        with pytest.raises(ModelUnavailable, match="403"):
            ask(fresh({**plain, "base_url": "https://upstream.example/v1"}), questions(1), "threads")
        with pytest.raises(ModelUnavailable, match="403"):
            ask(fresh({**plain, "base_url": "https://upstream.example/v1"}), questions(1), "event loop")
    finally:
        listener.close()
    request = [
        "POST http://upstream.example:8080/v1/chat/completions HTTP/1.1",
        "Authorization: Bearer sk-loopback",
        "Proxy-Authorization: Basic cHU6cHA=",
    ]
    connect = ["Proxy-Authorization: Basic cHU6cHA="]
    assert seen == [request, request, ["CONNECT upstream.example:443 HTTP/1.1", *connect],
                    ["CONNECT upstream.example:443 HTTP/1.1", *connect]]  # fmt: skip


def test_a_key_with_a_line_break_is_refused_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """It would end the Authorization line and add headers of its own; the message must not show it."""
    monkeypatch.setenv(KEY_ENV, "sk-secret\r\nX-Injected: 1")
    spec = {"name": "k", "kind": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": KEY_ENV}
    with pytest.raises(BenchbridgeError, match=f"model k: api_key_env: \\${KEY_ENV} holds a line break") as err:
        fresh(spec).generate(questions(1))
    assert "sk-secret" not in str(err.value)
