"""The Ray executor on a real two-node Ray cluster on this machine (`ray start --head`, then a second node
joined with `ray start --address`, each with its own CPUs and resource): units spread over both nodes
give the local executor's board value for value, and a node killed mid-run loses nothing.

Units are OpenAI evals (the cheapest real framework: one `oaieval` per unit) on `python` models of fixed
latency (`tests/_executor_models.py`), which log every prompt they answer and on which node.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridges import load_config, run
from bridges.executors.local_cluster import LocalRayCluster
from bridges.models import SMOKE_PROMPT
from leaderboards.board import board_from_cli
from tests.conftest import DATASETS

pytestmark = pytest.mark.framework
QA = DATASETS / "qa_capitals"  # 8 questions, cap-1 .. cap-8


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with LocalRayCluster([2, 2]) as c:  # head + one more node, 2 CPUs each: 4 units at once
        yield c
    assert not c.pids(), "a Ray process of the test's cluster outlived it"


def write_config(folder: Path, models: int, latency_s: float, log: Path, **hold: object) -> Path:
    """`hold`: the models' `gate` and `stall_after` (see `SlowKeyModel`)."""
    lines = [f"name: {folder.name}", "work_dir: runs", "cache: {path: cache.sqlite}", "models:"]
    for i in range(models):
        wrong = [f"cap-{1 + j}" for j in range(i % 8)]  # model i gets i of 8 wrong: every cell differs
        args = {"datasets": [str(QA)], "log": str(log), "latency_s": latency_s, "wrong_ids": wrong, "tag": f"m{i}"}
        args |= hold
        lines += [
            f"  - name: m{i}",
            "    kind: python",
            "    target: tests._executor_models:SlowKeyModel",
            "    batch_size: 1",  # one prompt per call: each answer is in the cache the moment it is given
            f"    args: {json.dumps(args)}",
        ]
    lines += ["datasets:", f"  - path: {QA}", "frameworks:", "  openai_evals: {datasets: {qa_capitals: [match]}}"]
    folder.mkdir(parents=True)
    path = folder / "run.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def board_values(config_path: Path) -> dict[tuple[str, str], object]:
    """Every cell's status and value, every row's average and rank; not evals' bootstrap std (an unseeded
    resampling that differs from run to run whatever runs it)."""
    board, _ = board_from_cli(str(config_path), None)
    values: dict[tuple[str, str], object] = {}
    for row in board.rows:
        values[(row.model, "average")], values[(row.model, "rank")] = row.average, row.rank
        for cid, cell in row.cells.items():
            if not cid.endswith("_bootstrap_std"):
                values[(row.model, cid)] = (cell.status, cell.value_100)
    return values


def calls(log: Path) -> list[dict[str, str]]:
    """What the models answered for the frameworks (not the driver's one-prompt check before the run)."""
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return [c for c in lines if SMOKE_PROMPT not in c["prompt"]]


def stored_runs(db: Path, run_id: str) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [json.loads(m) for (m,) in conn.execute("SELECT manifest FROM runs WHERE run_id = ?", (run_id,))]


def test_eight_units_on_two_nodes_give_the_local_board(cluster: LocalRayCluster, tmp_path: Path) -> None:
    boards = {}
    for executor in ("local", f"ray@{cluster.address}"):
        name = executor.split("@")[0]
        log = tmp_path / f"{name}.calls.jsonl"
        path = write_config(tmp_path / name, 8, 0.05, log)
        outcome = run(load_config(path), executor=executor, max_parallel=2)
        assert outcome.ok, [f.error for f in outcome.frameworks]
        boards[name] = board_values(path)
        runs = stored_runs(outcome.db, outcome.run_id)
        if name == "ray":
            assert len(runs) == 8  # a stored run per unit (framework x model), written by the driver alone
            nodes = {r["executor"]["node"] for r in runs}
            assert len(nodes) == 2, nodes  # Ray placed units on both nodes
            assert {r["executor"]["unit"] for r in runs} == {f"openai_evals.m{i}" for i in range(8)}
            # The unit's native files came back: evals' record log of each model in the run folder.
            assert len(list((outcome.run_dir / "openai_evals").glob("m*/records/m*/*.jsonl"))) >= 8
        assert len(calls(log)) == 8 * 8  # every question asked once per model, whatever the executor
    assert boards["ray"] == boards["local"]
    # Values that could be wrong: model i has i of 8 capitals wrong.
    accuracy = {m: v for (m, col), v in boards["ray"].items() if col.endswith("match_accuracy")}
    assert accuracy == {f"m{i}": ("ok", pytest.approx(100 * (8 - i) / 8)) for i in range(8)}


def test_a_node_killed_mid_run_loses_nothing_and_asks_nothing_twice(cluster: LocalRayCluster, tmp_path: Path) -> None:
    log, gate = tmp_path / "calls.jsonl", tmp_path / "gate"
    # Every unit holds before its third answer until the gate opens: a unit that has answered on the second
    # node is still running there when the node is killed, however slowly the machine runs. (Without the
    # hold, a loaded machine let a unit finish between "it answered" and the kill, and nothing was lost.)
    path = write_config(tmp_path / "killed", 8, 0.2, log, gate=str(gate), stall_after=2)
    killed: list[int] = []

    def kill_second_node_when_it_answers() -> None:
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                if len({c["node"] for c in calls(log) if c["node"]}) == 2:  # both nodes hold a unit mid-run
                    killed.extend(cluster.kill_node(1))
                    return
                time.sleep(0.1)
        finally:
            gate.touch()

    killer = threading.Thread(target=kill_second_node_when_it_answers, daemon=True)
    killer.start()
    outcome = run(load_config(path), executor=f"ray@{cluster.address}")
    killer.join()
    assert killed, "the second node's raylet was not found"
    assert outcome.ok, [f.error for f in outcome.frameworks]

    runs = stored_runs(outcome.db, outcome.run_id)
    assert sorted(r["executor"]["unit"] for r in runs) == sorted(f"openai_evals.m{i}" for i in range(8))  # once each
    records = [r for f in outcome.frameworks for r in f.records if r.metric == "match_accuracy"]
    assert sorted(r.model for r in records) == [f"m{i}" for i in range(8)]
    assert {r.model: r.value for r in records} == {f"m{i}": pytest.approx((8 - i) / 8) for i in range(8)}

    asked = calls(log)
    finished_on = {r["executor"]["unit"].split(".")[1]: r["executor"]["node"] for r in runs}
    # A lost unit answered on a node other than the one it was stored from. (Not "nodes no unit finished
    # on": under load the second node can finish a unit before it is killed, and still lose the others.)
    moved = [c for c in asked if c["node"] and c["node"] != finished_on[c["tag"]]]
    lost_units = {c["tag"] for c in moved}
    dead = {c["node"] for c in moved}
    assert len(dead) == 1 and lost_units, "no unit was running on the killed node"
    assert all(finished_on[m] not in dead for m in lost_units)  # rescheduled on the head
    # Lost units ran again on the head: their earlier answers came from the shared response cache, so a
    # question is asked again only if it was being answered when the node died (one per lost unit at most).
    keys = [(c["tag"], c["prompt"]) for c in asked]
    repeats = len(keys) - len(set(keys))
    assert repeats <= len(lost_units), (repeats, lost_units)
    assert len(set(keys)) == 8 * 8
    with sqlite3.connect(tmp_path / "killed" / "cache.sqlite") as conn:
        (cached,) = conn.execute("SELECT COUNT(*) FROM responses").fetchone()
    assert cached == 8 * 8 + 8  # every answer once, and each model's one-prompt check
