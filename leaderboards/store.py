"""The results store: every record and run manifest, appended to an embedded SQLite database.

Writes are one transaction per framework run (WAL mode, `BEGIN IMMEDIATE`, busy timeout), so two
runs at once do not corrupt it and a run killed half way leaves every earlier transaction intact.
Nothing is updated or deleted: reruns add rows, readers pick the latest successful record per
cell (`latest_per_cell`) and the history stays queryable (`history`, `runs`).

The path is a setting: `results_db` in a run config (default `<work_dir>/results.sqlite`), or
`--db` on the command line.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bridges import BenchbridgeError
from bridges.records import Record, Sample
from bridges.sqlite import connect_wal
from leaderboards._secrets import key_env_names, redact, secret_values

# 2 added the samples table; a version-1 store gets it (empty) the next time it is opened.
SCHEMA_VERSION = 2
# What `bridges._runner.manifest` writes for every framework run; a manifest without one of these
# is a programming error, refused before anything is written.
MANIFEST_KEYS = (
    "run_id",
    "framework",
    "framework_version",
    "config_hash",
    "datasets",
    "models",
    "packages",
    "seed",
    "git_commit",
    "started",
    "finished",
    "status",
    "error",
)
ERROR_EXCERPT_CHARS = 4000

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    framework TEXT NOT NULL,
    config_name TEXT,
    config_hash TEXT,
    status TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT,
    n_records INTEGER NOT NULL,
    manifest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_row INTEGER NOT NULL REFERENCES runs(id),
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    framework TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    subset TEXT NOT NULL,
    metric TEXT NOT NULL,
    judge TEXT,
    status TEXT NOT NULL,
    time TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_row INTEGER NOT NULL REFERENCES runs(id),
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    framework TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    subset TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    grp TEXT,
    invalid INTEGER NOT NULL,
    scores TEXT NOT NULL,
    sample TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_cell ON records(model, framework, benchmark, metric);
CREATE INDEX IF NOT EXISTS samples_cell ON samples(model, framework, benchmark, subset, run_id);
CREATE INDEX IF NOT EXISTS samples_run ON samples(run_row);
CREATE INDEX IF NOT EXISTS samples_run_id ON samples(run_id);
CREATE INDEX IF NOT EXISTS records_run ON records(run_row);
CREATE INDEX IF NOT EXISTS runs_run_id ON runs(run_id);
"""

class SampleScores(NamedTuple):
    """A stored sample without its texts: where it belongs and how it was scored."""

    run_id: str
    model: str
    framework: str
    benchmark: str
    subset: str
    sample_id: str
    group: str | None
    invalid: bool
    scores: dict[str, float | None]


# Every table SCHEMA makes (and SQLite's own AUTOINCREMENT table): anything else is someone else's file.
OUR_TABLES = {*re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA), "sqlite_sequence"}

CellKey = tuple[str, str, str, str, str, str | None]  # model, framework, benchmark, subset, metric, judge


def cell_key(record: Record) -> CellKey:
    """What makes two records compete for the same board cell: later runs replace earlier ones."""
    return (record.model, record.framework, record.benchmark, record.subset, record.metric, record.judge)


def _instant(record: Record) -> datetime | str:
    return _parsed_time(record.time)


@functools.lru_cache(maxsize=65_536)  # a store's records share their run's few times: parsed once each
def _parsed_time(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text


def latest_per_cell(records: Iterable[Record]) -> dict[CellKey, Record]:
    """For every cell, its latest successful record, else its latest failed one.

    Latest means the newest `time`; on a tie the record later in `records` (i.e. stored later) wins.
    """
    ordered = sorted(enumerate(records), key=lambda pair: (_instant(pair[1]), pair[0]))
    best: dict[CellKey, Record] = {}
    for _, record in ordered:
        key = cell_key(record)
        held = best.get(key)
        if held is None or record.status == "ok" or held.status == "failed":
            best[key] = record
    return best


class ResultsStore:
    """One SQLite file; safe for several processes writing at once (each write is one transaction)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._checked = False  # an existing file was found to be ours (see `_check_is_ours`)

    def _open(self) -> sqlite3.Connection:
        """A connection with the schema in place; a path that is not (and cannot be) a results
        database is a one-line error naming it, and nothing is written to it."""
        if self.path.is_dir():
            raise BenchbridgeError(f"{self.path}: is a folder, not a results database (e.g. runs/results.sqlite)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchbridgeError(f"{self.path}: cannot create its folder ({exc.strerror or exc})") from None
        if not self._checked and self.path.is_file() and self.path.stat().st_size:
            self._check_is_ours()  # read-only: switching a stranger's file to WAL would already change it
        try:
            # synchronous=NORMAL is durable at every WAL checkpoint and never corrupts; a crash may lose
            # only the last commit, which the run that crashed would not have finished anyway.
            conn = connect_wal(self.path)
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from None
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._not_a_store(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_is_ours(self) -> None:
        """An existing file is SQLite and holds no tables but ours; opened read-only, so a wrong file is
        left exactly as it was."""
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(exc) from None
        strangers = tables - OUR_TABLES
        if strangers:
            raise BenchbridgeError(
                f"{self.path}: an SQLite database of something else (tables {', '.join(sorted(strangers))}); "
                "give a benchbridge results database or a new path"
            )
        self._checked = True

    def _not_a_store(self, exc: sqlite3.DatabaseError) -> BenchbridgeError:
        if "not a database" in str(exc) or "malformed" in str(exc):
            return BenchbridgeError(
                f"{self.path}: not an SQLite results database ({exc}); give a benchbridge results file or a new path"
            )
        return BenchbridgeError(f"{self.path}: cannot open the results database ({exc})")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def open(self) -> ResultsStore:
        """This store, opened once and its schema created: a bad path fails now, before a run starts."""
        self._open().close()
        return self

    def add_run(self, manifest: dict[str, Any], records: list[Record], samples: Sequence[Sample] = ()) -> int:
        """Stores one framework run, its records and its per-sample rows in one transaction; returns
        the run's row id (a run killed half way stores none of them).

        Secret values (see `leaderboards._secrets`) are masked in the manifest and every record, and
        the manifest's error is cut to its last `ERROR_EXCERPT_CHARS` characters.
        """
        missing = [k for k in MANIFEST_KEYS if k not in manifest]
        if missing:
            raise ValueError(f"run manifest lacks {', '.join(missing)}")
        owners = {(r.run_id, r.framework) for r in records} | {(s.run_id, s.framework) for s in samples}
        strangers = sorted(owners - {(manifest["run_id"], manifest["framework"])})
        if strangers:
            raise ValueError(f"records of {strangers} stored under run {manifest['run_id']}/{manifest['framework']}")
        secrets = secret_values(key_env_names(manifest.get("models") or []))
        manifest = {**manifest, "n_records": len(records)}
        if samples:  # what `check` counts; manifests of runs without samples stay as they were
            manifest["n_sample_rows"] = len(samples)
        if manifest["error"]:
            manifest["error"] = manifest["error"][-ERROR_EXCERPT_CHARS:]
        manifest_json = redact(json.dumps(manifest, ensure_ascii=False, sort_keys=True, default=str), secrets)
        clean = [Record.model_validate_json(redact(r.model_dump_json(), secrets)) for r in records]
        clean_samples = [Sample.model_validate_json(redact(s.model_dump_json(), secrets)) for s in samples]
        clean_manifest = json.loads(manifest_json)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO runs(run_id, framework, config_name, config_hash, status, started, finished,"
                    " error, n_records, manifest) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        clean_manifest["run_id"],
                        clean_manifest["framework"],
                        clean_manifest.get("config_name"),
                        clean_manifest["config_hash"],
                        clean_manifest["status"],
                        clean_manifest["started"],
                        clean_manifest["finished"],
                        clean_manifest["error"],
                        len(clean),
                        manifest_json,
                    ),
                )
                row = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO records(run_row, run_id, model, framework, benchmark, subset, metric, judge,"
                    " status, time, record) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            row,
                            r.run_id,
                            r.model,
                            r.framework,
                            r.benchmark,
                            r.subset,
                            r.metric,
                            r.judge,
                            r.status,
                            r.time,
                            r.model_dump_json(),
                        )
                        for r in clean
                    ],
                )
                conn.executemany(
                    "INSERT INTO samples(run_row, run_id, model, framework, benchmark, subset, sample_id, grp,"
                    " invalid, scores, sample) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            row,
                            s.run_id,
                            s.model,
                            s.framework,
                            s.benchmark,
                            s.subset,
                            s.sample_id,
                            s.group,
                            int(s.invalid),
                            json.dumps(s.scores),
                            s.model_dump_json(exclude_defaults=True),
                        )
                        for s in clean_samples
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return row

    def history(
        self,
        *,
        model: str | None = None,
        framework: str | None = None,
        benchmark: str | None = None,
        subset: str | None = None,
        metric: str | None = None,
        status: str | None = None,
        run_id: str | None = None,
        config_name: str | None = None,
    ) -> list[Record]:
        """Stored records matching every given filter, oldest first (all of them with no filter)."""
        filters = {
            "records.model": model,
            "records.framework": framework,
            "records.benchmark": benchmark,
            "records.subset": subset,
            "records.metric": metric,
            "records.status": status,
            "records.run_id": run_id,
            "runs.config_name": config_name,
        }
        base = "SELECT records.record FROM records JOIN runs ON runs.id = records.run_row"
        return [Record.model_validate_json(text) for text in self._select(base, filters, "records.id")]

    def records(self, config_name: str | None = None) -> list[Record]:
        """Every record ever stored (of one config's runs if `config_name`), oldest first."""
        return self.history(config_name=config_name)

    def samples(
        self,
        *,
        model: str | None = None,
        framework: str | None = None,
        benchmark: str | None = None,
        subset: str | None = None,
        run_id: str | None = None,
    ) -> list[Sample]:
        """Stored samples matching every given filter, in the order they were stored."""
        filters = {"model": model, "framework": framework, "benchmark": benchmark, "subset": subset, "run_id": run_id}
        return [Sample.model_validate_json(text) for text in self._select("SELECT sample FROM samples", filters, "id")]

    def sample_dicts(self, run_ids: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Stored samples as plain dicts (a `Sample`'s fields; defaults left out), of the given runs
        (default all), in the order stored: for exports over many samples, without validating each."""
        if not self.path.exists():
            return
        query = "SELECT sample FROM samples"
        args: tuple[str, ...] = ()
        if run_ids is not None:
            query += " WHERE run_id IN (SELECT value FROM json_each(?))"
            args = (json.dumps(sorted(set(run_ids))),)
        with self._connect() as conn:
            for (text,) in conn.execute(query + " ORDER BY id", args):
                yield json.loads(text)

    def sample_scores(self, run_ids: Iterable[str] | None = None) -> list[SampleScores]:
        """Stored samples' scores alone (no prompts or outputs), of the given runs (default all): what
        the statistics read, one small row each, so that a board over many samples stays fast."""
        if not self.path.exists():
            return []
        query = "SELECT run_id, model, framework, benchmark, subset, sample_id, grp, invalid, scores FROM samples"
        with self._connect() as conn:
            if run_ids is None:
                rows = conn.execute(query + " ORDER BY id").fetchall()
            else:
                wanted = sorted(set(run_ids))
                rows = conn.execute(
                    query + " WHERE run_id IN (SELECT value FROM json_each(?)) ORDER BY id", (json.dumps(wanted),)
                ).fetchall()
        return [
            SampleScores(run, model, framework, benchmark, subset, sample, group, bool(invalid), json.loads(scores))
            for run, model, framework, benchmark, subset, sample, group, invalid, scores in rows
        ]

    def runs(
        self,
        *,
        run_id: str | None = None,
        framework: str | None = None,
        status: str | None = None,
        config_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run manifests (one per framework run) matching every given filter, oldest first."""
        filters = {"run_id": run_id, "framework": framework, "status": status, "config_name": config_name}
        return [json.loads(text) for text in self._select("SELECT manifest FROM runs", filters, "id")]

    def _select(self, base: str, filters: dict[str, str | None], order: str) -> list[str]:
        """The one text column of `base`'s rows matching every non-None filter (column = value)."""
        if not self.path.exists():
            return []
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = ?" for k in used) or "1"
        with self._connect() as conn:
            return [row[0] for row in conn.execute(f"{base} WHERE {where} ORDER BY {order}", tuple(used.values()))]

    def latest(self, config_name: str | None = None) -> list[Record]:
        """The record each board cell shows: latest successful per cell, else latest failed."""
        return list(latest_per_cell(self.records(config_name)).values())

    def check(self) -> list[str]:
        """Problems found: SQLite's integrity check, and runs whose stored records are not all there."""
        self.require()
        with self._connect() as conn:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
            short = conn.execute(
                "SELECT runs.run_id, runs.framework, runs.n_records, COUNT(records.id) FROM runs"
                " LEFT JOIN records ON records.run_row = runs.id GROUP BY runs.id"
                " HAVING COUNT(records.id) != runs.n_records"
            ).fetchall()
            short_samples = conn.execute(
                "SELECT runs.run_id, runs.framework, json_extract(runs.manifest, '$.n_sample_rows') AS n,"
                " (SELECT COUNT(*) FROM samples WHERE samples.run_row = runs.id) AS c FROM runs"
                " WHERE n IS NOT NULL AND n != c"
            ).fetchall()
        problems += [f"run {r[0]}/{r[1]}: {r[3]} of {r[2]} records" for r in short]
        problems += [f"run {r[0]}/{r[1]}: {r[3]} of {r[2]} samples" for r in short_samples]
        return problems

    def require(self) -> ResultsStore:
        """This store, or a one-line error naming the path when the database does not exist."""
        if not self.path.is_file():
            raise BenchbridgeError(
                f"{self.path}: no results database here; `benchbridge run CONFIG` creates it "
                "(or pass --db with the path of an existing one)"
            )
        return self
