"""The `benchbridge` command. Imports no framework until a command needs one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bridges._errors import BenchbridgeError

if TYPE_CHECKING:
    from rich.table import Table

    from bridges._runner import RunOutcome

Handler = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as the one line every other input error is (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"benchbridge: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _max_parallel(text: str | None) -> int | None:
    """`--max-parallel N`, checked here: argparse's own errors print a usage block, not one line."""
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BenchbridgeError(f"run: --max-parallel {text}: give a whole number of frameworks, 1 or more")
    return int(text)


def cmd_datasets_import(args: argparse.Namespace) -> int:
    from bridges.datasets import import_source

    options = {k: v for k, v in vars(args).items() if k in ("language", "license", "description", "split") and v}
    result = import_source(args.fmt, args.source, args.name, **options)
    if isinstance(result, list):  # a collection (an OpenAI evals registry): --out holds one folder per dataset
        root = Path(args.out) if args.out else Path("custom_datasets")
        taken = [root / ds.name for ds in result if (root / ds.name).exists()]
        if taken:
            raise BenchbridgeError(f"{taken[0]}: already exists; choose another --out or remove it")
        for ds in result:
            ds.save(root / ds.name)
            print(f"imported {len(ds.samples)} {ds.kind} samples into {root / ds.name} ({ds.card.description})")
        return 0
    out = Path(args.out) if args.out else Path("custom_datasets") / result.name
    result.save(out)
    print(f"imported {len(result.samples)} {result.kind} samples into {out}")
    return 0


def cmd_datasets_validate(args: argparse.Namespace) -> int:
    from bridges._files import path_kind
    from bridges.datasets import load_dataset, load_samples_file

    for path in args.paths:
        # A folder is a dataset; a file is its samples alone, of --kind or the kind its first line shows.
        is_file = path_kind(Path(path)) == "file"
        ds = load_samples_file(Path(path), args.kind) if is_file else load_dataset(path)
        subjects = ds.subjects()
        extra = f", {len(subjects)} subjects" if subjects else ""
        print(f"{path}: ok ({ds.name}: {len(ds.samples)} {ds.kind} samples{extra}, sha256 {ds.content_hash[:12]})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from bridges._config import load_config
    from bridges._runner import prepare

    config = load_config(args.config)
    written = prepare(config, Path(args.out), _split(args.only))
    for framework, paths in written.items():
        for p in paths:
            print(f"{framework}: {p}")
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from leaderboards.board import board_from_cli, failure_notes, rich_table

    board, _ = board_from_cli(args.config, args.db, average_over=args.average_over, subsets=args.subsets or None)
    console = Console()
    console.print(rich_table(board, console.width))
    for note in failure_notes(board):
        console.print(Text(f"failed: {note}", style="red"), soft_wrap=True)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from leaderboards.publish import publish_from_cli

    published = publish_from_cli(
        args.config,
        args.db,
        args.out,
        average_over=args.average_over,
        subsets=args.subsets or None,
        title=args.title,
    )
    for path in published.files:
        print(path)
    print(f"page: {published.index_html}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from leaderboards import evidence

    store = evidence.store_from_cli(args.config, args.db)
    console = Console()
    if args.diff_frameworks:
        cells = evidence.framework_cells(store, args.model, args.benchmark)
        found = evidence.disagreements(cells)
        if args.json:
            print(json.dumps([d.as_dict() for d in found], ensure_ascii=False, indent=2))
            return 0
        console.print(evidence.diff_table(args.model, args.benchmark, found, [c.framework for c in cells]))
        print(f"{len(found)} samples scored differently by {', '.join(c.framework for c in cells) or 'no framework'}")
        return 0
    if not args.framework:
        raise BenchbridgeError("--framework: required unless --diff-frameworks")
    cell = evidence.cell_samples(store, args.model, args.framework, args.benchmark, args.metric)
    chosen = evidence.select(cell, wrong=args.wrong, invalid=args.invalid)
    if args.json:
        print(json.dumps([evidence.sample_json(s, cell.metric) for s in chosen], ensure_ascii=False, indent=2))
        return 0
    console.print(evidence.samples_table(cell, chosen))
    print(f"{len(chosen)} of {len(cell.samples)} samples (run {', '.join(sorted({r.run_id for r in cell.records}))})")
    return 0


def records_table(outcome: RunOutcome) -> Table:
    """This run's primary records, for `run --no-publish`: values on the board's 0-100 scale."""
    from rich.table import Table

    from leaderboards.board import NO_VALUE, record_text

    table = Table(title=f"benchbridge run {outcome.run_id}")
    for col in ("framework", "model", "benchmark", "metric", "value (0-100)", "status"):
        table.add_column(col)
    for fw in outcome.frameworks:
        for r in fw.records:
            if not r.primary:
                continue
            value = record_text(r) if r.status == "ok" else NO_VALUE
            table.add_row(
                r.framework,
                r.model,
                r.benchmark + (f"/{r.subset}" if r.subset else ""),
                r.metric + (f"\nscorer {r.extra['scorer']}" if r.extra.get("scorer") else ""),  # as on the board
                value,
                r.status if r.status == "ok" else f"failed: {(r.error or '')[:80]}",
            )
    return table


def cmd_rescore(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bridges._config import load_config
    from bridges.scoring.rescore import rescore
    from leaderboards.board import board_from_cli, failure_notes, rich_table

    console = Console(stderr=True)
    config = load_config(args.config)
    outcome = rescore(config, args.scorer, progress=lambda m: console.print(m, markup=False))
    board, _ = board_from_cli(args.config, None)
    Console().print(rich_table(board, Console().width))
    for note in failure_notes(board):
        console.print(note, markup=False)
    for skipped in outcome.skipped:
        console.print(f"no stored answers for {skipped}: not rescored", markup=False)
    console.print(f"rescore run {outcome.run_id}: {len(outcome.records)} records -> {outcome.db}", markup=False)
    return 0 if outcome.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bridges._config import load_config
    from bridges._progress import RunProgress
    from bridges._runner import run
    from bridges.models import LOADS_FILE, loads_by_ref

    console = Console(stderr=True)
    config = load_config(args.config)
    max_parallel = _max_parallel(args.max_parallel)
    with RunProgress(console) as progress:  # a row per framework on a terminal, log lines otherwise
        outcome = run(
            config,
            _split(args.only),
            force=args.force,
            progress=progress,
            cache=not args.no_cache,
            max_parallel=max_parallel,
            executor=args.executor,
        )
    lines = [f"run dir: {outcome.run_dir}", f"results: {outcome.db}"]
    if args.no_publish:
        Console().print(records_table(outcome))
    else:
        # The main job ends on the board: published files plus the merged table in the terminal.
        from leaderboards.board import failure_notes, rich_table
        from leaderboards.publish import publish_config

        published = publish_config(config)
        Console().print(rich_table(published.board, Console().width))
        for note in failure_notes(published.board):
            console.print(note, markup=False)
        lines.append(f"page: {published.index_html}")
    if outcome.cache:
        console.print(outcome.cache.line(), markup=False)  # "[/path]" would parse as a closing tag
    loads = loads_by_ref(outcome.run_dir / LOADS_FILE)
    if loads:  # models the frameworks asked through benchbridge: loaded here once each, not per process
        console.print("models loaded by benchbridge: " + ", ".join(f"{r} x{n}" for r, n in loads.items()), markup=False)
    console.print("\n".join(lines), markup=False)
    return 0 if outcome.ok else 1


def cmd_collect(args: argparse.Namespace) -> int:
    from bridges.collect import collect

    config_name = None
    if args.db:
        db = Path(args.db)
    elif args.config:
        from bridges._config import load_config

        config = load_config(args.config)
        db, config_name = config.results_db, config.name
    else:
        raise BenchbridgeError("collect: give --config CONFIG (its results database) or --db PATH")
    done = collect(args.framework, Path(args.path), db=db, model=args.model, config_name=config_name)
    ok = sum(r.status == "ok" for r in done.records)
    what = "collected" if done.new else "already collected (nothing stored)"
    print(f"{what}: {args.path} as run {done.run_id}: {ok} records, {len(done.records) - ok} failed, "
          f"{len(done.samples)} samples into {db}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bridges._config import load_config
    from bridges.serve import key_from_env, option_number, run_server

    port = int(option_number(args.port, "--port", 1, 65535))
    max_body_mb = option_number(args.max_body_mb, "--max-body-mb", 0.001, 1024)
    key = key_from_env(args.api_key_env)  # before loading anything: a missing key is the user's to fix first
    config = load_config(args.config)
    config.materialize_models()
    specs = [config.model(name, "--model") for name in _split(args.model) or []]
    run_server(specs, host=args.host, port=port, api_key=key, max_body_bytes=int(max_body_mb * 1024 * 1024))
    return 0


def add_board_arguments(parser: argparse.ArgumentParser) -> None:
    """What `board` and `publish` both take: where the results are and how columns are averaged."""
    parser.add_argument("config", nargs="?", help="run config (its results database and publish settings)")
    parser.add_argument("--db", help="a results database instead of a config")
    parser.add_argument(
        "--average-over", action="append", help="a column id or pattern to average over (repeatable; e.g. 'lm_eval/*')"
    )
    parser.add_argument("--subsets", action="store_true", help="a column per subset (e.g. C-Eval subject)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("benchbridge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="benchbridge",
        description="Run one dataset and one model definition through OpenCompass, OpenAI evals, "
        "AlpacaEval and lm-evaluation-harness, and merge the reports into one leaderboard.",
    )
    parser.add_argument("--version", action="version", version=f"benchbridge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="import and validate canonical datasets")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    imp = ds_sub.add_parser("import", help="convert another format into a canonical dataset folder")
    imp.add_argument("source", help="file or folder to import")
    imp.add_argument("--from", dest="fmt", required=True, help="ceval, openai-evals, alpaca-eval, text, csv")
    imp.add_argument(
        "--name", help="dataset name (letters, digits, _ . -; default: the source's name; unused for a registry)"
    )
    imp.add_argument("--out", help="output folder (default custom_datasets/NAME; for a registry: the parent folder)")
    imp.add_argument("--language")
    imp.add_argument("--license")
    imp.add_argument("--description")
    imp.add_argument("--split", help="C-Eval split to import (default val; dev rows become few-shot examples)")
    imp.set_defaults(handler=cmd_datasets_import)
    val = ds_sub.add_parser("validate", help="check dataset folders; errors name file, line and key")
    val.add_argument("paths", nargs="+", help="dataset folders, or bare samples .jsonl files")
    val.add_argument(
        "--kind",
        choices=["mcq", "qa", "open", "gen", "code"],
        help="kind of a bare samples file (default: from line 1)",
    )
    val.set_defaults(handler=cmd_datasets_validate)

    prep = sub.add_parser("prepare", help="write each framework's native config and data, runnable by hand")
    prep.add_argument("config")
    prep.add_argument("--out", required=True, help="folder for the native artifacts")
    prep.add_argument("--only", help="comma-separated frameworks (default: all in the config)")
    prep.set_defaults(handler=cmd_prepare)

    board = sub.add_parser("board", help="print the merged leaderboard: models x framework/benchmark/metric")
    add_board_arguments(board)
    board.set_defaults(handler=cmd_board)

    pub = sub.add_parser("publish", help="write the board as CSV, Markdown, HTML page, xlsx, OpenCompass and EEE files")
    add_board_arguments(pub)
    pub.add_argument("--out", help="folder to (re)write (default: the config's publish.out or WORK_DIR/leaderboard)")
    pub.add_argument("--title", help="page title (default: the config's publish.title or name)")
    pub.set_defaults(handler=cmd_publish)

    smp = sub.add_parser("samples", help="list a board cell's samples, or where frameworks scored them differently")
    smp.add_argument("config", nargs="?", help="run config (its results database)")
    smp.add_argument("--db", help="a results database instead of a config")
    smp.add_argument("--model", required=True)
    smp.add_argument("--framework", help="the cell's framework (not needed with --diff-frameworks)")
    smp.add_argument("--benchmark", required=True, help="the dataset's name")
    smp.add_argument("--metric", help="a metric of the cell (default: its primary one)")
    smp.add_argument("--wrong", action="store_true", help="only samples not scored fully right")
    smp.add_argument("--invalid", action="store_true", help="only samples whose answer or grade was not parsed")
    smp.add_argument("--diff-frameworks", action="store_true", help="the samples frameworks scored differently")
    smp.add_argument("--json", action="store_true", help="JSON instead of a table")
    smp.set_defaults(handler=cmd_samples)

    res = sub.add_parser("rescore", help="score stored answers again with a scorer (no evaluated-model call)")
    res.add_argument("config")
    res.add_argument("--scorer", action="append", required=True, help="a scorer of frameworks.scoring (repeatable)")
    res.set_defaults(handler=cmd_rescore)

    run = sub.add_parser("run", help="run the frameworks and store normalized results")
    run.add_argument("config")
    run.add_argument("--only", help="comma-separated frameworks (default: all in the config)")
    run.add_argument("--force", action="store_true", help="rerun work a framework would skip as done")
    run.add_argument(
        "--max-parallel",
        metavar="N",
        help="frameworks run at once (default: the config's max_parallel, else one per core)",
    )
    run.add_argument(
        "--executor",
        metavar="KIND[@ADDRESS]",
        help="where units run: local (threads here) or ray, ray@auto, ray@HOST:PORT (default: the config's executor)",
    )
    run.add_argument("--no-publish", action="store_true", help="store results only; skip publishing the board")
    run.add_argument(
        "--no-cache", action="store_true", help="ask the models again: neither read nor write the response cache"
    )
    run.set_defaults(handler=cmd_run)

    col = sub.add_parser("collect", help="store a native report made anywhere (by hand, on a cluster) beside our runs")
    col.add_argument("framework", help="opencompass, lm_eval, openai_evals or alpaca_eval")
    col.add_argument(
        "path", help="the report: outputs/<time>/, results_<time>.json, an oaieval record log, leaderboard.csv"
    )
    col.add_argument("--model", help="the board name of the report's model (a one-model report)")
    col.add_argument("--config", help="run config: its results database, and its board shows the report")
    col.add_argument("--db", help="a results database instead of a config")
    col.set_defaults(handler=cmd_collect)

    serve = sub.add_parser("serve", help="serve a model from the config behind an OpenAI-compatible API")
    serve.add_argument("config")
    serve.add_argument("--model", required=True, help="model name(s) from the config, comma-separated")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); anything but loopback needs an API key",
    )
    serve.add_argument("--port", default="8765", help="1-65535 (default 8765)")
    serve.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="require 'Authorization: Bearer $NAME' on every request (default: $BENCHBRIDGE_SERVE_KEY if set)",
    )
    serve.add_argument("--max-body-mb", default="8", metavar="MB", help="larger request bodies get 413 (default 8 MiB)")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    from bridges.secrets import masked_output

    try:
        # Code in this process prints too (a python model loading, a library's warning): masked like ours.
        with masked_output():
            return handler(args)
    except KeyboardInterrupt:
        print("benchbridge: error: interrupted (Ctrl-C); a rerun continues from what was stored", file=sys.stderr)
        return 130
    except BenchbridgeError as exc:
        from bridges.secrets import mask

        text = mask(f"benchbridge: error: {exc}")  # an upstream's message may quote a key
        print(text.splitlines()[0] if exc.exit_code == 2 else text, file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
