"""Migration m017: an event's time counts from its agent's start, or from its task's creation.

Each task writes about six events (created, started, its agent's start and end, landed, ended); each stored its
time as milliseconds since the epoch (6 bytes). Like a call's and a step's since m014, an event of an agent now
stores the milliseconds since that agent started, and an event of a task without an agent those since the task
was created, negative so it cannot be taken for a time since the epoch: 1 to 3 bytes. An event whose agent or
task has no row (or a time as text) keeps the time as it came; the ``event_log`` view reads both.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, id_of, name_of
from .schema_m014 import absolute, relative
from .schema_m016 import LAST_SEQ

BASE = "CASE WHEN l.agent IS NOT NULL THEN r.started_at ELSE t.created_at END"
"""What a stored negative time counts from."""

EVENT_LOG_VIEW = f"""
CREATE VIEW event_log AS
SELECT l.seq, NULL AS id, s.name AS session_id, {name_of("l.kind")} AS kind, a.name AS agent_id,
       k.name AS task_id, l.data, {ISO_TIME.format(col=absolute("l.created_at", BASE))} AS created_at
FROM log l LEFT JOIN names s ON s.id = l.session LEFT JOIN names a ON a.id = l.agent
LEFT JOIN names k ON k.id = l.task LEFT JOIN agent_rows r ON r.id = l.agent LEFT JOIN task_rows t ON t.id = l.task"""

NEW_BASE = "CASE WHEN i.agent IS NOT NULL THEN r.started_at ELSE t.created_at END"

EVENT_LOG_INSERT = f"""
CREATE TRIGGER event_log_insert INSTEAD OF INSERT ON event_log BEGIN
    INSERT OR IGNORE INTO names (name) VALUES (NEW.session_id), (NEW.kind), (NEW.agent_id), (NEW.task_id);
    INSERT INTO log (seq, session, kind, agent, task, data, created_at)
    SELECT COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, {id_of("NEW.kind")}, i.agent, i.task,
           NEW.data, {relative("NEW.created_at", NEW_BASE)}
    FROM (SELECT {id_of("NEW.agent_id")} AS agent, {id_of("NEW.task_id")} AS task) i
    LEFT JOIN agent_rows r ON r.id = i.agent LEFT JOIN task_rows t ON t.id = i.task;
END"""


def upgrade_statements() -> list[str]:
    """The ``event_log`` view and its insert; the rows stay as they are (their times since the epoch)."""
    return [
        "DROP TRIGGER IF EXISTS event_log_insert",
        "DROP VIEW IF EXISTS event_log",
        EVENT_LOG_VIEW,
        EVENT_LOG_INSERT,
    ]
