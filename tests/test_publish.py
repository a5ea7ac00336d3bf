"""Publish: the same board as CSV, Markdown, a static page (tested in real headless Chromium), xlsx,
OpenCompass README and Every Eval Ever JSON; hostile names escaped; secrets nowhere; all or nothing."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridges import BenchbridgeError
from bridges.cli import main
from leaderboards import publish as publish_module
from leaderboards.board import open_board
from leaderboards.every_eval_ever import validate
from leaderboards.evidence import CAUSE_UNCOMPARABLE
from leaderboards.publish import MARKER, Published, publish
from leaderboards.stats import paired
from leaderboards.testing import manifest_for, sample_config, sample_runs, sample_samples, sample_store
from tests.conftest import DATASETS, ROOT

CHROMIUM = os.environ.get("BENCHBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
SCRIPT_NAME = "<script>window.__pwned = 1; document.title = 'pwned'</script>"
ATTRIBUTE_NAME = '"><img src=x onerror="window.__pwned = 2">'
SECRET = "sk-bb-publish-8f2d6c4a1e9b7350"
TITLE = "Sample board"
OC_MCQ = "opencompass/mcq_science_en/accuracy"


def _hostile_run() -> tuple[dict[str, Any], list[Any]]:
    """A run whose model names, benchmark and error would run script if anything were unescaped."""
    _, records = sample_runs()[0]  # OpenCompass, run a
    run_id = "20261123-080000-hostile"
    hostile = [
        r.model_copy(update={"run_id": run_id, "model": name, "time": "2026-11-23T08:00:00+00:00"})
        for r in records[:1]
        for name in (SCRIPT_NAME, ATTRIBUTE_NAME)
    ]
    hostile.append(
        records[0].model_copy(
            update={
                "run_id": run_id,
                "model": SCRIPT_NAME,
                "benchmark": "</td><script>window.__pwned = 3</script>",
                "status": "failed",
                "value": None,
                "error": f"<b onmouseover=alert(1)>boom</b> Authorization: Bearer {SECRET}",
            }
        )
    )
    return manifest_for(run_id, "opencompass", hostile), hostile


HOSTILE_OUTPUT = '</div><script>window.__pwned = 9</script><img src=x onerror="window.__pwned = 10">'


def _hostile_samples() -> list[Any]:
    """The hostile model's samples on its OpenCompass cell, the first answering with markup."""
    _, records = _hostile_run()
    samples = sample_samples(records[:1])
    return [samples[0].model_copy(update={"output": HOSTILE_OUTPUT}), *samples[1:]]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    folder = tmp_path_factory.mktemp("publish")
    os.environ["BENCHBRIDGE_PUBLISH_TEST_TOKEN"] = SECRET
    try:
        store = sample_store(folder / "results.sqlite")
        store.add_run(*_hostile_run(), samples=_hostile_samples())
        yield publish(open_board(folder / "results.sqlite", title=TITLE), folder / "board")
    finally:
        del os.environ["BENCHBRIDGE_PUBLISH_TEST_TOKEN"]


def _csv(published: Published) -> list[list[str]]:
    with (published.out / "leaderboard.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def browser_page(published: Published) -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/setup_browser.sh (scripts/test.sh does)"
    requests: list[str] = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = pw.chromium.launch_persistent_context(
            profile,  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(published.index_html.as_uri())
            page.wait_for_load_state("load")
            yield page, requests
        finally:
            context.close()


def test_every_file_is_written_and_nothing_else_is_left(published: Published) -> None:
    names = {p.relative_to(published.out).as_posix() for p in published.files}
    assert {
        "leaderboard.csv",
        "leaderboard.md",
        "index.html",
        "leaderboard.xlsx",
        "README_OPENCOMPASS.md",
        "provenance.csv",
    } <= names
    # one per run x framework x model: the samples, and two hostile models; their samples beside them
    assert len([n for n in names if n.startswith("every_eval_ever/") and n.endswith(".json")]) == 15 + 2
    assert len([n for n in names if n.endswith(".samples.jsonl")]) == 13 + 1
    columns = open_board(published.out.parent / "results.sqlite").columns
    assert len([n for n in names if n.startswith("cells/c")]) == len(columns)
    assert [p.name for p in published.out.parent.iterdir() if p.name.startswith(".")] == []  # no temp dirs


def test_page_table_equals_the_csv(published: Published, browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    header = page.eval_on_selector_all("#board thead th", "ths => ths.map(th => th.dataset.key)")
    rows = page.eval_on_selector_all(
        "#board tbody tr", "trs => trs.map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"
    )
    assert [header, *rows] == _csv(published)
    assert rows[0][:2] == ["1", "smollm2-135m"] and "failed" in rows[1]


def test_sorting_by_a_column_header(published: Published, browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    table = _csv(published)
    column = "lm_eval/qa_capitals/exact_match"  # numbers, and missing for the hostile models
    col = table[0].index(column)

    def shown() -> list[tuple[str, str]]:
        return [
            tuple(r)
            for r in page.eval_on_selector_all(
                "#board tbody tr",
                f"""trs => trs.map(tr =>
            [tr.dataset.model, tr.cells[{col}].innerText.trim()])""",
            )
        ]

    def order(reverse: bool) -> list[tuple[str, str]]:
        numbers = sorted((r for r in table[1:] if r[col] not in ("failed", "missing")), key=lambda r: float(r[col]))
        ranked = list(reversed(numbers)) if reverse else numbers
        return [(r[1], r[col]) for r in ranked + [r for r in table[1:] if r[col] in ("failed", "missing")]]

    header = page.locator(f'#board thead th[data-key="{column}"]')
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    first = shown()
    assert [v for _, v in first] == [v for _, v in order(reverse=True)]  # stable: equal values keep their order
    assert [v for _, v in first] == ["87.50", "75.00", "0.00", "missing", "missing"]
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert [v for _, v in shown()] == [v for _, v in order(reverse=False)]
    page.locator('#board thead th[data-key="model"]').click()
    assert [m for m, _ in shown()] == sorted(r[1] for r in table[1:])
    page.locator('#board thead th[data-key="rank"]').click()
    assert [m for m, _ in shown()][0] == "smollm2-135m"


def test_hostile_names_show_as_text_and_run_nothing(browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.title() == TITLE
    models = page.eval_on_selector_all("#board tbody tr td.model", "tds => tds.map(td => td.textContent)")
    assert SCRIPT_NAME in models and ATTRIBUTE_NAME in models
    # only the page's own, and the cell files it loaded itself (`cells/c<j>.js`)
    sources = page.evaluate("Array.from(document.scripts).map(s => s.getAttribute('src'))")
    assert sources.count(None) == 1 and all(s is None or s.startswith("cells/c") for s in sources)
    assert page.evaluate("document.images.length") == 0
    assert page.locator("#failures").inner_text().count("<b onmouseover=alert(1)>boom</b>") == 1
    assert SECRET not in page.content()


def test_filters_and_provenance_panel(browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    page.fill("#model-filter", "tuned")
    visible = page.eval_on_selector_all("#board tbody tr:not([hidden])", "trs => trs.map(tr => tr.dataset.model)")
    assert visible == ["smollm2-135m@tuned"]
    page.fill("#model-filter", "")
    page.uncheck('input.fw-toggle[value="lm_eval"]')
    assert page.locator('#board thead th[data-fw="lm_eval"]').first.is_hidden()
    assert page.locator(f'#board thead th[data-key="{OC_MCQ}"]').is_visible()
    page.check('input.fw-toggle[value="lm_eval"]')

    cell = page.locator('#board tbody tr[data-model="smollm2-135m"] td[data-fw="opencompass"] a.v').last
    assert "opencompass 0.5.4" in (cell.get_attribute("title") or "")
    cell.click()
    page.wait_for_selector("#evidence .ci-line")  # the cell's file is read after the click
    detail = page.locator("#detail")
    assert detail.is_visible()
    text = detail.inner_text()
    for expected in ("20261121-100000-d4e5f6", "0.5.4", OC_MCQ, "2026-11-21T10:02:00+00:00", "samples"):
        assert expected in text
    page.keyboard.press("Escape")
    assert detail.is_hidden()


def _open_cell(page: Any, model: str, column: str) -> None:
    """Click a board cell and wait for its samples (or the note that it has none)."""
    index = page.eval_on_selector_all("#board thead th", f"ths => ths.map(th => th.dataset.key).indexOf({column!r})")
    page.locator(f'#board tbody tr[data-model="{model}"] td').nth(index).locator("a.v").click()
    page.wait_for_selector("#evidence .ci-line")


def _column_texts(page: Any, selector: str, column: int) -> list[str]:
    return page.eval_on_selector_all(
        f"{selector} tbody tr", f"trs => trs.map(tr => tr.cells[{column}].innerText.trim())"
    )


def test_a_cell_opens_into_its_samples_and_filters_to_wrong(
    published: Published, browser_page: tuple[Any, list[str]]
) -> None:
    page, _ = browser_page
    _open_cell(page, "smollm2-135m", "lm_eval/qa_capitals/exact_match")
    assert "lm_eval/qa_capitals/exact_match" in page.locator("#detail .where").inner_text()
    assert _column_texts(page, "#ev-samples", 0) == [f"cap-{i}" for i in range(1, 9)]
    assert _column_texts(page, "#ev-samples", 1) == ["wrong"] * 2 + ["right"] * 6
    assert "[40.93, 92.85] n=8" in page.locator("#evidence .ci-line").inner_text()
    page.select_option("#ev-filter", "wrong")
    assert _column_texts(page, "#ev-samples", 0) == ["cap-1", "cap-2"]
    assert _column_texts(page, "#ev-samples", 4) == ["Paris.", "Tokyo."]
    page.select_option("#ev-filter", "all")
    page.fill("#ev-search", "peru")
    assert _column_texts(page, "#ev-samples", 0) == ["cap-7"]
    page.fill("#ev-search", "")
    # the same sample across models and across frameworks
    page.locator("#ev-samples tbody tr").first.locator("button").click()
    page.wait_for_selector("#ev-frameworks")
    assert _column_texts(page, "#ev-models", 0) == ["smollm2-135m@tuned", "tiny-random"]
    assert _column_texts(page, "#ev-frameworks", 0) == ["lm_eval exact_match", "openai_evals accuracy"]
    # lm-eval logged the rendered chat template, evals the messages: as evidence.cause says, not comparable
    assert f"Scores differ: {CAUSE_UNCOMPARABLE}." in page.locator("#ev-sample").inner_text()
    # the paired comparison is stats.paired's, on the 8 shared samples
    store = published.board.store
    assert store is not None

    def scores(model: str) -> dict[str, float]:
        cell = store.samples(model=model, framework="lm_eval", benchmark="qa_capitals")
        return {s.sample_id: s.scores["exact_match"] or 0.0 for s in cell}

    want = paired(scores("smollm2-135m"), scores("smollm2-135m@tuned"))
    assert want is not None
    row = page.eval_on_selector_all(
        "#ev-pairs tbody tr", "trs => trs.map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"
    )[0]
    assert row[0] == "smollm2-135m@tuned" and row[4] == "8"
    assert row[2] == f"{want.diff * 100:+.2f}"
    assert row[3] == f"[{want.low * 100:+.2f}, {want.high * 100:+.2f}]"
    assert want.discordant == (0, 1) and float(row[5]) == pytest.approx(want.p_mcnemar, rel=5e-3)


def test_the_framework_diff_on_the_page(browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    _open_cell(page, "smollm2-135m", "openai_evals/qa_capitals/accuracy")
    page.click("#ev-diff-button")
    page.wait_for_selector("#ev-diff")
    assert _column_texts(page, "#ev-diff", 0) == ["cap-1", "cap-2", "cap-7", "cap-8"]
    assert set(_column_texts(page, "#ev-diff", 1)) == {CAUSE_UNCOMPARABLE}
    first = _column_texts(page, "#ev-diff", 2)[0]
    assert "exact_match = 0" in first and "accuracy = 1" in first and "Paris." in first


def test_a_script_in_a_model_output_is_text(published: Published, browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    _open_cell(page, SCRIPT_NAME, OC_MCQ)
    assert HOSTILE_OUTPUT in _column_texts(page, "#ev-samples", 4)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.images.length") == 0
    html = published.index_html.read_text(encoding="utf-8")
    assert "__pwned = 9" not in html and "Tokyo." not in html  # samples are in cells/, not in the page


def test_a_cell_without_samples_shows_what_it_has(browser_page: tuple[Any, list[str]]) -> None:
    page, _ = browser_page
    _open_cell(page, "smollm2-135m", "lm_eval/qa_zh/exact_match")
    assert page.locator("#ev-samples").count() == 1  # it has samples
    _open_cell(page, "tiny-random", OC_MCQ)
    text = page.locator("#detail").inner_text()
    assert "95% interval" in text


def test_page_loads_nothing_from_the_network_and_a_screenshot_is_kept(
    published: Published, browser_page: tuple[Any, list[str]]
) -> None:
    page, requests = browser_page
    assert requests[0] == published.index_html.as_uri()  # then only the cell files it opened, from disk
    assert all(r.startswith((published.out / "cells").as_uri() + "/c") for r in requests[1:])
    assert page.locator("section.charts figure > svg").count() == 6 + 5  # per benchmark, per model (hostile too)
    page.reload()  # the page as a visitor first sees it, not after the other tests' clicks
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_xlsx_reopens_to_the_csv_values(published: Published) -> None:
    from openpyxl import load_workbook

    book = load_workbook(published.out / "leaderboard.xlsx")
    assert book.sheetnames == ["leaderboard", "provenance", "columns", "runs"]
    sheet = [list(row) for row in book["leaderboard"].iter_rows(values_only=True)]
    table = _csv(published)
    assert sheet[0] == table[0]
    for got, want in zip(sheet[1:], table[1:], strict=True):
        for value, text in zip(got, want, strict=True):
            if isinstance(value, int | float):
                assert value == float(text), (got, want)
            else:
                assert (value or "") == text, (got, want)  # an empty text cell reopens as None
    assert book["leaderboard"]["E2"].comment is not None
    assert SCRIPT_NAME in [row[1] for row in sheet]


def test_every_eval_ever_documents_validate(published: Published) -> None:
    documents = sorted((published.out / "every_eval_ever").glob("*.json"))
    judged = 0
    for path in documents:
        document = json.loads(path.read_text(encoding="utf-8"))
        validate(document, path.name)
        for result in document["evaluation_results"]:
            judged += "llm_scoring" in result["metric_config"]
    assert judged == 3  # the three models' AlpacaEval win rates
    broken = json.loads(documents[0].read_text(encoding="utf-8"))
    broken["source_metadata"]["source_type"] = "rumour"
    with pytest.raises(ValueError, match="source_metadata/source_type"):
        validate(broken)
    lm = next(
        json.loads(p.read_text()) for p in documents if "20261120-090000-a1b2c3__lm_eval__smollm2-135m-" in p.name
    )
    assert lm["eval_library"] == {
        "name": "lm_eval",
        "version": "0.4.13",
        "additional_details": lm["eval_library"]["additional_details"],
    }
    acc = next(r for r in lm["evaluation_results"] if r["evaluation_result_id"] == "mcq_science_en/acc")
    assert acc["score_details"]["score"] == 0.5
    assert acc["score_details"]["uncertainty"] == {
        "standard_error": acc["score_details"]["uncertainty"]["standard_error"],
        "num_samples": 8,
    }


def test_markdown_and_opencompass_readme(published: Published) -> None:
    text = (published.out / "leaderboard.md").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "| 1 | smollm2-135m | 47.92 | 8/8 |" in text
    assert "## Cross-framework agreement" in text
    readme = (published.out / "README_OPENCOMPASS.md").read_text(encoding="utf-8")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert list(front) == [
        "name",
        "desc",
        "language",
        "dimension",
        "sub_dimension",
        "website",
        "github",
        "paper",
        "release_date",
        "tag",
        "download_url",
    ]
    assert front["name"] == TITLE and front["language"] == ["cn", "en"]
    assert {"## Introduction", "## Meta Data", "## Leaderboard", "## Citation"} <= set(readme.splitlines())


def test_no_secret_in_any_published_or_stored_file(published: Published) -> None:
    for path in [*published.out.parent.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_failed_publish_leaves_the_previous_board(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = open_board(published.out.parent / "results.sqlite")
    target = tmp_path / "board"
    first = publish(board, target)
    before = {p: p.read_bytes() for p in first.files}

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(publish_module, "leaderboard_xlsx", broken)
    with pytest.raises(OSError, match="disk full"):
        publish(board, target)
    assert {
        p: p.read_bytes() for p in sorted(p for p in target.rglob("*") if p.is_file() and p.name != MARKER)
    } == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]
    with pytest.raises(OSError):
        publish(board, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_publish_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BenchbridgeError, match="benchbridge did not publish"):
        publish(open_board(sample_runs()[0][1]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_publish_command_with_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample_store(tmp_path / "results.sqlite")
    publish_settings = {"out": "site", "title": "Config board", "github": "https://example.org/benchbridge"}
    config = sample_config(tmp_path, ["smollm2-135m"], publish_settings)
    assert main(["publish", str(config)]) == 0
    assert f"page: {tmp_path / 'site' / 'index.html'}" in capsys.readouterr().out
    readme = (tmp_path / "site" / "README_OPENCOMPASS.md").read_text(encoding="utf-8")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert (front["name"], front["github"]) == ("Config board", "https://example.org/benchbridge")
    assert '"id": "cap-1"' in readme  # an example sample from the loaded dataset
    assert main(["publish", "--db", str(tmp_path / "results.sqlite")]) == 2


@pytest.mark.framework
def test_a_real_run_leaks_no_secret_into_work_dir_or_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval through the runner: a keyed model called in-process and the same model behind
    `benchbridge serve`, reached with an API key from the environment; then publish, then grep."""
    from bridges import load_config, run
    from bridges.models import parse_model_spec
    from bridges.serve import serving
    from leaderboards.publish import publish_config

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("BENCHBRIDGE_PUBLISH_TEST_TOKEN", SECRET)
    capitals = str(DATASETS / "qa_capitals")

    def keyed(name: str, wrong: list[str]) -> dict[str, Any]:
        target = "bridges.testing:AnswerKeyModel"
        return {"name": name, "kind": "python", "target": target, "args": {"datasets": [capitals], "wrong_ids": wrong}}

    with serving(parse_model_spec(keyed("keyed-served", ["cap-3", "cap-5", "cap-7"]))) as url:
        config_path = tmp_path / "secret.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "name": "secret",
                    "work_dir": "runs",
                    "models": [
                        keyed("keyed", ["cap-3"]),
                        {"name": "keyed-api", "kind": "openai", "model": "keyed-served", "base_url": url},
                    ],
                    "datasets": [{"path": capitals}],
                    "frameworks": {"lm_eval": {}},
                    "publish": {"out": "board"},
                }
            )
        )
        config = load_config(config_path)
        outcome = run(config, ["lm_eval"])
    assert outcome.ok, [r.error for f in outcome.frameworks for r in f.records if r.status == "failed"]
    published = publish_config(config)
    board = published.board
    column = "lm_eval/qa_capitals/exact_match,strip"
    assert (board.cell("keyed", column).text, board.cell("keyed-api", column).text) == ("87.50", "62.50")
    assert [(r.model, r.rank) for r in board.rows] == [("keyed", 1), ("keyed-api", 2)]
    assert (published.out / "index.html").read_text(encoding="utf-8").count("87.50") >= 2
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" and "lm_eval" in p.parts for p in scanned)  # lm-eval's own files were read
    assert [p for p in scanned if SECRET.encode() in p.read_bytes()] == []


# ---- a board too big for HTML rows: its rows drawn from JSON, the first PAGE_ROWS laid out ------------


def _rows_as_shown(page: Any) -> list[list[Any]]:
    """Every board row as the DOM has it: the row's attributes, each cell's attributes and inner HTML."""
    return page.eval_on_selector_all(
        "#board tbody tr",
        """trs => trs.map(tr => [
            Array.from(tr.attributes).map(a => a.name + '=' + a.value).sort(),
            Array.from(tr.cells).map(td => [Array.from(td.attributes).map(a => a.name + '=' + a.value).sort(),
                                            td.innerHTML])])""",
    )


def _open_page(context: Any, path: Path) -> Any:
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page


def test_a_big_board_draws_the_same_rows_from_json(
    published: Published, browser_page: tuple[Any, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above HTML_CELLS cells the rows travel as JSON that the page's script draws: the same DOM as
    the HTML rows, hostile names as text, the JSON block unable to end its script element."""
    monkeypatch.setattr(publish_module, "HTML_CELLS", 0)
    big = publish(open_board(published.out.parent / "results.sqlite", title=TITLE), tmp_path / "big")
    html = big.index_html.read_text(encoding="utf-8")
    assert '<script type="application/json" id="board-rows">' in html
    assert "<td" not in html.split("<tbody>")[1].split("</tbody>")[0]  # no HTML rows
    assert html.count("</script>") == 2  # the JSON block's end and the page script's: no name ends a block
    assert "\\u003cscript\\u003ewindow.__pwned = 1" in html  # the name, escaped inside the JSON
    context = browser_page[0].context
    small_page, big_page = _open_page(context, published.index_html), _open_page(context, big.index_html)
    try:
        assert _rows_as_shown(big_page) == _rows_as_shown(small_page)
        assert len(_rows_as_shown(big_page)) == 5
        assert big_page.evaluate("typeof window.__pwned") == "undefined"
        assert big_page.evaluate("document.images.length") == 0
        assert big_page.locator("#board-more").is_hidden()  # 5 rows: all of them are laid out
        _open_cell(big_page, "smollm2-135m", "lm_eval/qa_capitals/exact_match")
        assert _column_texts(big_page, "#ev-samples", 1) == ["wrong"] * 2 + ["right"] * 6
    finally:
        small_page.close()
        big_page.close()


def test_a_big_board_lays_out_its_first_rows_and_sorts_and_filters_all(
    published: Published, browser_page: tuple[Any, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish_module, "HTML_CELLS", 0)
    monkeypatch.setattr(publish_module, "PAGE_ROWS", 2)
    big = publish(open_board(published.out.parent / "results.sqlite", title=TITLE), tmp_path / "big")
    table = _csv(published)
    column = "lm_eval/qa_capitals/exact_match"
    col = table[0].index(column)

    def shown(page: Any) -> list[list[str]]:
        return page.eval_on_selector_all(
            "#board tbody tr:not([hidden])", "trs => trs.map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"
        )

    page = _open_page(browser_page[0].context, big.index_html)
    try:
        assert shown(page) == table[1:3]
        assert page.locator("#board-more").inner_text().startswith("Showing the first 2 of 5 models")
        # sorting orders every row, not only the two laid out: the lowest of all 5 come first
        header = page.locator(f'#board thead th[data-key="{column}"]')
        header.click()
        header.click()
        ascending = sorted((r for r in table[1:] if r[col] != "missing"), key=lambda r: float(r[col]))
        assert [r[1] for r in shown(page)] == [r[1] for r in ascending[:2]]
        # the filter looks at every row; the framework switch hides the cells of rows set aside too
        page.fill("#model-filter", "smollm2")
        assert [r[1] for r in shown(page)] == [r[1] for r in ascending if "smollm2" in r[1]]
        assert page.locator("#board-more").is_hidden()  # both that pass are laid out
        page.fill("#model-filter", "i")  # tiny-random and the two hostile names: 2 of 3 shown
        assert len(shown(page)) == 2
        assert page.locator("#board-more").inner_text().startswith("Showing the first 2 of 3 models")
        page.fill("#model-filter", "")
        page.uncheck('input.fw-toggle[value="lm_eval"]')
        page.click("#board-more button")
        assert len(shown(page)) == 5 and page.locator("#board-more").is_hidden()
        hidden = page.eval_on_selector_all(
            '#board tbody td[data-fw="lm_eval"]', "tds => tds.map(td => td.classList.contains('hidden-fw'))"
        )
        assert hidden and all(hidden)
    finally:
        page.close()


def test_publish_masks_what_redact_masks_and_skips_only_texts_that_hold_nothing_to_mask() -> None:
    from leaderboards._secrets import redact, secret_values

    value = 'late"secret\\value-5c1d9e'
    masked = secret_values(["BB_LATE_KEY"], env={"BB_LATE_KEY": value})
    clean = publish_module.cleaner(masked, [("/store/", "")])
    texts = [
        "Authorization: BeArEr tok3n0123456789 at /store/run/log.txt",
        "key sk-abcdefghijklmnop1234 in a 'task-list'",
        f"said {value} and, in JSON, {json.dumps(value)}",
        "the bearer instruments; a task-list; nothing to mask",
    ]
    for text in texts:
        assert clean(text) == redact(text, masked).replace("/store/", "")
    assert [clean(t) for t in texts] == [
        "Authorization: BeArEr *** at run/log.txt",
        "key *** in a 'task-list'",
        'said *** and, in JSON, "***"',
        texts[3],
    ]


def test_a_secret_known_only_when_publishing_is_masked_in_the_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store masked what it knew when it stored; a key set later is masked by publish, in the cell
    files and the instance-level JSONL as everywhere."""
    late = "bb-late-secret-5c1d9e7a"
    store = sample_store(tmp_path / "results.sqlite")
    manifest, records = _hostile_run()
    samples = [s.model_copy(update={"output": f"the key is {late}"}) for s in sample_samples(records[:1])]
    store.add_run(manifest, records, samples=samples)
    monkeypatch.setenv("BB_LATE_TOKEN", late)
    out = publish(open_board(tmp_path / "results.sqlite"), tmp_path / "board").out
    assert late in store.path.read_bytes().decode("utf-8", "replace")  # stored before it was a secret
    written = [p for p in out.rglob("*") if p.is_file()]
    assert [p for p in written if late.encode() in p.read_bytes()] == []
    masked = [p.name for p in written if b"the key is ***" in p.read_bytes()]
    assert any(n.startswith("c") and n.endswith(".js") for n in masked) and any(n.endswith(".jsonl") for n in masked)
