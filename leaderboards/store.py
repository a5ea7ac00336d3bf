"""The results store: every record and run manifest, appended to an embedded SQLite database.

Writes are one transaction per framework run (WAL mode, busy timeout), so two runs at once do not
corrupt it and a run killed half way leaves every earlier transaction intact. Nothing is updated
or deleted: reruns add rows and readers pick the latest successful run per cell.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridges._records import Record

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
CREATE INDEX IF NOT EXISTS records_cell ON records(model, framework, benchmark, metric);
"""


class ResultsStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(SCHEMA)
            yield conn
        finally:
            conn.close()

    def add_run(self, manifest: dict[str, Any], records: list[Record]) -> int:
        """Stores one framework run and its records in one transaction; returns the run row id."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO runs(run_id, framework, config_name, config_hash, status, started, finished,"
                    " error, manifest) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        manifest["run_id"],
                        manifest["framework"],
                        manifest.get("config_name"),
                        manifest.get("config_hash"),
                        manifest["status"],
                        manifest.get("started"),
                        manifest.get("finished"),
                        manifest.get("error"),
                        json.dumps(manifest, ensure_ascii=False, sort_keys=True),
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
                        for r in records
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return row

    def records(self) -> list[Record]:
        """Every record ever stored, oldest first."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute("SELECT record FROM records ORDER BY id").fetchall()
        return [Record.model_validate_json(r[0]) for r in rows]

    def runs(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute("SELECT manifest FROM runs ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]
