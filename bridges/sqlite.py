"""Opening the project's SQLite files (results store, response cache) for use by several processes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_S = 60.0


def connect_wal(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL journal, `synchronous=NORMAL` and a 60 s busy timeout.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at
    once instead of calling the busy handler when another process holds one (measured: 4 of 160
    connections racing to create one file failed). So the switch is retried until the busy timeout;
    the mode is stored in the file, so only its first users ever race.
    """
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    break
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        # NORMAL in WAL mode: a commit survives the process being killed (not a power cut); no fsync per commit.
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn
