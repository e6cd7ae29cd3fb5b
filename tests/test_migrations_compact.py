"""m008 and m009 (the compact timeline and landings): a record written by the schema before them reads the same
after the upgrade, and rows written since continue it."""

from __future__ import annotations

import json
import sqlite3

from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.migrations import migrations
from formicary.store.packing import context_dictionary, pack
from formicary.store.writer import Writer

SYSTEM = [{"role": "system", "content": "you are a worker " * 20}, {"role": "user", "content": "task one"}]
REPLY1 = '{"thought": "read", "action": {"name": "read_file", "path": "a.txt"}}'
OBSERVATION = "".join(f"     {i}\tline {i} of a.txt\n" for i in range(60))
REPLY2 = '{"thought": "done", "action": {"name": "finish", "summary": "read it"}}'


def _m007_record(path) -> None:
    """A session as m007 stored it: ULID-keyed calls with a parent chain, a request compressed against the
    agent's context, actions and events numbered from one sequence, times in milliseconds and as text."""
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m008_compact_timeline")
    row = {"session_id": "S1", "agent_id": "A1", "role": "worker", "model": "m", "endpoint": "http://x/v1",
           "schema_name": "action", "prompt_tokens": 100, "completion_tokens": 10, "latency_ms": 2003.47,
           "queue_ms": 0.01}  # fmt: skip
    old["sessions"].insert({"id": "S1", "goal": "g", "repo": "/r", "branch": "main", "base_sha": "0" * 40,
                            "config": "{}", "status": "done", "started_at": "2026-01-01T00:00:00.000+00:00"})  # fmt: skip
    for agent, name in (("01AGENTONE0000000000A1B2C3", "worker-a1b2c3"), ("A1", "the root planner")):
        old["agents"].insert({"id": agent, "session_id": "S1", "cycle_id": "C1", "task_id": "T1", "role": "worker",
                              "name": name, "model": "m", "status": "done", "steps": 2, "prompt_tokens": 200,
                              "completion_tokens": 20, "started_at": "2026-01-01T00:00:00.100+00:00",
                              "ended_at": "2026-01-01T00:00:00.900+00:00"})  # fmt: skip
    for task, status in (("T1", "done"), ("T2", "failed")):
        old["tasks"].insert({"id": task, "session_id": "S1", "cycle_id": "C1", "parent_id": "T0", "kind": "work",
                             "depth": 1, "title": f"task {task}", "instructions": "do it", "files": '["a.txt"]',
                             "status": status, "attempts": 1, "handoff": '{"summary": "s"}' if task == "T1" else None,
                             "created_at": "2026-01-01T00:00:00.050+00:00",
                             "started_at": "2026-01-01T00:00:00.060+00:00"})  # fmt: skip
    old["event_log"].insert({"seq": 1, "session_id": "S1", "kind": "session_started", "data": '{"workers": 4}',
                             "created_at": "2026-01-01T00:00:00.000+00:00"})  # fmt: skip
    old["event_log"].insert({"seq": 2, "session_id": "S1", "kind": "agent_started", "agent_id": "A1",
                             "task_id": "T1", "data": '{"role": "worker"}',
                             "created_at": "2026-01-01T00:00:00.100+00:00"})  # fmt: skip
    old["llm_calls"].insert(row | {"seq": 3, "id": "01CALLONE", "request": pack(json.dumps(SYSTEM)),
                                   "response": REPLY1, "kept": 0, "created_at": 1767225600200})  # fmt: skip
    old["actions"].insert({"seq": 4, "session_id": "S1", "agent_id": "A1", "task_id": "T1", "step": 1,
                           "name": "read_file", "arguments": '{"path": "a.txt"}', "observation": pack(OBSERVATION),
                           "duration_ms": 12.34, "created_at": 1767225600300, "target": "a.txt"})  # fmt: skip
    new = [{"role": "user", "content": "OBSERVATION\n" + OBSERVATION}]
    against = context_dictionary(REPLY1, OBSERVATION)
    old["llm_calls"].insert(row | {"seq": 5, "id": "01CALLTWO", "parent_id": "01CALLONE", "kept": 3,
                                   "request": pack(json.dumps(new), against), "response": REPLY2,
                                   "error": None, "created_at": 1767225600400})  # fmt: skip
    old["event_log"].insert({"seq": 6, "session_id": "S1", "kind": "warning", "data": '{"message": "w"}',
                             "created_at": "2026-01-01T00:00:00.500+00:00"})  # fmt: skip
    branch = "formicary-tasks/S1/T1"
    old["commits"].insert({"id": "01COMMIT", "session_id": "S1", "task_id": "T1", "agent_id": "A1", "sha": "a" * 40,
                           "integrated_sha": "b" * 40, "branch": branch, "status": "integrated", "retries": 1,
                           "conflicts": 0, "duration_ms": 4395.95, "created_at": "2026-01-01T00:00:01.000+00:00",
                           "integrated_at": "2026-01-01T00:00:02.250+00:00"})  # fmt: skip
    old["commits"].insert({"id": "01COMMIT2", "session_id": "S1", "task_id": "T2", "sha": "c" * 40,
                           "branch": "kept/elsewhere", "status": "failed", "error": "conflict", "created_at": "t"})  # fmt: skip
    for attempt, result in ((1, "moved"), (2, "landed")):
        old["integrations"].insert({"id": f"01I{attempt}", "session_id": "S1", "task_id": "T1", "agent_id": "A1",
                                    "attempt": attempt, "result": result, "old_tip": "d" * 40, "new_tip": "e" * 40,
                                    "conflict_paths": '["a.txt"]' if attempt == 1 else None, "duration_ms": 12.5,
                                    "created_at": f"2026-01-01T00:00:0{attempt}.000+00:00"})  # fmt: skip
    old.conn.commit()
    old.conn.close()


def _landings(db: Database) -> dict:
    integrations = db.execute(
        "SELECT session_id, task_id, agent_id, attempt, result, old_tip, new_tip, conflict_paths, duration_ms, "
        "created_at FROM integrations ORDER BY created_at"
    ).fetchall()
    commits = [{k: v for k, v in c.items() if k != "id"} for c in queries.commits(db, "S1")]
    return {
        "commits": commits,
        "task_commits": [c["sha"] for c in queries.task_commits(db, "S1", "T1")],
        "commit_times": queries.commit_times(db, "S1"),
        "session": queries.get_session(db, "S1"),
        "integrations": integrations,
    }


def _reads(db: Database) -> dict:
    calls = queries.agent_calls(db, "A1")
    return {
        "events": queries.events_since(db, "S1"),
        "agent_events": queries.agent_events(db, "S1", "A1"),
        "messages": [c["messages"] for c in calls],
        "calls": [{k: v for k, v in c.items() if k not in ("id", "parent_id")} for c in calls],
        "actions": queries.actions(db, "A1"),
        "last_actions": queries.agent_last_actions(db, ["A1"]),
        "max_seq": queries.max_event_seq(db, "S1"),
        "last_activity": queries.last_activity(db, "S1"),
        "flags": queries.session_flags(db, "S1"),
        "tokens": queries.token_totals(db, "S1"),
        "landings": _landings(db),
        "agents": [
            queries.agents(db, "S1"),
            queries.agents_by_ids(db, ["A1"]),
            queries.agent_task_links(db, "S1"),
            queries.task_agents(db, "S1", "T1"),
        ],
        "tasks": [queries.tasks(db, "S1"), queries.tasks_by_ids(db, ["T2"])],
    }


def test_a_record_from_before_m008_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    _m007_record(path)
    before = _reads(store_db.connect(path, readonly=True))
    assert before["messages"][1] == [*SYSTEM, {"role": "assistant", "content": REPLY1},
                                     {"role": "user", "content": "OBSERVATION\n" + OBSERVATION}]  # fmt: skip
    assert before["landings"]["commits"][0]["branch"] == "formicary-tasks/S1/T1"
    db = store_db.connect(path)  # migrates
    assert {"m008_compact_timeline", "m009_compact_landings"} <= set(store_db.schema_version(db))
    assert db.execute("SELECT branch, typeof(created_at) FROM commit_rows ORDER BY id").fetchall() == [
        (None, "integer"),
        ("kept/elsewhere", "text"),
    ]
    assert _reads(db) == before
    calls = queries.agent_calls(db, "A1")
    assert (
        calls[1]["parent_id"] == calls[0]["id"]
        and queries.call_messages(db, calls[1]["id"]) == (before["messages"][1])
    )
    assert set(db.execute("SELECT name, typeof(started_at) FROM agent_rows").fetchall()) == {
        (None, "integer"),
        ("the root planner", "integer"),
    }, "the usual name is not stored"
    assert (
        db.execute("SELECT typeof(session), typeof(created_at), typeof(ended_at) FROM task_rows").fetchall()
        == [("integer", "integer", "null")] * 2
    )
    # the old texts and ids are stored once, as integers
    assert (
        db.execute("SELECT typeof(agent), typeof(profile), typeof(session) FROM calls").fetchall()
        == [("integer", "integer", "integer")] * 2
    )


def test_rows_written_after_m008_continue_the_timeline(tmp_path):
    path = tmp_path / "old.db"
    _m007_record(path)
    writer = Writer(path)
    writer.insert("actions", {"session_id": "S1", "agent_id": "A1", "task_id": "T1", "step": 2, "name": "finish",
                              "arguments": "{}", "observation": "done", "duration_ms": 0.5,
                              "created_at": store_db.now_ms(), "target": ""})  # fmt: skip
    writer.event("S1", "warning", agent_id="A1", message="after")
    writer.insert("agents", {"id": "01AGENTTWO0000000000D4E5F6", "session_id": "S1", "cycle_id": "C1",
                             "task_id": "T2", "role": "worker", "name": "worker-d4e5f6", "model": "m",
                             "status": "running", "started_at": store_db.now()})  # fmt: skip
    writer.update("agents", "01AGENTTWO0000000000D4E5F6", {"status": "done", "steps": 3, "prompt_tokens": 9,
                                                            "completion_tokens": 1, "ended_at": store_db.now()})  # fmt: skip
    writer.update("tasks", "T2", {"status": "pending", "error": "again", "ended_at": None})
    writer.flush()
    writer.close()
    db = store_db.connect(path)
    assert [(t["status"], t["error"], t["title"]) for t in queries.tasks_by_ids(db, ["T2"])] == [
        ("pending", "again", "task T2")
    ]
    events = queries.events_since(db, "S1")
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert [e["kind"] for e in events][-2:] == ["agent_step", "warning"]
    assert events[-1]["created_at"].endswith("+00:00") and events[-1]["agent_id"] == "A1"
    assert [a["duration_ms"] for a in queries.actions(db, "A1")] == [12.34, 0.5]
    assert queries.max_event_seq(db, "S1") == 8
    agent = queries.agents_by_ids(db, ["01AGENTTWO0000000000D4E5F6"])[0]
    assert (agent["name"], agent["status"], agent["steps"], agent["task_id"]) == (
        "worker-d4e5f6",
        "done",
        3,
        "T2",
    )
    assert agent["ended_at"].endswith("+00:00") and agent["ended_at"] >= agent["started_at"]
    assert "01AGENTTWO0000000000D4E5F6" in [a["id"] for a in queries.agents(db, "S1")]


def test_events_written_for_every_task_are_stored_compressed_and_read_back(tmp_path):
    from formicary.agents.session import events as ev
    from formicary.agents.session.record import Record

    writer = Writer(tmp_path / "f.db")
    record = Record(writer, "S1")
    for i in range(3):
        record.emit(ev.TaskEnded(task_id=f"T{i}", status="done", summary=f"task number {i} of the bench"))
    record.warning("plain")
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    events = queries.events_since(db, "S1")
    assert [e["data"].get("summary") for e in events] == [
        f"task number {i} of the bench" for i in range(3)
    ] + [None]
    assert events[-1]["data"] == {"message": "plain"}
    stored = [r[0] for r in db.execute("SELECT data FROM log ORDER BY seq")]
    assert [type(v) for v in stored] == [str, bytes, bytes, str], "the first of a kind is the dictionary"
    assert all(len(v) < 40 for v in stored[1:3])
