"""How `board` and `publish` scale with the records of a model zoo, and how the page behaves in Chromium.

    .venv/bin/python benchmarks/board_scale.py [--sizes 4k,40k,400k] [--work DIR] [--publish-400k] [--no-browser]

Stores (built once into --work, default a temporary folder; `leaderboards.testing.zoo_store`):

- 4k:   50 models x 40 columns x 2 reruns, 100 samples behind every record (400,000 sample rows)
- 40k:  500 models x 40 columns x 2 reruns
- 400k: 5,000 models x 40 columns x 2 reruns

For each: the time of `benchbridge board` (the board built from the store and printed by rich, in
process: no interpreter start) and of `publish` (every file written), the size of index.html, and
the growth of each time against the previous size (10x records should cost at most 13x time). With
Chromium (Debian's, through Playwright): the 40k page's time to interactive (navigation start to the
end of the load event, the page's script having run), to its first frame drawn after that (the
table laid out), the time to open a cell into its samples on the 4k page (the `cells/c<j>.js` it
loads, then the samples table drawn), and on the 40k page, whose first `PAGE_ROWS` rows are laid
out, the time to lay out every row when asked ("show all").
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

SIZES = {"4k": (50, 100), "40k": (500, 0), "400k": (5000, 0)}  # models, samples per record
COLUMNS, RERUNS = 40, 2
CHROMIUM = os.environ.get("BENCHBRIDGE_CHROMIUM", "/usr/bin/chromium")
# the time (from navigation start) when the first frame after the load event has been drawn
FRAME = "new Promise(done => requestAnimationFrame(() => setTimeout(() => done(performance.now()))))"


def build(folder: Path, size: str) -> Path:
    from leaderboards.testing import zoo_store

    models, samples = SIZES[size]
    path = folder / f"zoo-{size}.sqlite"
    if not path.exists():
        started = time.perf_counter()
        zoo_store(path.with_suffix(".tmp"), models=models, columns=COLUMNS, reruns=RERUNS, samples_per_cell=samples)
        path.with_suffix(".tmp").rename(path)
        print(f"  built {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def time_board(db: Path) -> tuple[float, float]:
    """Wall and CPU seconds (the machine is shared: CPU time says what the wall time owes to others)."""
    from rich.console import Console

    from leaderboards.board import board_from_cli, rich_table

    started, cpu = time.perf_counter(), time.process_time()
    board, _ = board_from_cli(None, str(db))
    Console(file=io.StringIO(), width=200).print(rich_table(board, 200))
    return time.perf_counter() - started, time.process_time() - cpu


def time_publish(db: Path, out: Path) -> tuple[float, float, int]:
    from leaderboards.publish import publish_from_cli

    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    published = publish_from_cli(None, str(db), str(out))
    return time.perf_counter() - started, time.process_time() - cpu, published.index_html.stat().st_size


def browser(page_40k: Path | None, page_4k: Path | None) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    found: dict[str, float] = {}
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            for name, page_path in (("40k", page_40k), ("4k", page_4k)):
                if page_path is None:
                    continue
                page = chrome.new_page()
                page.goto(page_path.as_uri())
                page.wait_for_load_state("load")
                found[f"interactive_{name}_ms"] = page.evaluate(
                    "(() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return t.loadEventEnd - t.startTime; })()"
                )
                # the load event can come before the table's first layout: the first frame drawn after it
                found[f"first_frame_{name}_ms"] = page.evaluate(FRAME)
                found[f"rows_laid_out_{name}"] = page.locator("#board tbody tr").count()
                # opening a cell: from the click to its samples (or its no-samples note) drawn
                found[f"open_cell_{name}_ms"] = page.evaluate(
                    """() => new Promise(resolve => {
                        const start = performance.now();
                        const row = document.querySelector('#board tbody tr');
                        window.bbOpen(row.getAttribute('data-model'), 3);
                        const done = () => document.querySelector('#evidence .ci-line')
                            ? resolve(performance.now() - start) : requestAnimationFrame(done);
                        done();
                    })"""
                )
                found[f"samples_shown_{name}"] = page.locator("#ev-samples tbody tr").count()
                if page.locator("#board-more button").is_visible():  # every row laid out, when asked
                    found[f"show_all_{name}_ms"] = page.evaluate(
                        """() => { const start = performance.now();
                            document.querySelector('#board-more button').click();
                            document.body.offsetHeight;  // the layout of every row, now
                            return performance.now() - start; }"""
                    )
                page.close()
        finally:
            chrome.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4k,40k,400k")
    parser.add_argument("--work", help="folder for the stores (kept; reused when run again)")
    parser.add_argument("--publish-400k", action="store_true", help="publish the 400k store too (minutes)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    folder = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="board-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    pages: dict[str, Path] = {}
    for size in args.sizes.split(","):
        db = build(folder, size)
        records = SIZES[size][0] * COLUMNS * RERUNS
        board_s, board_cpu = time_board(db)
        publish_s = publish_cpu = html = None
        if size != "400k" or args.publish_400k:
            publish_s, publish_cpu, html = time_publish(db, folder / f"board-{size}")
            pages[size] = folder / f"board-{size}" / "index.html"
        rows.append((size, records, board_s, board_cpu, publish_s, publish_cpu, html))
        shown = "not run" if publish_s is None else f"{publish_s:.2f} s"
        print(f"  {size}: board {board_s:.2f} s, publish {shown}", flush=True)
    print()
    head = ["store", "records", "board s", "board CPU s", "publish s", "publish CPU s", "index.html MB"]
    print("| " + " | ".join([*head, "board growth", "publish growth"]) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    previous = None
    for size, records, board_s, board_cpu, publish_s, publish_cpu, html in rows:
        growth_b = growth_p = ""
        if previous is not None:
            ratio = records / previous[1]
            growth_b = f"{board_s / previous[2]:.1f}x for {ratio:.0f}x records"
            if publish_s is not None and previous[3] is not None:
                growth_p = f"{publish_s / previous[3]:.1f}x for {ratio:.0f}x records"
        mb = "" if html is None else f"{html / 1e6:.2f}"
        pub = "" if publish_s is None else f"{publish_s:.2f}"
        pub_cpu = "" if publish_cpu is None else f"{publish_cpu:.2f}"
        cells = [size, f"{records:,}", f"{board_s:.2f}", f"{board_cpu:.2f}", pub, pub_cpu, mb, growth_b, growth_p]
        print("| " + " | ".join(cells) + " |")
        previous = (size, records, board_s, publish_s)
    print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if not args.no_browser and pages:
        print()
        for key, value in browser(pages.get("40k"), pages.get("4k")).items():
            print(f"{key}: {value:.0f}" if "ms" in key else f"{key}: {value}")
    if not args.work:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
