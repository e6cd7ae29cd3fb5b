"""Read queries over the record, for the CLI, the TUI and crash recovery. Readers use their own connection."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from .conversations import (
    Contexts,
    RecordTexts,
    action_texts,
    agent_calls,
    call_messages,
    dictionaries,
    holds_steps,
    log_table,
    read_texts,
    step_range,
)
from .db import iso
from .packing import unpack
from .schema_m008 import LAST_SEQ
from .schema_m013 import hex_of
from .schema_m016 import LAST_SEQ as LAST_SEQ_M016
from .schema_m016 import step_event

ROW_EVENTS = {
    "agent_started": {"role": "role", "name": "name", "model": "model"},
    "agent_ended": {
        "status": "status",
        "steps": "steps",
        "prompt_tokens": "prompt_tokens",
        "completion_tokens": "completion_tokens",
    },
}
"""Events stored without their data since it is what the agent's row says (``agents.session.record``): per
kind, each key of the data and the ``agents`` column it is."""
TASK_EVENTS = {
    "task_created": {
        "title": "title",
        "kind": "kind",
        "parent_id": "parent_id",
        "depth": "depth",
        "cycle_id": "cycle_id",
    },
    "task_started": {"title": "title", "kind": "kind"},
    "commit_landed": {"title": "title"},
}
"""Events whose data repeats their task's row (written before them): stored without those keys (m015), read
from the ``tasks`` row. Per kind, each key and the ``tasks`` column it is."""
LANDED_EVENTS = {
    "commit_landed": {
        "sha": "sha",
        "integrated_sha": "integrated_sha",
        "retries": "retries",
        "conflicts": "conflicts",
    }
}
"""... and those repeating their task's landed commit row: stored without the keys whose values the row has
(``Writer.landed``), read from the ``commits`` row of the task that landed."""
IMPLIED = {"task_started": {"attempt": 1}, "commit_landed": {"refusals": 0, "gate_ms": 0.0}}
"""Keys of these events not stored when they have these values (the usual ones)."""


LANDED_COMMITS = (
    f"SELECT k.name AS task_id, {hex_of('c.sha')} AS sha, {hex_of('c.integrated_sha')} AS integrated_sha, "
    "c.retries, c.conflicts FROM names k JOIN commit_rows c ON c.task = k.id WHERE k.name IN ({}) "
    "AND c.status = (SELECT id FROM names WHERE name = 'integrated')"
)
"""The landed commit rows of some tasks (the ``commits`` view's outer joins cannot search by task)."""


def lean_event_data(kind: str, data: dict[str, Any], landed: dict[str, Any]) -> dict[str, Any]:
    """``data`` of a ``kind`` event as stored: without what its task's row, its landed commit's row
    (``landed``: what that row says) or :data:`IMPLIED` give back (:func:`_task_event_data` reads it)."""
    implied = IMPLIED.get(kind, {})
    derived = TASK_EVENTS.get(kind, {})
    return {
        key: value
        for key, value in data.items()
        if key not in derived
        and not (key in landed and landed[key] == value)
        and not (key in implied and implied[key] == value and type(implied[key]) is type(value))
    }


__all__ = ["Contexts", "RecordTexts", "agent_calls", "call_messages", "dictionaries", "log_table"]

SESSION_SUMMARY = """
SELECT s.id, s.goal, s.repo, s.branch, s.status, s.stop_reason, s.started_at, s.ended_at, s.pid,
       (SELECT COUNT(*) FROM cycles c WHERE c.session_id = s.id) AS cycles,
       (SELECT COUNT(*) FROM tasks t WHERE t.session_id = s.id AND t.kind = 'work') AS tasks,
       (SELECT COUNT(*) FROM tasks t WHERE t.session_id = s.id AND t.kind = 'work' AND t.status = 'done')
           AS tasks_done,
       (SELECT COUNT(*) FROM commits m WHERE m.session_id = s.id AND m.status = 'integrated') AS commits,
       (SELECT v.decision FROM verdicts v WHERE v.session_id = s.id ORDER BY v.created_at DESC LIMIT 1)
           AS last_verdict
FROM sessions s
"""


def list_sessions(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """Newest first, with counts for the browser and ``formicary sessions``."""
    return list(db.query(SESSION_SUMMARY + " ORDER BY s.started_at DESC LIMIT ?", [limit]))


def get_session(db: Database, session_id: str) -> dict[str, Any] | None:
    rows = list(db.query(SESSION_SUMMARY + " WHERE s.id = ?", [session_id]))
    return rows[0] if rows else None


def find_session(db: Database, prefix: str | None) -> dict[str, Any] | None:
    """The session whose id starts with ``prefix`` (ids are ULIDs; a few characters suffice), else the newest."""
    if not prefix:
        rows = list_sessions(db, limit=1)
        return rows[0] if rows else None
    rows = list(
        db.query(SESSION_SUMMARY + " WHERE s.id LIKE ? ORDER BY s.started_at DESC", [prefix.upper() + "%"])
    )
    return rows[0] if len(rows) == 1 else None


def tasks(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM tasks WHERE session_id = ? ORDER BY id", [session_id]))


def cycles(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM cycles WHERE session_id = ? ORDER BY number", [session_id]))


def verdicts(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM verdicts WHERE session_id = ? ORDER BY created_at", [session_id]))


def agents(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM agents WHERE session_id = ? ORDER BY id", [session_id]))


def actions(db: Database, agent_id: str, after_step: int = -1) -> list[dict[str, Any]]:
    within, bounds = step_range(db, [agent_id])
    rows = list(
        db.query(
            f"SELECT * FROM actions WHERE agent_id = ? AND step > ?{within} ORDER BY step",
            [agent_id, after_step, *bounds],
        )
    )
    return action_texts(db, agent_id, rows)


def commits(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM commits WHERE session_id = ? ORDER BY created_at", [session_id]))


def events_since(db: Database, session_id: str, seq: int = 0, limit: int = 5000) -> list[dict[str, Any]]:
    """The timeline after ``seq``: how a live or attached UI follows a session."""
    if holds_steps(db):  # the steps held by calls are searched by the call's seq (see store.schema_m016)
        sql = (
            "SELECT * FROM events_rows WHERE session_id = ? AND seq > ? UNION ALL "
            f"SELECT * FROM ({step_event(' AND c.seq >= ?')}) WHERE session_id = ? ORDER BY seq LIMIT ?"
        )
        params: list[Any] = [session_id, seq, seq, session_id, limit]
    else:
        sql = "SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        params = [session_id, seq, limit]
    return _event_data(db, list(db.query(sql, params)))


def _event_data(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of the ``events`` view with ``data`` as a dict; an ``agent_step`` whose action stored its
    observation compressed (the view cannot cut a BLOB) gets the observation's start from its ``actions`` row."""
    missing: dict[int, dict[str, Any]] = {}
    # the data of the kinds written for every task is compressed (see agents.session.record)
    shared = dictionaries(db)
    for row in rows:
        row["data"] = json.loads(unpack(row["data"], shared=shared) or "{}") if row["data"] else {}
        if row["kind"] == "agent_step" and row["data"].get("observation") is None:
            missing[row["seq"]] = row["data"]
    held = holds_steps(db) if missing else False
    for chunk in _chunks(list(missing)):
        sql = f"SELECT seq, observation FROM actions WHERE seq IN ({_in_clause(chunk)})"
        if held:  # (the view's seq of a step held by its call is not searchable)
            sql = (
                f"SELECT seq, observation FROM steps WHERE seq IN ({_in_clause(chunk)}) UNION ALL "
                f"SELECT seq + 1, observation FROM calls WHERE seq IN ({_in_clause(chunk)}) AND step IS NOT NULL"
            )
            chunk = chunk + [s - 1 for s in chunk]
        for found in db.execute(sql, chunk).fetchall():
            missing[found[0]]["observation"] = (unpack(found[1], shared=shared) or "")[:300]
    _row_event_data(
        db, [row for row in rows if row["kind"] in ROW_EVENTS and not row["data"] and row["agent_id"]]
    )
    _task_event_data(db, [row for row in rows if row["kind"] in TASK_EVENTS and row["task_id"]])
    return rows


def _task_event_data(db: Database, rows: list[dict[str, Any]]) -> None:
    """A task's event stored without what its task's row or landed commit's row says (m015): read from them.
    An event that stored everything (written before m015) costs no look-up."""
    lean = [row for row in rows if any(key not in row["data"] for key in TASK_EVENTS[row["kind"]])]
    if not lean:
        return
    ids = sorted({row["task_id"] for row in lean})
    found: dict[str, dict[str, Any]] = {}
    landed: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for task in db.query(f"SELECT * FROM tasks WHERE id IN ({_in_clause(chunk)})", chunk):
            found[task["id"]] = task
        if any(row["kind"] in LANDED_EVENTS for row in lean):
            for commit in db.query(LANDED_COMMITS.format(_in_clause(chunk)), chunk):
                landed[commit["task_id"]] = commit
    for row in lean:
        data, kind = row["data"], row["kind"]
        for source, keys in ((found, TASK_EVENTS[kind]), (landed, LANDED_EVENTS.get(kind, {}))):
            stored = source.get(row["task_id"])
            for key, column in keys.items():
                if key not in data and stored is not None:
                    data[key] = stored[column]
        for key, value in IMPLIED.get(kind, {}).items():
            data.setdefault(key, value)


def _row_event_data(db: Database, rows: list[dict[str, Any]]) -> None:
    """An agent's start or end stored without its data (what the agent's row says): read from the row."""
    ids = sorted({row["agent_id"] for row in rows})
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for agent in db.query(f"SELECT * FROM agents WHERE id IN ({_in_clause(chunk)})", chunk):
            found[agent["id"]] = agent
    for row in rows:
        agent = found.get(row["agent_id"])
        if agent is not None:
            row["data"] = {key: agent[column] for key, column in ROW_EVENTS[row["kind"]].items()}


def token_totals(db: Database, session_id: str) -> tuple[int, int]:
    row = next(
        db.query(
            "SELECT COALESCE(SUM(prompt_tokens),0) p, COALESCE(SUM(completion_tokens),0) c "
            "FROM llm_calls WHERE session_id = ?",
            [session_id],
        )
    )
    return int(row["p"]), int(row["c"])


def running_sessions(db: Database) -> list[dict[str, Any]]:
    """Sessions the record says are running or paused (their ``pid`` tells whether that is still true)."""
    return list(db.query("SELECT id, pid FROM sessions WHERE status IN ('running', 'paused')"))


def sessions_ending_with(db: Database, suffix: str) -> list[dict[str, Any]]:
    """Sessions whose id ends with ``suffix`` (an id's last characters, as the TUI shows them)."""
    return list(db.query("SELECT id FROM sessions WHERE id LIKE ?", [f"%{suffix.upper()}"]))


def pending_controls(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT * FROM controls WHERE session_id = ? AND consumed_at IS NULL ORDER BY seq", [session_id]
        )
    )


# -- reads for the TUI: how a session screen rebuilds its panes and follows the timeline ------------------


def _in_clause(ids: list[Any]) -> str:
    return ", ".join("?" * len(ids))


def _chunks(ids: list[Any], size: int = 500) -> list[list[Any]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def max_event_seq(db: Database, session_id: str) -> int:
    """The newest event of a session: where a follower that has just read the tables resumes."""
    if log_table(db) == "events":  # a record from before m007, read without migrating it
        return int(
            db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?", [session_id]
            ).fetchone()[0]
        )
    # The timeline is one sequence: the newest row of any session is a valid resume point (everything before it
    # is already written), and reading it costs no scan of the rows without an index (since m013 the log is
    # not indexed by session either).
    if "log" in db.table_names():  # m008: read the tables under the views (a view's MAX is a scan)
        return int(db.execute(LAST_SEQ_M016 if holds_steps(db) else LAST_SEQ).fetchone()[0])
    row = db.execute(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM event_log WHERE session_id = ?), 0),"
        " COALESCE((SELECT MAX(seq) FROM actions), 0), COALESCE((SELECT MAX(seq) FROM llm_calls), 0))",
        [session_id],
    ).fetchone()
    return int(row[0])


def tasks_by_ids(db: Database, ids: list[str]) -> list[dict[str, Any]]:
    """The rows of the tasks named by recent events (re-read rather than patched from event data)."""
    out: list[dict[str, Any]] = []
    for chunk in _chunks(ids):
        out.extend(db.query(f"SELECT * FROM tasks WHERE id IN ({_in_clause(chunk)})", chunk))
    return out


def agents_by_ids(db: Database, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for chunk in _chunks(ids):
        out.extend(db.query(f"SELECT * FROM agents WHERE id IN ({_in_clause(chunk)})", chunk))
    return out


def agent_task_links(db: Database, session_id: str) -> list[dict[str, Any]]:
    """Which agent worked which task, oldest first, so the last one seen per task is the latest."""
    return list(
        db.query(
            "SELECT id, task_id, role, cycle_id FROM agents WHERE session_id = ? ORDER BY started_at, id",
            [session_id],
        )
    )


def agent_token_sums(db: Database, ids: list[str]) -> dict[str, tuple[int, int]]:
    """Prompt and completion tokens per agent, summed over its model calls."""
    out: dict[str, tuple[int, int]] = {}
    # since m008 the agent is a number under the view, whose outer join an IN list cannot search by: join here
    sql = (
        "SELECT a.name AS agent_id, COALESCE(SUM(l.prompt_tokens),0) p, COALESCE(SUM(l.completion_tokens),0) c "
        "FROM names a JOIN calls l ON l.agent = a.id WHERE a.name IN ({}) GROUP BY a.name"
        if "calls" in db.table_names()
        else "SELECT agent_id, COALESCE(SUM(prompt_tokens),0) p, COALESCE(SUM(completion_tokens),0) c "
        "FROM llm_calls WHERE agent_id IN ({}) GROUP BY agent_id"
    )
    for chunk in _chunks(ids):
        for row in db.query(
            sql.format(_in_clause(chunk)),
            chunk,
        ):
            out[row["agent_id"]] = (int(row["p"]), int(row["c"]))
    return out


def agent_last_actions(db: Database, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each agent's newest action (SQLite returns the bare columns of the MAX row)."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        within, bounds = step_range(db, chunk)
        for row in db.query(
            "SELECT agent_id, MAX(step) AS step, name, arguments, exit_code, seq FROM actions "
            f"WHERE agent_id IN ({_in_clause(chunk)}){within} GROUP BY agent_id",
            [*chunk, *bounds],
        ):
            out[row["agent_id"]] = read_texts(row, "arguments", db=db)
    return out


def last_actions_of(db: Database, agent_id: str, limit: int = 400) -> list[dict[str, Any]]:
    """An agent's newest ``limit`` actions, oldest first: what a log pane shows when it is selected."""
    within, bounds = step_range(db, [agent_id])
    rows = list(
        db.query(
            f"SELECT * FROM actions WHERE agent_id = ?{within} ORDER BY step DESC LIMIT ?",
            [agent_id, *bounds, limit],
        )
    )
    rows.reverse()
    return action_texts(db, agent_id, rows)


def agent_events(db: Database, session_id: str, agent_id: str, limit: int = 400) -> list[dict[str, Any]]:
    """An agent's newest timeline rows, oldest first (planners and the judge keep their story here).

    Its steps (a worker's) are read apart, from the range of the timeline its row names: ``steps`` is not
    indexed by agent."""
    rows = list(
        db.query(
            "SELECT * FROM events WHERE session_id = ? AND agent_id = ? AND kind != 'agent_step' "
            "ORDER BY seq DESC LIMIT ?",
            [session_id, agent_id, limit],
        )
    )
    role = db.execute("SELECT role FROM agents WHERE id = ?", [agent_id]).fetchone()
    if role is None or role[0] == "worker":  # only workers take steps
        within, bounds = step_range(db, [agent_id])
        rows += db.query(
            f"SELECT * FROM events WHERE session_id = ? AND agent_id = ? AND kind = 'agent_step'{within} "
            "ORDER BY seq DESC LIMIT ?",
            [session_id, agent_id, *bounds, limit],
        )
    rows = sorted(rows, key=lambda row: row["seq"])[-limit:]
    return _event_data(db, rows)


def commit_times(db: Database, session_id: str) -> list[str]:
    """When each landed commit landed, oldest first: the throughput sparkline's input."""
    return [
        row["t"]
        for row in db.query(
            "SELECT COALESCE(integrated_at, created_at) AS t FROM commits "
            "WHERE session_id = ? AND status = 'integrated' ORDER BY t",
            [session_id],
        )
    ]


def last_activity(db: Database, session_id: str) -> str | None:
    """When the session's newest timeline row was written (ISO text)."""
    times = [
        row[0]
        for row in db.execute(
            f"SELECT MAX(created_at) FROM {log_table(db)} WHERE session_id = ?", [session_id]
        ).fetchall()
    ]
    if log_table(db) == "event_log":
        for table in ("actions", "llm_calls"):
            newest = db.execute(
                f"SELECT created_at FROM {table} WHERE session_id = ? ORDER BY seq DESC LIMIT 1", [session_id]
            ).fetchone()
            times.append(iso(newest[0]) if newest else None)
    known = [t for t in times if t]
    return max(known) if known else None


def session_flags(db: Database, session_id: str) -> dict[str, Any]:
    """What the status bar shows that only the timeline carries: workers, sandbox, paused, last warning."""
    flags: dict[str, Any] = {}
    for row in db.query(
        f"SELECT kind, data FROM {log_table(db)} WHERE session_id = ? AND kind IN "
        "('session_started', 'status', 'control', 'warning') ORDER BY seq",
        [session_id],
    ):
        data = json.loads(row["data"]) if row["data"] else {}
        if row["kind"] == "session_started":
            flags.update({k: data[k] for k in ("workers", "sandbox", "check") if k in data})
        elif row["kind"] == "status":
            flags.update({k: data[k] for k in ("workers", "paused") if k in data})
        elif row["kind"] == "control":
            if data.get("control") in ("pause", "resume"):
                flags["paused"] = data["control"] == "pause"
            elif data.get("control") == "workers" and "n" in data:
                flags["workers"] = data["n"]
        else:
            flags["warning"] = data.get("message")
    return flags


def gate_totals(db: Database, session_id: str) -> tuple[int, float]:
    """The landing gate's refusals and the seconds it spent deciding, over the session."""
    if "gates" not in db.table_names():
        return 0, 0.0
    row = next(
        iter(
            db.query(
                "SELECT COALESCE(SUM(verdict = 'refused'), 0) AS refused, COALESCE(SUM(duration_ms), 0) AS ms "
                "FROM gates WHERE session_id = ?",
                [session_id],
            )
        )
    )
    return int(row["refused"]), float(row["ms"]) / 1000


def task_gates(db: Database, session_id: str) -> dict[str, tuple[str, int]]:
    """Each gated task's last gate verdict and how many times the gate refused it (empty before the gate)."""
    if "gates" not in db.table_names():
        return {}
    out: dict[str, tuple[str, int]] = {}
    for row in db.query(
        "SELECT task_id, verdict, created_at FROM gates WHERE session_id = ? ORDER BY created_at",
        [session_id],
    ):
        _, refused = out.get(row["task_id"], ("", 0))
        out[row["task_id"]] = (row["verdict"], refused + (row["verdict"] == "refused"))
    return out


def task_agents(db: Database, session_id: str, task_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT * FROM agents WHERE session_id = ? AND task_id = ? ORDER BY started_at, id",
            [session_id, task_id],
        )
    )


def task_commits(db: Database, session_id: str, task_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT * FROM commits WHERE session_id = ? AND task_id = ? ORDER BY created_at",
            [session_id, task_id],
        )
    )
