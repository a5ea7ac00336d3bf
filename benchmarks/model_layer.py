"""The model layer at speed, measured side by side in one run (issue 7).

    .venv/bin/python benchmarks/model_layer.py [--quick] [--no-suite]

Everything runs on 127.0.0.1 against `bridges.loopback` (a fake OpenAI-compatible upstream in its
own process, fixed latency) and stops by itself. Sections:

1. Throughput at concurrency 1, 8, 32 against a 50 ms upstream, as a fraction of the ideal
   (concurrency / latency): the upstream called directly (threads + http.client: this machine's
   ceiling), through the layer (`get_model(spec).generate`, cache on, every request a miss), and
   through `benchbridge serve` (a subprocess serving an `openai` spec that points at the upstream,
   clients posting to it). Each figure is the median of `--trials` runs.
2. Added latency per call: one request at a time, interleaved, the upstream directly vs through
   the layer (a miss: cache lookup, the call, the cache write) and a cache hit.
3. Faults: 500 requests at concurrency 32 through 20% 500s, 5% dropped connections and 429
   bursts with Retry-After, against the same 500 through a clean upstream.
4. A small four-framework suite (OpenCompass, OpenAI evals, AlpacaEval, lm-eval on bundled data,
   `python` models that log every call and take 0.5 s per prompt as a remote model might), run
   twice with `--force` on one cache: wall time and model calls of each run.

The machine is shared (2 cores): the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridges.loopback import Faults, LoopbackUpstream  # noqa: E402
from bridges.models import ChatRequest, Model, cache_report, configure_cache, parse_model_spec  # noqa: E402

LATENCY_S = 0.05
KEY_ENV = "BENCHBRIDGE_BENCH_KEY"
os.environ[KEY_ENV] = "sk-loopback"
for name, value in {"USE_TF": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
    os.environ.setdefault(name, value)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load() -> str:
    return "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (user ... steal, the first line of /proc/stat); None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def steal_since(before: list[int] | None) -> str:
    """The share of CPU time the hypervisor gave to other guests since `before`: on a shared VM host the
    noise that moves these figures most (serve, with the most hops, first), which the load average misses."""
    after = cpu_times()
    if before is None or after is None or len(after) < 8:
        return "cpu steal n/a"
    delta = [a - b for a, b in zip(after, before, strict=True)]
    return f"cpu steal {100 * delta[7] / sum(delta):.0f}%" if sum(delta) > 0 else "cpu steal n/a"


def spec_for(base_url: str, name: str, **limits: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "openai",
        "model": "loopback",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "batch_size": limits.get("max_concurrency", 8),
        "limits": limits,
    }


def fresh_model(base_url: str, name: str, **limits: Any) -> Model:
    return Model(parse_model_spec(spec_for(base_url, name, **limits)))


class DirectClient:
    """The upstream called without the layer: one keep-alive http.client connection per thread."""

    def __init__(self, port: int, model: str = "loopback") -> None:
        self.port = port
        self.model = model
        self.local = threading.local()

    def post(self, text: str) -> dict[str, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-loopback"}
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": text}]}).encode()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {data[:200]!r}")
        return json.loads(data)


def run_threads(concurrency: int, n: int, call: Callable[[int], Any]) -> float:
    """Seconds for `n` calls with `concurrency` threads pulling from one counter."""
    lock = threading.Lock()
    counter = iter(range(n))
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None or errors:
                return
            try:
                call(i)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`benchbridge serve` in a subprocess, serving one `openai` spec that points at the upstream."""

    def __init__(self, tmp: Path, upstream: str, concurrency: int) -> None:
        self.port = free_port()
        config = {"name": "serve-bench", "models": [spec_for(upstream, "served", max_concurrency=concurrency)]}
        path = tmp / f"serve-{concurrency}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        cmd = [sys.executable, "-m", "bridges.cli", "serve", str(path), "--model", "served", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"benchbridge serve did not start: {self.proc.stderr.read()[-500:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def posting(client: DirectClient, prefix: str) -> Callable[[int], Any]:
    """Call number i posts a question no other call asks (so every request is a cache miss)."""
    return lambda i: client.post(f"{prefix} {i}")


def throughput(tmp: Path, trials: int, rounds: int, with_serve: bool) -> list[list[str]]:
    rows = []
    serve_exists = (ROOT / "bridges" / "serve.py").exists() and with_serve
    with LoopbackUpstream(latency_s=LATENCY_S, max_seconds=1800) as up:
        direct = DirectClient(up.port)
        for c in (1, 8, 32):
            n = c * rounds
            ideal = c / LATENCY_S
            results: dict[str, list[float]] = {"upstream directly": [], "through the layer": []}
            for trial in range(trials):
                run_threads(c, c, posting(direct, "warm"))
                results["upstream directly"].append(n / run_threads(c, n, posting(direct, f"d{c} {trial}")))
                model = fresh_model(up.base_url, f"layer-{c}-{trial}", max_concurrency=c)
                model.generate([ChatRequest((("user", f"warm {c} {trial} {i}"),)) for i in range(c)])
                reqs = [ChatRequest((("user", f"l{c} {trial} {time.time()} {i}"),)) for i in range(n)]
                started = time.perf_counter()
                model.generate(reqs)
                results["through the layer"].append(n / (time.perf_counter() - started))
            if serve_exists:
                results["through benchbridge serve"] = []
                serve = Serve(tmp, up.base_url, c)
                try:
                    client = DirectClient(serve.port, model="served")
                    run_threads(c, c, posting(client, f"serve warm {c}"))
                    for trial in range(trials):
                        seconds = run_threads(c, n, posting(client, f"s{c} {trial} {time.time()}"))
                        results["through benchbridge serve"].append(n / seconds)
                finally:
                    serve.stop()
            for how, rates in results.items():
                med = statistics.median(rates)
                spread = f"{min(rates) / ideal:.2f}-{max(rates) / ideal:.2f}"
                rows.append([how, str(c), f"{med:.0f}/s", f"{ideal:.0f}/s", f"{med / ideal:.3f}", spread])
    if not serve_exists:
        rows.append(["through benchbridge serve", "-", "-", "-", "not measured", "bridges/serve.py missing"])
    return rows


def added_latency(iterations: int) -> list[list[str]]:
    with LoopbackUpstream(latency_s=LATENCY_S, max_seconds=600) as up:
        direct = DirectClient(up.port)
        model = fresh_model(up.base_url, "latency", max_concurrency=1)
        direct.post("warm")
        model.generate([ChatRequest((("user", "warm"),))])
        times: dict[str, list[float]] = {"upstream directly": [], "layer, cache miss": [], "layer, cache hit": []}
        for i in range(iterations):
            t = time.perf_counter()
            direct.post(f"direct {i}")
            times["upstream directly"].append(time.perf_counter() - t)
            req = [ChatRequest((("user", f"latency {time.time()} {i}"),))]
            t = time.perf_counter()
            model.generate(req)
            times["layer, cache miss"].append(time.perf_counter() - t)
            t = time.perf_counter()
            model.generate(req)
            times["layer, cache hit"].append(time.perf_counter() - t)
    base = statistics.median(times["upstream directly"])
    rows = []
    for how, values in times.items():
        med = statistics.median(values)
        added = "-" if how == "upstream directly" else f"{(med - base) * 1000:+.2f} ms"
        rows.append([how, f"{med * 1000:.2f} ms", f"{statistics.mean(values) * 1000:.2f} ms", added])
    return rows


def faults(n: int) -> list[list[str]]:
    reqs = [ChatRequest((("user", f"fault question {i}"),)) for i in range(n)]
    limits = {"max_concurrency": 32, "max_retries": 12, "backoff_s": 0.05, "backoff_max_s": 2.0}
    injected = Faults(error_rate=0.2, drop_rate=0.05, burst_every=100, burst_s=1.0, seed=1)
    rows = []
    answers = {}
    for label, fault in (("clean upstream", Faults()), ("20% 500s, 5% drops, 429 bursts", injected)):
        with LoopbackUpstream(latency_s=LATENCY_S, faults=fault, max_seconds=600) as up:
            started = time.perf_counter()
            out = fresh_model(up.base_url, f"faults-{len(answers)}", **limits).generate(reqs)
            seconds = time.perf_counter() - started
            stats = up.stats()
        answers[label] = [a.text for a in out]
        st = stats["statuses"]
        once = sum(1 for v in stats["answered"].values() if v == 1)
        rows.append(
            [
                label,
                str(stats["requests"]),
                f"{st.get('500', 0)} / {st.get('dropped', 0)} / {st.get('429', 0)}",
                str(stats["early_retries"]),
                f"{sum(1 for a in out if a.text)}/{n}",
                f"{once}/{n}",
                f"{seconds:.1f} s",
            ]
        )
    same = answers["clean upstream"] == answers["20% 500s, 5% drops, 429 bursts"]
    rows.append(["identical answers", "", "", "", "yes" if same else "NO", "", ""])
    return rows


SUITE_MODEL = "tests._layer_models:CountingAnswerKeyModel"
SUITE_DELAY_S = 0.5  # per prompt, standing in for a remote model


def suite_config(tmp: Path, calls_log: Path) -> Path:
    data = ROOT / "custom_datasets"
    keyed_data = [str(data / d) for d in ("qa_capitals", "mcq_science_en", "open_instructions")]

    def counting(name: str, **args: Any) -> dict[str, Any]:
        return {"name": name, "kind": "python", "target": SUITE_MODEL, "args": {"log": str(calls_log), **args}}

    config = {
        "name": "layer-bench-suite",
        "work_dir": str(tmp / "runs"),
        "cache": {"path": str(tmp / "suite-cache.sqlite")},
        "max_samples": 6,
        "models": [
            counting("keyed", datasets=keyed_data, wrong_ids=["cap-3"], delay_s=SUITE_DELAY_S),
            counting("reference", datasets=[str(data / "open_instructions")], open_length=2, delay_s=SUITE_DELAY_S),
            {**counting("judge"), "target": "tests._layer_models:CountingLongerJudge"},
        ],
        "datasets": [
            {"path": str(data / "qa_capitals"), "frameworks": ["opencompass", "openai_evals", "lm_eval"]},
            {"path": str(data / "mcq_science_en"), "frameworks": ["opencompass", "lm_eval"]},
            {"path": str(data / "open_instructions"), "frameworks": ["alpaca_eval"]},
        ],
        "frameworks": {
            "opencompass": {},
            "openai_evals": {},
            "alpaca_eval": {"reference": {"model": "reference"}, "judge": {"model": "judge", "kind": "tool"}},
            "lm_eval": {},
        },
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def suite(tmp: Path) -> list[list[str]]:
    """`benchbridge run --force` twice (force: frameworks redo their work instead of reusing the first run's)."""
    calls_log = tmp / "suite-calls.log"
    path = suite_config(tmp, calls_log)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}  # COLUMNS: rich prints the report on one line
    cli = [sys.executable, "-m", "bridges.cli", "run", str(path), "--force"]
    rows = []
    for label in ("first run (cold cache)", "rerun (warm cache)"):
        before = len(calls_log.read_text().splitlines()) if calls_log.exists() else 0
        started = time.perf_counter()
        done = subprocess.run(cli, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        calls = (len(calls_log.read_text().splitlines()) if calls_log.exists() else 0) - before
        report = next((ln.strip() for ln in done.stderr.splitlines() if "response cache" in ln), "(no cache report)")
        outcomes = re.findall(r"\[(\w+)\] (ok|failed) in ([\d.]+)s", done.stderr)
        status = ", ".join(f"{fw} {state} {sec}s" for fw, state, sec in outcomes) or f"exit {done.returncode}"
        rows.append([label, f"{seconds:.1f} s", str(calls), status, report.split(" [")[0]])
        if done.returncode not in (0, 1):
            rows.append(["", "", "", "", done.stderr.strip().splitlines()[-1][:200] if done.stderr.strip() else ""])
            break
    return rows


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and trials")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-suite", action="store_true", help="skip the four-framework suite (minutes)")
    parser.add_argument("--no-serve", action="store_true", help="skip the benchbridge serve rows")
    args = parser.parse_args()
    trials = 1 if args.quick else args.trials
    rounds = 10 if args.quick else 30
    with tempfile.TemporaryDirectory(prefix="bench-model-layer-") as tmp_name:
        tmp = Path(tmp_name)
        configure_cache(tmp / "cache.sqlite", enabled=True, session="bench")
        os.environ["BENCHBRIDGE_CACHE"] = str(tmp / "cache.sqlite")  # serve subprocesses: same fresh cache
        print(f"model layer benchmark; upstream latency {LATENCY_S * 1000:.0f} ms; {load()}")
        started = cpu_times()
        rows = throughput(tmp, trials, rounds, not args.no_serve)
        table(
            f"1. Throughput ({rounds} requests per slot, median of {trials}; {load()}; {steal_since(started)})",
            ["path", "concurrency", "requests/s", "ideal", "fraction of ideal", "range"],
            rows,
        )
        started = cpu_times()
        rows = added_latency(20 if args.quick else 60)
        table(
            f"2. Latency per call, one at a time ({load()}; {steal_since(started)})",
            ["path", "median", "mean", "added vs direct (median)"],
            rows,
        )
        rows = faults(500)
        table(
            f"3. 500 requests at concurrency 32, 50 ms upstream ({load()})",
            ["upstream", "HTTP requests", "500 / dropped / 429", "early retries", "answers", "answered once", "time"],
            rows,
        )
        report = cache_report("bench")
        print(f"   cache report for sections 1-3: {report.line()}")
        if not args.no_suite:
            rows = suite(tmp)
            table(
                f"4. Four-framework suite, run twice on one cache; the answering models take"
                f" {SUITE_DELAY_S}s per prompt ({load()})",
                ["run", "wall time", "model calls (logged by the models)", "status", "cache report"],
                rows,
            )


if __name__ == "__main__":
    main()
