"""Per-unit overhead of a run (the Ray executor pays it once per unit): `serving()` stops promptly and still
gracefully (uvicorn alone polls its exit flag every 0.1 s and pauses a fixed 0.1 s on shutdown, ~0.2 s per
stop), and the manifest's package versions are read once per process."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

import httpx

from bridges.models import parse_model_spec
from bridges.serve import serving

KEY = "polish-test-key"


class SlowEcho:
    """A python model answering `echo: <last message>` after `latency_s`."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s

    def __call__(self, batch: list[Any]) -> list[str]:
        time.sleep(self.latency_s)
        return [f"echo: {conversation[-1]['content']}" for conversation in batch]


def spec(latency_s: float = 0.0) -> Any:
    target = "tests.test_polish_unit_overhead:SlowEcho"
    return parse_model_spec({"name": "echo", "kind": "python", "target": target, "args": {"latency_s": latency_s}})


def ask(client: httpx.Client, url: str, content: str) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": content}]}
    return client.post(f"{url}/chat/completions", json=body, timeout=30)


def test_serving_stops_in_well_under_uvicorns_tenth_of_a_second_even_with_a_keep_alive_connection() -> None:
    stops = []
    for _ in range(5):
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            context = serving([spec()], api_key=KEY)
            url = context.__enter__()
            assert ask(client, url, uuid.uuid4().hex).status_code == 200  # the connection stays open (keep-alive)
            started = time.perf_counter()
            context.__exit__(None, None, None)
            stops.append(time.perf_counter() - started)
    # uvicorn's own shutdown sleeps 0.1 s at least (measured 0.16-0.20 s per stop); ours ~0.006 s
    assert statistics.median(stops) < 0.1, stops


def test_a_request_in_flight_when_serving_ends_still_gets_its_answer() -> None:
    content = f"slow {uuid.uuid4().hex}"
    got: dict[str, httpx.Response] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        with serving([spec(latency_s=0.6)], api_key=KEY) as url:
            asking = threading.Thread(target=lambda: got.update(r=ask(client, url, content)))
            asking.start()
            time.sleep(0.3)  # the request is inside the model when the context exits
        asking.join(timeout=30)
    response = got["r"]
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == f"echo: {content}"


def test_package_versions_are_read_once_per_process(monkeypatch: Any) -> None:
    import importlib.metadata

    from bridges import _runner

    asked: list[str] = []
    real = importlib.metadata.version

    def counting(dist: str) -> str:
        asked.append(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", counting)
    _runner._installed_version.cache_clear()
    first = _runner.package_versions(("lm_eval",))
    assert _runner.package_versions(("lm_eval",)) == first
    assert first["lm_eval"] == real("lm_eval") and first["numpy"] == real("numpy")
    assert sorted(asked) == sorted({*_runner.KEY_PACKAGES, "lm_eval"})  # each once, not once per unit
    _runner._installed_version.cache_clear()
