"""m014: a model call's role, model, endpoint and schema are one ``profiles`` row, a call's and a step's time
counts from its agent's start, a step's task is its agent's unless it says otherwise; every reader sees the
same columns, and a record from before reads the same after the upgrade."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.migrations import migrations
from formicary.store.writer import Writer

STARTED = "2026-01-01T00:00:00.000+00:00"
START_MS = 1767225600000


def _agent(writer: Writer, agent: str, task: str | None = "T1") -> None:
    writer.insert("agents", {"id": agent, "session_id": "S1", "cycle_id": "C1", "task_id": task, "role": "worker",
                             "name": agent, "model": "m", "status": "running", "started_at": STARTED})  # fmt: skip


def _call(writer: Writer, agent: str | None, at: int, **extra) -> None:
    writer.insert("llm_calls", {"id": f"X{at}", "session_id": "S1", "agent_id": agent, "role": "worker",
                                "model": "m", "endpoint": "http://a/v1", "schema_name": "action",
                                "request": "[]", "response": "r", "prompt_tokens": 10, "completion_tokens": 2,
                                "latency_ms": 2000.5, "prompt_ms": 123.456, "predicted_ms": 7.0,
                                "created_at": at} | extra)  # fmt: skip


def _step(writer: Writer, agent: str, task: str | None, at: int) -> None:
    writer.insert("actions", {"session_id": "S1", "agent_id": agent, "task_id": task, "step": 1,
                              "name": "read_file", "arguments": "{}", "observation": "o", "duration_ms": 1.0,
                              "created_at": at, "target": "a"})  # fmt: skip


def test_calls_and_steps_store_less_and_read_the_same(tmp_path):
    writer = Writer(tmp_path / "f.db")
    _agent(writer, "A")
    _agent(writer, "B", task=None)
    _call(writer, "A", START_MS + 2500)
    _call(writer, "A", START_MS + 5000, endpoint="http://b/v1", schema_name=None, parent_id="X1")
    writer.flush()  # (a worker's call waits for its step: see test_record_links)
    _call(writer, None, START_MS + 6000)  # no agent: its time since the epoch
    writer.flush()
    _step(writer, "A", "T1", START_MS + 2600)  # its agent's task: not stored
    _step(writer, "A", None, START_MS + 2700)  # none while its agent has one
    _step(writer, "A", "T9", START_MS - 10)  # another task; a time before its agent started
    _step(writer, "B", "T2", START_MS + 1)
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    raw = db.execute("SELECT profile, created_at FROM calls ORDER BY seq").fetchall()
    assert raw == [(1, -2501), (2, -5001), (1, START_MS + 6000)]
    assert db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 2
    calls = db.execute(
        "SELECT agent_id, role, model, endpoint, schema_name, created_at, latency_ms, prompt_ms, predicted_ms "
        "FROM llm_calls ORDER BY seq"
    ).fetchall()
    assert calls == [
        ("A", "worker", "m", "http://a/v1", "action", START_MS + 2500, 2000.5, 123.46, 7.0),
        ("A", "worker", "m", "http://b/v1", None, START_MS + 5000, 2000.5, 123.46, 7.0),
        (None, "worker", "m", "http://a/v1", "action", START_MS + 6000, 2000.5, 123.46, 7.0),
    ]
    assert db.execute("SELECT task, created_at FROM steps ORDER BY seq").fetchall() == [
        (None, -2601),
        (0, -2701),
        (db.execute("SELECT id FROM names WHERE name = 'T9'").fetchone()[0], START_MS - 10),
        (db.execute("SELECT id FROM names WHERE name = 'T2'").fetchone()[0], -2),
    ]
    steps = [(a["task_id"], a["created_at"]) for a in queries.actions(db, "A")]
    assert steps == [("T1", "2026-01-01T00:00:02.600+00:00"), (None, "2026-01-01T00:00:02.700+00:00"),
                     ("T9", "2025-12-31T23:59:59.990+00:00")]  # fmt: skip
    events = [(e["kind"], e["task_id"], e["created_at"]) for e in queries.events_since(db, "S1")]
    assert events[0] == ("llm_call", None, "2026-01-01T00:00:02.500+00:00")
    assert ("agent_step", "T2", "2026-01-01T00:00:00.001+00:00") in events
    assert queries.agent_calls(db, "A")[1]["parent_id"] == str(queries.agent_calls(db, "A")[0]["seq"])


def test_a_record_from_before_m014_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m014_call_profiles_and_agent_times")
    old.conn.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO agents (id, session_id, cycle_id, task_id, role, name, model, status, started_at) "
        "VALUES ('A', 'S1', 'C1', 'T1', 'worker', 'A', 'm', 'running', ?)",
        [STARTED],
    )
    for seq, schema in ((1, "action"), (2, None)):
        conn.execute(
            "INSERT INTO llm_calls (seq, session_id, agent_id, role, model, endpoint, schema_name, request, "
            "response, latency_ms, prompt_ms, created_at) VALUES (?, 'S1', 'A', 'worker', 'm', 'e', ?, '[]', 'r', "
            "2000.5, 12.5, ?)",
            [seq, schema, START_MS + seq],
        )
    conn.execute(
        "INSERT INTO actions (seq, session_id, agent_id, task_id, step, name, created_at, target) "
        "VALUES (3, 'S1', 'A', 'T1', 1, 'read_file', ?, 'a')",
        [START_MS + 3],
    )
    conn.commit()
    read = "SELECT seq, role, schema_name, created_at, prompt_ms FROM llm_calls ORDER BY seq"
    before = conn.execute(read).fetchall()
    conn.close()
    db = store_db.connect(path)
    assert "m014_call_profiles_and_agent_times" in store_db.schema_version(db)
    after = db.execute(read).fetchall()
    assert after == before and [r[2] for r in after] == ["action", None]
    assert [(a["task_id"], a["created_at"]) for a in queries.actions(db, "A")] == [
        ("T1", "2026-01-01T00:00:00.003+00:00")
    ]
    assert "idx_calls_agent" in {i.name for i in db["calls"].indexes}
