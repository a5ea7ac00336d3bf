"""The board at zoo scale, functionally (the timings are benchmarks/board_scale.py's): work per record is
bounded, values are their samples' means, and the page stays small with per-column detail files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportion_confint

from leaderboards import board as board_module
from leaderboards.board import open_board
from leaderboards.publish import publish
from leaderboards.testing import zoo_store


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "zoo.sqlite"
    zoo_store(path, models=12, columns=8, reruns=2, samples_per_cell=20)
    return path


def test_board_work_grows_with_the_records_not_their_square(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = board_module._column_of

    def counted(*args: object, **kw: object) -> object:
        calls["n"] += 1
        return original(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(board_module, "_column_of", counted)
    per_record = []
    for models in (10, 40):
        path = tmp_path / f"z{models}.sqlite"
        zoo_store(path, models=models, columns=8, reruns=2)
        calls["n"] = 0
        board = open_board(path)
        assert len(board.rows) == models and len(board.columns) == 8
        per_record.append(calls["n"] / (models * 8 * 2))
    assert per_record[0] == per_record[1] <= 3  # the old per-cell scan: models x columns x records


def test_zoo_cells_are_their_samples_means_with_wilson_intervals(zoo: Path) -> None:
    board = open_board(zoo)
    store = board.store
    assert store is not None
    cell = board.cell("model-0003", board.columns[5].id)
    samples = store.samples(model="model-0003", framework=cell.column.framework, benchmark=cell.column.benchmark)
    latest = [s for s in samples if s.run_id == cell.record.run_id]  # type: ignore[union-attr]
    right = sum(s.scores["accuracy"] or 0 for s in latest)
    assert len(latest) == 20 and cell.n == 20
    assert cell.value_100 == pytest.approx(right / 20 * 100)
    assert cell.interval is not None and cell.interval.method == "wilson"
    assert (cell.interval.low, cell.interval.high) == pytest.approx(proportion_confint(right, 20, method="wilson"))
    # 12 models 5 points of skill apart on 8 x 20 samples: neighbours cannot be told apart
    ranges = [row.rank_range for row in board.rows]
    assert all(r is not None for r in ranges)
    assert any(r.best < r.worst for r in ranges if r is not None)
    assert all("shared samples" in row.versus_next for row in board.rows[:-1])


def test_the_page_keeps_samples_in_per_column_files(zoo: Path, tmp_path: Path) -> None:
    out = publish(open_board(zoo), tmp_path / "board").out
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Question 3 of bench001" not in html  # no sample text in the page itself
    files = sorted((out / "cells").glob("c*.js"))
    assert len(files) == 8
    text = files[1].read_text(encoding="utf-8")
    assert text.startswith("bbCell(") and text.endswith(");\n")
    data = json.loads(text[len("bbCell(") : -len(");\n")])
    assert len(data["rows"]) == 12 and all(len(r["s"]) == 20 for r in data["rows"].values())
    assert len(data["inputs"]) == 20  # each input text once, shared by the 12 models


def test_instance_lines_written_directly_are_their_validated_documents() -> None:
    """`every_eval_ever._line` writes a line without building its dict (a third of the time on 400,000
    lines): byte for byte `JSON.encode(_row(...))`, whatever the texts, optional parts and scores."""
    from leaderboards.every_eval_ever import JSON, LinePart, _line, _row

    document = {"evaluation_id": 'lm_eval/m "1"/run', "model_info": {"id": "local/m\u00e9"}}
    head = f'{{"schema_version": "0.3.0", "evaluation_id": {JSON.encode(document["evaluation_id"])}, '
    head += f'"model_id": {JSON.encode(document["model_info"]["id"])}, '
    base = {"framework": "lm_eval", "run_id": "r1", "benchmark": "qa", "sample_id": "q-1", "scores": {}}
    variants = [
        {},
        {"subset": "physics", "choices": ["A", "B </script>"], "extracted": "B", "output": "B\n\t\u2028"},
        {"judge": {"model": "j"}, "invalid": True, "output": None, "extracted": None, "sample_id": 7},
        {"output": '\u4f60\u597d \\ " \x00', "framework": "unknown"},
    ]
    for variant in variants:
        sample = {**base, **variant}
        for references in ([], ["Paris", "paris \u00e9"]):
            for score in (0.0, 1.0, 0.5, 1e-17, float("nan"), float("inf")):
                metadata = {"framework": "lm_eval", "messages": '[{"role": "user"}]'} if references else {}
                part = LinePart(sample, "Q?\nA:", references, metadata, "qa/acc", score, "ab" * 32)
                assert _line(head, part) == JSON.encode(_row(document, part))


def test_board_and_publish_pause_the_cycle_collector_and_restore_it(
    zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's passes over a big board's objects were a quarter of building and publishing it:
    both run with it off, and leave it as they found it (on, or off), even when they fail."""
    import gc

    from leaderboards import every_eval_ever
    from leaderboards import publish as publish_module

    seen: list[bool] = []
    documents = every_eval_ever.documents

    def watched(*args: object, **kw: object) -> object:
        seen.append(gc.isenabled())
        return documents(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(every_eval_ever, "documents", watched)
    assert gc.isenabled()
    board = open_board(zoo)
    publish(board, tmp_path / "board")
    assert seen == [False] and gc.isenabled()
    monkeypatch.setattr(publish_module, "leaderboard_xlsx", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        publish(board, tmp_path / "board")
    assert gc.isenabled()
    gc.disable()
    try:
        open_board(zoo)
        assert not gc.isenabled()
    finally:
        gc.enable()
