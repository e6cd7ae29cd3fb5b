"""m015: a model call's parent is stored as "its agent's previous call", and a task's events are stored without
what its task's row and its landed commit's row say; every reader sees what was sent, and a record from before
reads the same after the upgrade."""

from __future__ import annotations

import json
import sqlite3

from sqlite_utils import Database

from formicary.agents.roles.context import Handoff, Task
from formicary.agents.session import events as ev
from formicary.agents.session.record import Record
from formicary.agents.status import TaskKind, TaskStatus
from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.migrations import migrations
from formicary.store.writer import Writer

STARTED = "2026-01-01T00:00:00.000+00:00"


def _call(writer: Writer, agent: str, n: int, parent: bool) -> None:
    writer.insert("llm_calls", {"id": f"X{n}", "session_id": "S1", "agent_id": agent, "role": "worker",
                                "model": "m", "endpoint": "e", "request": "[]", "response": f"r{n}",
                                "parent_id": "P" if parent else None, "kept": 1 if parent else None,
                                "created_at": 1767225600000 + n})  # fmt: skip


def test_a_parent_is_stored_as_the_previous_call_and_read_as_its_seq(tmp_path):
    writer = Writer(tmp_path / "f.db")
    for n, (agent, parent) in enumerate([("A", False), ("B", False), ("A", True), ("B", True), ("A", True)]):
        _call(writer, agent, n, parent)
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert [r[0] for r in db.execute("SELECT parent FROM calls ORDER BY seq")] == [None, None, 0, 0, 0]
    parents = db.execute("SELECT seq, parent_id FROM llm_calls ORDER BY seq").fetchall()
    assert parents == [(1, None), (2, None), (3, "1"), (4, "2"), (5, "3")]
    assert [c["parent_id"] for c in queries.agent_calls(db, "A")] == [None, "1", "3"]


def test_a_record_from_before_m015_reads_the_same_after_it(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m015_previous_call_and_landed_commits")
    old.conn.close()
    writer = Writer(tmp_path / "unused.db")  # (a writer migrates: write the old record by hand)
    writer.close()
    conn = sqlite3.connect(path)
    for seq, agent, parent in ((1, "A", None), (2, "B", None), (3, "A", "1")):
        conn.execute(
            "INSERT INTO llm_calls (seq, session_id, agent_id, role, model, endpoint, request, response, "
            "parent_id, created_at) VALUES (?, 'S1', ?, 'worker', 'm', 'e', '[]', 'r', ?, 1)",
            [seq, agent, parent],
        )
    conn.execute(
        "INSERT INTO commits (session_id, task_id, sha, status, created_at) VALUES ('S1', 'T1', ?, 'integrated', 1)",
        ["a" * 40],
    )
    conn.commit()
    read = "SELECT seq, agent_id, parent_id FROM llm_calls ORDER BY seq"
    before = conn.execute(read).fetchall()
    assert before == [(1, "A", None), (2, "B", None), (3, "A", "1")]
    assert conn.execute("SELECT parent FROM calls WHERE seq = 3").fetchone() == (1,)
    conn.close()
    db = store_db.connect(path)
    assert "m015_previous_call_and_landed_commits" in store_db.schema_version(db)
    assert db.execute(read).fetchall() == before
    db.execute(
        "INSERT INTO llm_calls (seq, session_id, agent_id, role, model, endpoint, request, response, parent_id, "
        "created_at) VALUES (4, 'S1', 'A', 'worker', 'm', 'e', '[]', 'r', 'X', 2)"
    )
    assert db.execute(read).fetchall()[-1] == (4, "A", "3")
    indexes = {i.name for i in db["commit_rows"].indexes}
    assert "idx_commit_rows_task" in indexes and "idx_commit_rows_session" not in indexes
    assert [c["sha"] for c in queries.commits(db, "S1")] == ["a" * 40]


def _landing(writer: Writer, task: str, sha: str, retries: int = 0) -> None:
    writer.insert("commits", {"id": f"C{task}", "session_id": "S1", "task_id": task, "agent_id": "W",
                              "sha": sha, "integrated_sha": "b" * 40, "status": "integrated", "retries": retries,
                              "conflicts": 0, "duration_ms": 1.5, "created_at": STARTED})  # fmt: skip


def test_task_events_are_stored_without_what_their_rows_say_and_read_back_whole(tmp_path):
    writer = Writer(tmp_path / "f.db")
    record = Record(writer, "S1")
    shown: list[ev.Event] = []
    record.listeners.append(shown.append)
    tasks = [
        Task(id=f"T{i}", cycle_id="C1", kind=TaskKind.WORK, title=f"task {i}", parent_id="P", depth=1)
        for i in range(3)
    ]
    tasks.append(Task(id="R", cycle_id="C1", kind=TaskKind.PLANNER, title="the root"))
    for task in tasks:
        record.task_created(task)
    for task in tasks[:3]:
        task.attempts = 1
        record.task_started(task)
    tasks[2].attempts = 2
    record.task_started(tasks[2])  # another attempt: stored
    _landing(writer, "T0", "a" * 40)
    record.commit_landed(
        "W", "T0", sha="a" * 40, integrated_sha="b" * 40, retries=0, conflicts=0, title="task 0"
    )
    _landing(writer, "T1", "c" * 40, retries=2)
    # the event names another commit than the row (the row's is the merge made on the task branch)
    record.commit_landed("W", "T1", sha="d" * 40, integrated_sha="b" * 40, retries=2, conflicts=1, title="task 1",
                         refusals=1, gate_ms=12.5)  # fmt: skip
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    stored = db.execute(
        "SELECT n.name, l.data FROM log l JOIN names n ON n.id = l.kind ORDER BY l.seq"
    ).fetchall()
    kinds = [kind for kind, _ in stored]
    assert kinds == ["task_created"] * 4 + ["task_started"] * 4 + ["commit_landed"] * 2
    assert [data for _, data in stored[:6]] == [None] * 6, "all of it is in the task's row"
    assert stored[7][1] is not None and stored[8][1] is None and stored[9][1] is not None
    read = [ev.from_row(row) for row in queries.events_since(db, "S1")]
    assert [e.data() for e in read] == [e.data() for e in shown]
    assert [(e.kind, e.task_id) for e in read] == [(e.kind, e.task_id) for e in shown]
    assert read[-1].data()["sha"] == "d" * 40 and read[-2].data()["sha"] == "a" * 40


def test_a_handoff_names_its_landed_commit_through_the_commit_row(tmp_path):
    writer = Writer(tmp_path / "f.db")
    record = Record(writer, "S1")
    tasks = [Task(id=f"T{i}", cycle_id="C1", kind=TaskKind.WORK, title=f"task {i}") for i in range(3)]
    for task in tasks:
        record.task_created(task)
    _landing(writer, "T0", "a" * 40)
    _landing(writer, "T1", "c" * 40)
    for task, commit in zip(tasks, ("b" * 40, "e" * 40, None), strict=True):
        handoff = Handoff(task.id, task.title, TaskStatus.DONE, f"wrote {task.id} ü", "n", commit=commit)
        record.task_ended(task, TaskStatus.DONE, handoff=handoff)
    record.task_row("T0", TaskStatus.DONE, error="later", ended=True)  # another column changes: it stays lean
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    stored = [type(r[0]) for r in db.execute("SELECT handoff FROM task_rows ORDER BY id")]
    assert stored == [bytes, str, str], "only the commit its landed row names is left out"
    handoffs = {t["id"]: json.loads(t["handoff"]) for t in queries.tasks(db, "S1")}
    assert handoffs == {
        "T0": {"summary": "wrote T0 ü", "notes": "n", "commit": "b" * 40},
        "T1": {"summary": "wrote T1 ü", "notes": "n", "commit": "e" * 40},
        "T2": {"summary": "wrote T2 ü", "notes": "n", "commit": None},
    }
    assert queries.tasks(db, "S1")[0]["error"] == "later"
