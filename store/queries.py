"""Read queries over the record, for the CLI, the TUI and crash recovery. Readers use their own connection."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

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
    return list(
        db.query(
            "SELECT * FROM actions WHERE agent_id = ? AND step > ? ORDER BY step", [agent_id, after_step]
        )
    )


def commits(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM commits WHERE session_id = ? ORDER BY created_at", [session_id]))


def events_since(db: Database, session_id: str, seq: int = 0, limit: int = 5000) -> list[dict[str, Any]]:
    """The timeline after ``seq``: how a live or attached UI follows a session."""
    rows = list(
        db.query(
            "SELECT * FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            [session_id, seq, limit],
        )
    )
    for row in rows:
        row["data"] = json.loads(row["data"]) if row["data"] else {}
    return rows


def token_totals(db: Database, session_id: str) -> tuple[int, int]:
    row = next(
        db.query(
            "SELECT COALESCE(SUM(prompt_tokens),0) p, COALESCE(SUM(completion_tokens),0) c "
            "FROM llm_calls WHERE session_id = ?",
            [session_id],
        )
    )
    return int(row["p"]), int(row["c"])


def pending_controls(db: Database, session_id: str) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT * FROM controls WHERE session_id = ? AND consumed_at IS NULL ORDER BY seq", [session_id]
        )
    )
