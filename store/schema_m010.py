"""Migration m010: an action's target (the path or command it was about) is a label in ``names``, like its
action's name, instead of text on every ``steps`` row (a path read by many workers, or written by one worker
several times, is stored once). ``steps.target`` keeps the text of the rows from before, and a finish's target
(its summary: one of a kind); the new column ``target_name`` refers to ``names``. The ``actions`` and ``events``
views read either.

(m010 also brings the frames of :mod:`.derived`, which need no change of schema: a reader from before m010
would not know them, so the record says it is m010.)
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, LAST_SEQ, _hundredths, _intern, id_of, name_of

TARGET = "COALESCE(t.target, " + name_of("t.target_name") + ")"

ACTIONS_VIEW = f"""
CREATE VIEW actions AS
SELECT t.seq, NULL AS id, s.name AS session_id, a.name AS agent_id, k.name AS task_id, t.step,
       {name_of("t.name")} AS name, t.arguments, t.observation, t.exit_code, t.duration_cs / 100.0 AS duration_ms,
       t.created_at, {TARGET} AS target, t.error
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN names k ON k.id = t.task"""

EVENTS_VIEW = f"""
CREATE VIEW events AS
SELECT seq, id, session_id, kind, agent_id, task_id, data, created_at FROM event_log
UNION ALL
SELECT t.seq, NULL, s.name, 'agent_step', a.name, k.name,
       json_object('step', t.step, 'action', {name_of("t.name")}, 'target', COALESCE({TARGET}, ''),
                   'observation', CASE typeof(t.observation) WHEN 'text' THEN substr(t.observation, 1, 300) END,
                   'exit_code', t.exit_code, 'error', json(CASE WHEN t.error THEN 'true' ELSE 'false' END)),
       {ISO_TIME.format(col="t.created_at")}
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN names k ON k.id = t.task WHERE t.seq > 0
UNION ALL
SELECT c.seq, NULL, s.name, 'llm_call', a.name, NULL,
       json_object('role', {name_of("c.role")}, 'prompt_tokens', COALESCE(c.prompt_tokens, 0),
                   'completion_tokens', COALESCE(c.completion_tokens, 0), 'latency_ms', c.latency_cs / 100.0,
                   'error', c.error, 'endpoint', {name_of("c.endpoint")}),
       {ISO_TIME.format(col="c.created_at")}
FROM calls c LEFT JOIN names s ON s.id = c.session LEFT JOIN names a ON a.id = c.agent WHERE c.seq > 0"""

LABEL = "CASE WHEN NEW.name != 'finish' THEN NEW.target END"
"""The target as a label: any but a finish's."""

ACTIONS_INSERT = f"""
CREATE TRIGGER actions_insert INSTEAD OF INSERT ON actions BEGIN
    {_intern("NEW.session_id", "NEW.agent_id", "NEW.task_id", "NEW.name", LABEL)}
    INSERT INTO steps (seq, session, agent, task, step, name, arguments, observation, exit_code, duration_cs,
                       created_at, target, target_name, error)
    VALUES (COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, {id_of("NEW.agent_id")},
            {id_of("NEW.task_id")}, NEW.step, {id_of("NEW.name")}, NEW.arguments, NEW.observation, NEW.exit_code,
            {_hundredths("NEW.duration_ms")}, NEW.created_at, CASE WHEN NEW.name = 'finish' THEN NEW.target END,
            {id_of(LABEL)}, NEW.error);
END"""

EVENTS_INSERT = """
CREATE TRIGGER events_insert INSTEAD OF INSERT ON events BEGIN
    INSERT INTO event_log (seq, session_id, kind, agent_id, task_id, data, created_at)
    VALUES (NEW.seq, NEW.session_id, NEW.kind, NEW.agent_id, NEW.task_id, NEW.data, NEW.created_at);
END"""


def upgrade_statements() -> list[str]:
    """From m009's ``steps`` (a target as text) to m010's; the rows stay as they are."""
    return [
        "DROP TRIGGER IF EXISTS events_insert",
        "DROP VIEW IF EXISTS events",
        "DROP TRIGGER IF EXISTS actions_insert",
        "DROP VIEW IF EXISTS actions",
        "ALTER TABLE steps ADD COLUMN target_name INTEGER",  # names: the target (target: rows from before)
        ACTIONS_VIEW,
        EVENTS_VIEW,
        ACTIONS_INSERT,
        EVENTS_INSERT,
    ]
