"""m013: an agent's steps are found by the range of the timeline its row names (``steps`` has no index on the
agent), and SHAs are stored as bytes; records from before read the same after the upgrade. An agent's start
and end events are read from its row."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.conversations import step_range
from formicary.store.migrations import migrations
from formicary.store.schema_m013 import UNBOUNDED
from formicary.store.writer import Writer

SHA = "0123456789abcdef0123456789abcdef01234567"


def _agent(writer: Writer, agent: str, role: str = "worker") -> None:
    writer.insert("agents", {"id": agent, "session_id": "S1", "cycle_id": "C1", "task_id": f"T{agent}",
                             "role": role, "name": agent, "model": "m", "status": "running",
                             "started_at": store_db.now()})  # fmt: skip


def _step(writer: Writer, agent: str, step: int) -> None:
    writer.insert("actions", {"session_id": "S1", "agent_id": agent, "task_id": f"T{agent}", "step": step,
                              "name": "read_file", "arguments": '{"path": "a"}', "observation": f"{agent} {step}",
                              "duration_ms": 1.0, "created_at": store_db.now_ms(), "target": "a"})  # fmt: skip


def _end(writer: Writer, agent: str) -> None:
    writer.update("agents", agent, {"status": "done", "ended_at": store_db.now()})


def test_an_agents_steps_are_read_from_its_range_of_the_timeline(tmp_path):
    writer = Writer(tmp_path / "f.db")
    writer.event("S1", "before")
    _agent(writer, "A")
    _step(writer, "A", 1)
    _agent(writer, "B")
    _step(writer, "B", 1)
    _step(writer, "A", 2)
    _end(writer, "A")
    writer.event("S1", "between")
    _step(writer, "B", 2)
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert not db["steps"].indexes and not db["log"].indexes  # found by seq: no index written per row
    assert queries.max_event_seq(db, "S1") == 6
    ranges = {
        name: (first, last)
        for name, first, last in db.execute(
            "SELECT n.name, r.first_seq, r.last_seq FROM agent_rows r JOIN names n ON n.id = r.id"
        )
    }
    assert ranges == {"A": (1, 4), "B": (2, None)}  # A: after 'before', to its last step; B: running
    assert [a["observation"] for a in queries.actions(db, "A")] == ["A 1", "A 2"]
    assert [a["observation"] for a in queries.last_actions_of(db, "B")] == ["B 1", "B 2"]
    assert {k: v["step"] for k, v in queries.agent_last_actions(db, ["A", "B"]).items()} == {"A": 2, "B": 2}
    kinds = [e["kind"] for e in queries.agent_events(db, "S1", "A")]
    assert kinds == ["agent_step", "agent_step"]
    # the range is what is read: a step outside it is not found
    db.execute("UPDATE agent_rows SET last_seq = 3 WHERE id = (SELECT id FROM names WHERE name = 'A')")
    assert [a["observation"] for a in queries.actions(db, "A")] == ["A 1"]


def test_shas_are_stored_as_bytes_and_read_as_hex(tmp_path):
    writer = Writer(tmp_path / "f.db")
    writer.insert("commits", {"session_id": "S1", "task_id": "T1", "agent_id": "A", "sha": SHA,
                              "integrated_sha": SHA.upper(), "branch": "b", "status": "integrated",
                              "created_at": store_db.now()})  # fmt: skip
    writer.insert("integrations", {"session_id": "S1", "task_id": "T1", "agent_id": "A", "attempt": 1,
                                   "result": "landed", "old_tip": SHA, "new_tip": "not a sha",
                                   "created_at": store_db.now()})  # fmt: skip
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    raw = db.execute("SELECT sha, integrated_sha FROM commit_rows").fetchone()
    assert raw == (bytes.fromhex(SHA), SHA.upper())  # upper case would not read back the same: kept as text
    commit = queries.commits(db, "S1")[0]
    assert (commit["sha"], commit["integrated_sha"]) == (SHA, SHA.upper())
    landing = db.execute("SELECT old_tip, new_tip FROM integrations").fetchone()
    assert landing == (SHA, "not a sha")
    assert db.execute("SELECT typeof(old_tip) FROM integration_rows").fetchone()[0] == "blob"


def test_a_record_from_before_m013_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m013_step_ranges_and_binary_shas")
    old.conn.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO event_log (seq, session_id, kind, created_at) VALUES (1, 'S1', 'before', 0)")
    for agent, ended in (("A", "2026-01-01T00:00:01.000+00:00"), ("P", "2026-01-01T00:00:01.000+00:00")):
        conn.execute(
            "INSERT INTO agents (id, session_id, cycle_id, task_id, role, name, model, status, started_at, ended_at) "
            "VALUES (?, 'S1', 'C1', 'T1', ?, ?, 'm', 'done', '2026-01-01T00:00:00.000+00:00', ?)",
            [agent, "worker" if agent == "A" else "planner", agent, ended],
        )
    for seq, step in ((2, 1), (4, 2)):
        conn.execute(
            "INSERT INTO actions (seq, session_id, agent_id, task_id, step, name, observation, created_at, target) "
            "VALUES (?, 'S1', 'A', 'T1', ?, 'read_file', ?, 0, 'a')",
            [seq, step, f"A {step}"],
        )
    conn.execute(
        "INSERT INTO commits (session_id, task_id, agent_id, sha, integrated_sha, branch, status, created_at) "
        "VALUES ('S1', 'T1', 'A', ?, ?, 'b', 'integrated', '2026-01-01T00:00:02.000+00:00')",
        [SHA, SHA],
    )
    conn.commit()
    conn.close()
    db = store_db.connect(path)
    assert "m013_step_ranges_and_binary_shas" in store_db.schema_version(db)
    ranges = {
        name: (first, last)
        for name, first, last in db.execute(
            "SELECT n.name, r.first_seq, r.last_seq FROM agent_rows r JOIN names n ON n.id = r.id"
        )
    }
    assert ranges == {"A": (2, None), "P": (None, None)}  # from its first step on; no steps: anywhere
    assert [a["observation"] for a in queries.actions(db, "A")] == ["A 1", "A 2"]
    assert queries.commits(db, "S1")[0]["sha"] == SHA  # stored as text before, read as it was


def test_an_agents_start_and_end_are_read_from_its_row(tmp_path):
    from formicary.agents.roles.context import Agent
    from formicary.agents.session.record import Record

    writer = Writer(tmp_path / "f.db")
    record = Record(writer, "S1")
    agent = Agent(id="01AGENTONE0000000000A1B2C3", role="worker", name="worker-a1b2c3", task_id="T1")
    record.agent_started(agent, "qwen", "C1")
    agent.steps, agent.prompt_tokens, agent.completion_tokens = 3, 900, 70
    record.agent_ended(agent, "done")
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert [r[0] for r in db.execute("SELECT data FROM log ORDER BY seq")] == [None, None]  # the row says it
    events = queries.events_since(db, "S1")
    assert [(e["kind"], e["agent_id"], e["data"]) for e in events] == [
        ("agent_started", agent.id, {"role": "worker", "name": "worker-a1b2c3", "model": "qwen"}),
        (
            "agent_ended",
            agent.id,
            {"status": "done", "steps": 3, "prompt_tokens": 900, "completion_tokens": 70},
        ),
    ]
    assert [e["data"] for e in queries.agent_events(db, "S1", agent.id)] == [e["data"] for e in events]


def test_a_planners_long_life_adds_nothing_to_the_range_read(tmp_path):
    writer = Writer(tmp_path / "f.db")
    _agent(writer, "P", role="planner")
    for i in range(5):
        writer.event("S1", "tick", n=i)
    _agent(writer, "W")
    _step(writer, "W", 1)
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert step_range(db, ["P", "W"]) == (" AND seq BETWEEN ? AND ?", [5, UNBOUNDED])  # W's alone
    assert step_range(db, ["P"])[1] == [1, 0]  # nothing: planners take no steps
    assert step_range(db, ["P", "unknown"]) == ("", [])  # an agent the record does not know: everything
    assert [a["step"] for a in queries.agent_last_actions(db, ["P", "W"]).values()] == [1]
