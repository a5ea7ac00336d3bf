"""`openai` models in OpenCompass (OpenAISDK) and lm-eval (local-chat-completions) go through the model layer.

During `benchbridge run` both native clients ask a loopback endpoint benchbridge serves for the spec, so the
layer's response cache answers a rerun without the upstream (here `bridges.loopback`, which counts calls and
demands its own key, which must never be written into a file the run produces).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import RunOutcome, load_config, prepare, run
from bridges.loopback import LoopbackUpstream
from leaderboards.store import ResultsStore
from tests.conftest import DATASETS

KEY_ENV = "BENCHBRIDGE_TEST_SERVED_KEY"
SECRET = "sk-loopback-secret-7f3a"
MAX_SAMPLES = 3
FRAMEWORKS = ["opencompass", "lm_eval"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[LoopbackUpstream]:
    with LoopbackUpstream(latency_s=0.01, api_key=SECRET, max_seconds=300) as up:
        yield up


def answered(up: LoopbackUpstream) -> int:
    return sum(up.stats()["answered"].values())


def write_config(tmp: Path, up: LoopbackUpstream, tokenizer: Path, prompt_mode: str = "parity") -> Path:
    spec: dict[str, Any] = {
        "name": "served-api",
        "kind": "openai",
        "model": "loopback",
        "base_url": up.base_url,
        "api_key_env": KEY_ENV,
        "tokenizer_path": str(tokenizer),  # OpenAISDK counts tokens with it instead of fetching tiktoken
        "limits": {"backoff_s": 0.05},
    }
    config = {
        "name": "served-openai",
        "work_dir": str(tmp / "runs"),
        "cache": {"path": str(tmp / "cache.sqlite")},
        "max_samples": MAX_SAMPLES,
        "models": [spec],
        "datasets": [{"path": str(DATASETS / "qa_capitals")}],
        "prompt_mode": prompt_mode,
        "frameworks": {"opencompass": {}, "lm_eval": {}},
    }
    path = tmp / "served.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def records_by_framework(outcome: RunOutcome) -> dict[str, list[Any]]:
    return {f.framework: [r for r in f.records if r.primary] for f in outcome.frameworks}


@pytest.mark.framework
# parity (the default): BenchbridgeModel / the python LM ask the run's served spec; native: OpenAISDK and
# local-chat-completions ask a loopback endpoint serving it.
@pytest.mark.parametrize("prompt_mode", ["parity", "native"])
def test_openai_models_in_opencompass_and_lm_eval_use_the_layer_cache(
    tmp_path: Path,
    upstream: LoopbackUpstream,
    tiny_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prompt_mode: str,
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = load_config(write_config(tmp_path, upstream, tiny_model_path, prompt_mode))

    before = answered(upstream)
    first = run(config, FRAMEWORKS, force=True)
    first_calls = answered(upstream) - before
    assert first.ok, [(f.framework, f.error) for f in first.frameworks]
    for framework, records in records_by_framework(first).items():
        assert [(r.benchmark, r.status, r.n_samples) for r in records] == [("qa_capitals", "ok", MAX_SAMPLES)]
        # The loopback's answers ("answer <key> to: ...") never name a capital.
        assert records[0].value == 0.0, framework
    # Each framework asks every sample once; frameworks whose prompts coincide share the cached answers.
    assert MAX_SAMPLES <= first_calls <= MAX_SAMPLES * len(FRAMEWORKS)
    assert first.cache is not None and first.cache.misses == first_calls

    # The answers the frameworks scored are the upstream's, reached through the served endpoint.
    oc_predictions = list((first.run_dir / "opencompass").rglob("predictions/served-api/qa_capitals.json"))
    assert oc_predictions, "OpenCompass wrote no predictions"
    predictions = json.loads(oc_predictions[0].read_text(encoding="utf-8"))
    assert len(predictions) == MAX_SAMPLES
    assert all(p["prediction"].startswith("answer ") for p in predictions.values())
    lm_samples = list((first.run_dir / "lm_eval").rglob("samples_bb_qa_capitals_*.jsonl"))
    assert lm_samples, "lm-eval wrote no samples"
    rows = [json.loads(line) for line in lm_samples[0].read_text(encoding="utf-8").splitlines()]
    assert [r["resps"][0][0].startswith("answer ") for r in rows] == [True] * MAX_SAMPLES

    # Native artifacts of the run name the loopback endpoint, never the secret.
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    second = run(config, FRAMEWORKS, force=True)
    assert second.ok, [(f.framework, f.error) for f in second.frameworks]
    assert answered(upstream) - before == first_calls  # warm cache: the upstream saw no new call
    assert second.cache is not None and second.cache.misses == 0
    assert {
        fw: [(r.metric, r.value, r.n_samples) for r in recs] for fw, recs in records_by_framework(second).items()
    } == {fw: [(r.metric, r.value, r.n_samples) for r in recs] for fw, recs in records_by_framework(first).items()}
    assert len(ResultsStore(config.results_db).records()) >= 2 * len(FRAMEWORKS)
    print(f"upstream calls: first run {first_calls}, warm rerun {answered(upstream) - before - first_calls}")

    # `prepare` (artifacts run by hand) keeps the upstream endpoint and model name.
    written = prepare(config, tmp_path / "prepared", FRAMEWORKS)
    oc_config = next(p for p in written["opencompass"] if p.suffix == ".py").read_text(encoding="utf-8")
    job = json.loads((tmp_path / "prepared" / "lm_eval" / "jobs" / "served-api.json").read_text(encoding="utf-8"))
    if prompt_mode == "native":
        assert f"'openai_api_base': '{up_base(upstream)}'" in oc_config and "'path': 'loopback'" in oc_config
        assert job["model_args"]["base_url"] == f"{up_base(upstream)}/chat/completions"
        assert job["model_args"]["model"] == "loopback"
    else:  # the spec itself, for the model layer in the framework's process
        assert f"'base_url': '{upstream.base_url}'" in oc_config and "'model': 'loopback'" in oc_config
        spec = json.loads(job["model_args"]["spec"])
        assert (spec["base_url"], spec["model"]) == (upstream.base_url, "loopback")


def up_base(up: LoopbackUpstream) -> str:
    return up.base_url.rstrip("/")
