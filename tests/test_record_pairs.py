"""m016: a worker's call and the step it chose are one ``calls`` row; every reader sees the call and the step
as before (the step one place after the call in the timeline), and a record from before reads the same after
the upgrade."""

from __future__ import annotations

import sqlite3
import time

from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store import pairing, queries
from formicary.store.migrations import migrations
from formicary.store.packing import OBSERVATION, REPLY, Zipped
from formicary.store.writer import Writer

START_MS = 1767225600000
STARTED = "2026-01-01T00:00:00.000+00:00"
LISTING = "".join(f"src/file{i:03d}.txt\n" for i in range(80))


def _agent(writer: Writer, agent: str, task: str = "T1") -> None:
    writer.insert("agents", {"id": agent, "session_id": "S1", "cycle_id": "C1", "task_id": task, "role": "worker",
                             "name": agent, "model": "m", "status": "running", "started_at": STARTED})  # fmt: skip


def _call(writer: Writer, agent: str, n: int, at: int, role: str = "worker") -> None:
    reply = '{"thought": "t", "action": {"name": "list_files", "path": "src"}}'
    writer.insert("llm_calls", {"id": f"X{n}", "session_id": "S1", "agent_id": agent, "role": role, "model": "m",
                                "endpoint": "e", "schema_name": "action", "parent_id": "P" if n else None,
                                "kept": 1 if n else 0, "request": Zipped("[]", against=agent),
                                "response": Zipped(reply, remember=(agent, REPLY), shared="reply:worker"),
                                "prompt_tokens": 10, "completion_tokens": 2, "latency_ms": 2000.5,
                                "created_at": at})  # fmt: skip


def _step(writer: Writer, agent: str, step: int, at: int, task: str = "T1") -> None:
    writer.insert("actions", {"session_id": "S1", "agent_id": agent, "task_id": task, "step": step,
                              "name": "list_files", "arguments": Zipped('{"path": "src"}', against=agent),
                              "observation": Zipped(LISTING, remember=(agent, OBSERVATION),
                                                    shared="observation:list_files", step=(step, "list_files")),
                              "exit_code": None, "duration_ms": 1.25, "created_at": at,
                              "target": "src", "error": None})  # fmt: skip


def test_a_call_and_its_step_are_one_row_and_read_as_two(tmp_path):
    writer = Writer(tmp_path / "f.db")
    _agent(writer, "A")
    _agent(writer, "B")
    _call(writer, "A", 0, START_MS + 100)
    _call(writer, "B", 0, START_MS + 150)
    _step(writer, "A", 1, START_MS + 110)
    _step(writer, "B", 1, START_MS + 160)  # the same listing: stored as a reference to A's
    writer.event("S1", "warning", agent_id="A", message="w")
    _call(writer, "A", 1, START_MS + 300)
    _step(writer, "A", 2, START_MS + 310, task="T9")  # another task's step: stored apart
    _call(writer, "B", 1, START_MS + 400)  # no step follows: stored alone at the flush
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    held = db.execute("SELECT seq, step, step_at, typeof(observation) FROM calls ORDER BY seq").fetchall()
    assert held == [(1, 1, 10, "blob"), (3, 1, 10, "blob"), (6, None, None, "null"), (8, None, None, "null")]
    assert db.execute("SELECT seq FROM steps").fetchall() == [(7,)]
    assert db.execute(queries.LAST_SEQ_M016).fetchone()[0] == 8
    steps = [
        (a["seq"], a["step"], a["task_id"], a["observation"], a["created_at"])
        for a in queries.actions(db, "A")
    ]
    assert steps == [(2, 1, "T1", LISTING, "2026-01-01T00:00:00.110+00:00"),
                     (7, 2, "T9", LISTING, "2026-01-01T00:00:00.310+00:00")]  # fmt: skip
    assert [a["observation"] for a in queries.actions(db, "B")] == [LISTING]
    assert queries.actions(db, "A")[0]["arguments"] == '{"path": "src"}'
    assert queries.actions(db, "A")[0]["duration_ms"] == 1.25
    events = queries.events_since(db, "S1")
    assert [(e["seq"], e["kind"], e["agent_id"]) for e in events] == [
        (1, "llm_call", "A"), (2, "agent_step", "A"), (3, "llm_call", "B"), (4, "agent_step", "B"),
        (5, "warning", "A"), (6, "llm_call", "A"), (7, "agent_step", "A"), (8, "llm_call", "B"),
    ]  # fmt: skip
    assert events[1]["data"]["observation"] == LISTING[:300] and events[1]["data"]["target"] == "src"
    assert [e["seq"] for e in queries.events_since(db, "S1", 2, limit=2)] == [3, 4]
    assert [c["parent_id"] for c in queries.agent_calls(db, "A")] == [None, "1"]
    assert queries.max_event_seq(db, "S1") == 8


def test_a_call_waits_no_longer_than_its_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(pairing, "HOLD_S", 0.05)
    writer = Writer(tmp_path / "f.db")
    _agent(writer, "A")
    _call(writer, "A", 0, START_MS + 100)
    time.sleep(0.1)
    writer.event("S1", "warning", message="another agent's news")  # the held call goes first
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert [e["kind"] for e in queries.events_since(db, "S1")] == ["llm_call", "warning"]


def test_a_record_from_before_m016_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m016_calls_hold_their_steps")
    old.conn.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO agents (id, session_id, cycle_id, task_id, role, name, model, status, started_at) "
        "VALUES ('A', 'S1', 'C1', 'T1', 'worker', 'A', 'm', 'running', ?)",
        [STARTED],
    )
    conn.execute(
        "INSERT INTO llm_calls (seq, session_id, agent_id, role, model, endpoint, request, response, created_at) "
        "VALUES (1, 'S1', 'A', 'worker', 'm', 'e', '[]', 'r', ?)",
        [START_MS + 1],
    )
    conn.execute(
        "INSERT INTO actions (seq, session_id, agent_id, task_id, step, name, observation, created_at, target) "
        "VALUES (2, 'S1', 'A', 'T1', 1, 'read_file', 'o', ?, 'a')",
        [START_MS + 2],
    )
    conn.commit()
    read = "SELECT seq, kind, agent_id, task_id, created_at FROM events ORDER BY seq"
    before = conn.execute(read).fetchall()
    conn.close()
    writer = Writer(path)  # migrates
    _call(writer, "A", 1, START_MS + 300)
    _step(writer, "A", 2, START_MS + 310)
    writer.update("agents", "A", {"status": "done", "ended_at": STARTED})
    writer.flush()
    writer.close()
    db = store_db.connect(path)
    assert "m016_calls_hold_their_steps" in store_db.schema_version(db)
    after = db.execute(read).fetchall()
    assert after[:2] == before and [r[:3] for r in after[2:]] == [
        (3, "llm_call", "A"),
        (4, "agent_step", "A"),
    ]
    assert db.execute("SELECT last_seq FROM agent_rows").fetchone()[0] == 4, (
        "the agent's range holds its step"
    )
    assert [a["step"] for a in queries.actions(db, "A")] == [1, 2]
