"""Canonical format, importers and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridges import BenchbridgeError
from bridges.cli import main
from bridges.datasets import McqSample, QaSample, import_dataset, load_dataset
from tests.conftest import DATASETS

BUNDLED = ["mcq_science_en", "qa_capitals", "qa_zh", "open_instructions"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_datasets_validate(name: str) -> None:
    ds = load_dataset(DATASETS / name)
    assert ds.name == name
    assert len(ds.samples) >= 6
    assert len(ds.content_hash) == 64


def test_ceval_import_keeps_subjects_answers_and_dev_as_fewshot(tmp_path: Path) -> None:
    ds = import_dataset("ceval", DATASETS / "ceval_mini", "ceval_mini")
    assert ds.subjects() == ["computer_network", "high_school_chemistry"]
    assert len(ds.samples) == 8 and len(ds.fewshot) == 10
    first = ds.samples[0]
    assert isinstance(first, McqSample)
    assert (first.question, first.answer, first.choices[1]) == ("以太网的MAC地址长度是多少位？", "B", "48")
    saved = ds.save(tmp_path / "ceval")
    again = load_dataset(saved)
    assert [s.model_dump() for s in again.samples] == [s.model_dump() for s in ds.samples]
    assert again.card.language == "zh"


def test_openai_evals_samples_import(tmp_path: Path) -> None:
    src = tmp_path / "samples.jsonl"
    src.write_text(
        json.dumps(
            {
                "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                "ideal": ["4", "four"],
            }
        )
        + "\n"
        + json.dumps({"input": "Capital of Peru?", "ideal": "Lima"})
        + "\n",
        encoding="utf-8",
    )
    ds = import_dataset("openai-evals", src, "arith")
    a, b = ds.samples
    assert isinstance(a, QaSample) and a.system == "Be brief." and a.answers == ["4", "four"]
    assert isinstance(b, QaSample) and b.question == "Capital of Peru?" and b.answers == ["Lima"]


def test_text_and_csv_importers(tmp_path: Path) -> None:
    ds = import_dataset("text", DATASETS / "open_instructions" / "instructions.txt", "ins")
    assert [s.instruction for s in ds.samples] == [
        s.instruction for s in load_dataset(DATASETS / "open_instructions").samples
    ]
    mcq = tmp_path / "m.csv"
    mcq.write_text("question,A,B,C,answer\nPick b,a,b,c,B\n", encoding="utf-8")
    m = import_dataset("csv", mcq, "m")
    assert m.kind == "mcq" and m.samples[0].choices == ["a", "b", "c"]
    qa = tmp_path / "q.csv"
    qa.write_text("question,answer\nSay hi,hi\n", encoding="utf-8")
    assert import_dataset("csv", qa, "q").kind == "qa"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "B"}\n{"id": 2\n',
            "samples.jsonl:2: invalid JSON",
        ),
        (
            '{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "C"}\n',
            "samples.jsonl:1: (sample): Value error, answer 'C' must be one of A, B",
        ),
        ('{"id": "1", "question": "q", "choices": ["a"], "answer": "A"}\n', "samples.jsonl:1: choices:"),
        (
            '{"id": "1", "question": "q", "choices": ["a", "b"], "answer": "A"}\n'
            '{"id": "1", "question": "r", "choices": ["a", "b"], "answer": "A"}\n',
            "samples.jsonl:2: id: duplicate id '1'",
        ),
    ],
)
def test_bad_samples_name_file_line_and_key(tmp_path: Path, content: str, expected: str) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "card.yaml").write_text("name: bad\nkind: mcq\n", encoding="utf-8")
    (folder / "samples.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(BenchbridgeError) as err:
        load_dataset(folder)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_text_importer_rejects_empty_lines_and_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "ins.txt"
    src.write_text("one\n\ntwo\n", encoding="utf-8")
    with pytest.raises(BenchbridgeError, match=r"ins.txt:2: empty line"):
        import_dataset("text", src, "x")
    src.write_text("one\ntwo\none\n", encoding="utf-8")
    with pytest.raises(BenchbridgeError, match=r"ins.txt:3: duplicate of line 1"):
        import_dataset("text", src, "x")


def test_cli_import_errors_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        main(["datasets", "import", "--from", "ceval", str(tmp_path / "missing"), "--name", "x", "--out", str(out)])
        == 2
    )
    assert (
        main(["datasets", "import", "--from", "nope", str(DATASETS / "ceval_mini"), "--name", "x", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("missing: not found (the ceval importer reads it)")
    assert "unknown dataset importer 'nope'" in err[1] and "ceval" in err[1]
    assert not out.exists()


def test_cli_import_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ceval"
    assert (
        main(["datasets", "import", "--from", "ceval", str(DATASETS / "ceval_mini"), "--name", "cm", "--out", str(out)])
        == 0
    )
    assert main(["datasets", "validate", str(out)]) == 0
    assert "cm: 8 mcq samples, 2 subjects" in capsys.readouterr().out
