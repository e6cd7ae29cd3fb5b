"""Opening the SQLite record: WAL, a busy timeout, migrations applied on open; ids and timestamps."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from . import migrations


def new_id() -> str:
    """A sortable ULID string: rows sort by creation time without a separate index."""
    from ulid import ULID

    return str(ULID())


def now() -> str:
    """UTC timestamp with milliseconds, ISO 8601, sortable as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def now_ms() -> int:
    """UTC milliseconds since the epoch: the compact timestamp of the rows written most (calls, actions), which
    readers show as :func:`now`'s text (see :func:`iso`)."""
    return time.time_ns() // 1_000_000


def iso(value: int | str | None) -> str | None:
    """A stored timestamp as :func:`now`'s ISO text (milliseconds since the epoch, or already text)."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")
    return value


def connect(path: Path | str, *, migrate: bool = True, readonly: bool = False) -> Database:
    """Open the record at ``path`` on the calling thread (sqlite connections belong to one thread).

    Args:
        path: the SQLite file; its folder is created if missing.
        migrate: apply pending migrations (the writer does; readers of a live file need not).
        readonly: open with ``mode=ro`` so a reader can never write by mistake.
    """
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    db = Database(conn)
    if migrate and not readonly:
        migrations.apply(db)
    return db


def record_problem(path: Path | str) -> str | None:
    """Why the file at ``path`` cannot be the record (one line), or None (it is one, or does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"cannot use the record at {path}: {exc} (--db or FORMICARY_DB names another file)"
    return None


def schema_version(db: Database) -> list[str]:
    """Names of the migrations applied to ``db``, oldest first."""
    return [m.name for m in migrations.migrations.applied(db)]
