"""m017: an event's time is stored since its agent's start or its task's creation; every reader sees the time it
was written with, and a record from before reads the same after the upgrade."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.migrations import migrations
from formicary.store.writer import Writer

START_MS = 1767225600000
STARTED = "2026-01-01T00:00:00.000+00:00"


def _event(writer: Writer, kind: str, at: int, agent: str | None = None, task: str | None = None) -> None:
    writer.insert("event_log", {"session_id": "S1", "kind": kind, "agent_id": agent, "task_id": task,
                                "data": None, "created_at": at})  # fmt: skip


def test_an_event_counts_from_its_agent_or_its_task(tmp_path):
    writer = Writer(tmp_path / "f.db")
    writer.insert("tasks", {"id": "T1", "session_id": "S1", "cycle_id": "C1", "kind": "work", "title": "t",
                            "status": "pending", "created_at": START_MS + 1000})  # fmt: skip
    writer.insert("agents", {"id": "A", "session_id": "S1", "task_id": "T1", "role": "worker", "model": "m",
                             "status": "running", "started_at": STARTED})  # fmt: skip
    _event(writer, "task_created", START_MS + 1000, task="T1")
    _event(writer, "task_started", START_MS + 61000, task="T1")
    _event(writer, "agent_started", START_MS + 5, agent="A", task="T1")
    _event(writer, "agent_ended", START_MS - 5, agent="A", task="T1")  # before its agent started: as it came
    _event(writer, "warning", START_MS + 7, agent="B")  # an agent without a row: as it came
    _event(writer, "status", START_MS + 9)
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    stored = [r[0] for r in db.execute("SELECT created_at FROM log ORDER BY seq")]
    assert stored == [-1, -60001, -6, START_MS - 5, START_MS + 7, START_MS + 9]
    read = [(e["kind"], e["created_at"]) for e in queries.events_since(db, "S1")]
    assert read == [
        ("task_created", "2026-01-01T00:00:01.000+00:00"),
        ("task_started", "2026-01-01T00:01:01.000+00:00"),
        ("agent_started", "2026-01-01T00:00:00.005+00:00"),
        ("agent_ended", "2025-12-31T23:59:59.995+00:00"),
        ("warning", "2026-01-01T00:00:00.007+00:00"),
        ("status", "2026-01-01T00:00:00.009+00:00"),
    ]


def test_a_record_from_before_m017_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m017_event_times_since_agent_or_task")
    old.conn.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO agents (id, session_id, task_id, role, name, model, status, started_at) "
        "VALUES ('A', 'S1', 'T1', 'worker', 'A', 'm', 'running', ?)",
        [STARTED],
    )
    for seq, agent in ((1, "A"), (2, None)):
        conn.execute(
            "INSERT INTO event_log (seq, session_id, kind, agent_id, task_id, created_at) "
            "VALUES (?, 'S1', 'warning', ?, 'T1', ?)",
            [seq, agent, START_MS + seq],
        )
    conn.commit()
    read = "SELECT seq, kind, agent_id, task_id, created_at FROM events ORDER BY seq"
    before = conn.execute(read).fetchall()
    conn.close()
    db = store_db.connect(path)
    assert "m017_event_times_since_agent_or_task" in store_db.schema_version(db)
    assert db.execute(read).fetchall() == before
    assert [r[0] for r in db.execute("SELECT created_at FROM log ORDER BY seq")] == [
        START_MS + 1,
        START_MS + 2,
    ]
