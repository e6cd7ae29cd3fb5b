"""Migration m014: a model call's and a step's rows stop repeating what other rows say.

- A call's role, model, endpoint and reply schema (a few combinations for a whole run) are one ``profiles`` row
  it refers to: 1 or 2 bytes where four labels took 6, and three columns fewer in every row's header.
- A call's and a step's time is stored as milliseconds since its agent started (its ``agent_rows.started_at``),
  negative so it cannot be taken for a time since the epoch: 3 bytes where 6 were (an agent older than ~2.3
  hours: 4). A step's task is NULL when it is its agent's (0 when it has none while its agent has one).
- A call's server timings are integer hundredths of a millisecond, like its latency (3 bytes where a REAL took
  8).

``llm_calls``, ``actions`` and ``events`` keep their columns; rows from before keep their times and tasks as
they were (a time since the epoch or ISO text, a task always named), which the views read as before.
"""

from __future__ import annotations

from .schema_m008 import EVENTS_INSERT, ISO_TIME, LAST_SEQ, _hundredths, _intern, id_of, name_of
from .schema_m010 import LABEL

SPAN = 1 << 31
"""A time since the agent's start is stored when it is below this (24 days); the time since the epoch otherwise."""

PROFILES = """
CREATE TABLE profiles (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    schema_name TEXT NOT NULL,      -- '' for none
    UNIQUE (role, model, endpoint, schema_name)
)"""

CALLS = """
CREATE TABLE calls (
    seq INTEGER PRIMARY KEY,        -- its place in the timeline; also its id; < 0: from before m007
    session INTEGER,                -- names
    agent INTEGER,                  -- names
    profile INTEGER NOT NULL,       -- profiles: its role, model, endpoint and reply schema
    request NOT NULL,               -- JSON messages new since the parent's, redacted; TEXT or packed BLOB
    response,                       -- raw reply text, TEXT or packed BLOB
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_cs INTEGER,             -- hundredths of a millisecond
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at NOT NULL,            -- < 0: -1 - ms since its agent started; ms since the epoch; or ISO text
    parent INTEGER,                 -- seq of the same agent's previous call, NULL for the first
    kept INTEGER,                   -- messages of the parent's conversation (+ its reply) that come first
    queue_cs INTEGER,               -- hundredths of a millisecond
    prompt_cs INTEGER,              -- the server's prompt processing, hundredths of a millisecond
    predicted_cs INTEGER,           -- the server's generation, hundredths of a millisecond
    cached_tokens INTEGER,
    slot INTEGER
)"""


def absolute(col: str, start: str) -> str:
    """A stored time as ms since the epoch (or the text it was): a negative one counts from ``start``."""
    return f"CASE WHEN typeof({col}) = 'integer' AND {col} < 0 THEN {start} - {col} - 1 ELSE {col} END"


def relative(new: str, start: str) -> str:
    """A new row's time (ms since the epoch) as stored: since its agent's ``start`` when that is known."""
    return (
        f"CASE WHEN typeof({new}) = 'integer' AND typeof({start}) = 'integer' AND {new} >= {start} "
        f"AND {new} - {start} < {SPAN} THEN {start} - {new} - 1 ELSE {new} END"
    )


CALL_TIME = absolute("c.created_at", "r.started_at")
STEP_TIME = absolute("t.created_at", "r.started_at")
STEP_TASK = "CASE t.task WHEN 0 THEN NULL ELSE COALESCE(t.task, r.task) END"
TARGET = "COALESCE(t.target, " + name_of("t.target_name") + ")"

LLM_CALLS_VIEW = f"""
CREATE VIEW llm_calls AS
SELECT c.seq, CAST(c.seq AS TEXT) AS id, s.name AS session_id, a.name AS agent_id, p.role, p.model, p.endpoint,
       NULLIF(p.schema_name, '') AS schema_name, c.request, c.response, c.prompt_tokens, c.completion_tokens,
       c.latency_cs / 100.0 AS latency_ms, c.attempts, c.error, {CALL_TIME} AS created_at,
       CAST(c.parent AS TEXT) AS parent_id, c.kept, c.queue_cs / 100.0 AS queue_ms, c.prompt_cs / 100.0 AS prompt_ms,
       c.predicted_cs / 100.0 AS predicted_ms, c.cached_tokens, c.slot
FROM calls c JOIN profiles p ON p.id = c.profile LEFT JOIN names s ON s.id = c.session
LEFT JOIN names a ON a.id = c.agent LEFT JOIN agent_rows r ON r.id = c.agent"""

ACTIONS_VIEW = f"""
CREATE VIEW actions AS
SELECT t.seq, NULL AS id, s.name AS session_id, a.name AS agent_id, k.name AS task_id, t.step,
       {name_of("t.name")} AS name, t.arguments, t.observation, t.exit_code, t.duration_cs / 100.0 AS duration_ms,
       {STEP_TIME} AS created_at, {TARGET} AS target, t.error
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN agent_rows r ON r.id = t.agent LEFT JOIN names k ON k.id = {STEP_TASK}"""

EVENTS_VIEW = f"""
CREATE VIEW events AS
SELECT seq, id, session_id, kind, agent_id, task_id, data, created_at FROM event_log
UNION ALL
SELECT t.seq, NULL, s.name, 'agent_step', a.name, k.name,
       json_object('step', t.step, 'action', {name_of("t.name")}, 'target', COALESCE({TARGET}, ''),
                   'observation', CASE typeof(t.observation) WHEN 'text' THEN substr(t.observation, 1, 300) END,
                   'exit_code', t.exit_code, 'error', json(CASE WHEN t.error THEN 'true' ELSE 'false' END)),
       {ISO_TIME.format(col=STEP_TIME)}
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN agent_rows r ON r.id = t.agent LEFT JOIN names k ON k.id = {STEP_TASK} WHERE t.seq > 0
UNION ALL
SELECT c.seq, NULL, s.name, 'llm_call', a.name, NULL,
       json_object('role', p.role, 'prompt_tokens', COALESCE(c.prompt_tokens, 0),
                   'completion_tokens', COALESCE(c.completion_tokens, 0), 'latency_ms', c.latency_cs / 100.0,
                   'error', c.error, 'endpoint', p.endpoint),
       {ISO_TIME.format(col=CALL_TIME)}
FROM calls c JOIN profiles p ON p.id = c.profile LEFT JOIN names s ON s.id = c.session
LEFT JOIN names a ON a.id = c.agent LEFT JOIN agent_rows r ON r.id = c.agent WHERE c.seq > 0"""

PROFILE = "NEW.role, NEW.model, NEW.endpoint, COALESCE(NEW.schema_name, '')"

LLM_CALLS_INSERT = f"""
CREATE TRIGGER llm_calls_insert INSTEAD OF INSERT ON llm_calls BEGIN
    {_intern("NEW.session_id", "NEW.agent_id")}
    INSERT OR IGNORE INTO profiles (role, model, endpoint, schema_name) VALUES ({PROFILE});
    INSERT INTO calls (seq, session, agent, profile, request, response, prompt_tokens, completion_tokens,
                       latency_cs, attempts, error, created_at, parent, kept, queue_cs, prompt_cs, predicted_cs,
                       cached_tokens, slot)
    SELECT COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, i.id,
           (SELECT id FROM profiles WHERE (role, model, endpoint, schema_name) = ({PROFILE})),
           NEW.request, NEW.response, NEW.prompt_tokens, NEW.completion_tokens, {_hundredths("NEW.latency_ms")},
           COALESCE(NEW.attempts, 1), NEW.error, {relative("NEW.created_at", "r.started_at")},
           CASE WHEN NEW.parent_id IS NOT NULL THEN
               (SELECT seq FROM calls WHERE agent = i.id ORDER BY seq DESC LIMIT 1) END,
           NEW.kept, {_hundredths("NEW.queue_ms")}, {_hundredths("NEW.prompt_ms")},
           {_hundredths("NEW.predicted_ms")}, NEW.cached_tokens, NEW.slot
    FROM (SELECT {id_of("NEW.agent_id")} AS id) i LEFT JOIN agent_rows r ON r.id = i.id;
END"""
"""A call names its parent by the id its client gave it; the parent is always that agent's previous call (the
client keeps one conversation per agent), which is what is stored."""

TASK = id_of("NEW.task_id")

ACTIONS_INSERT = f"""
CREATE TRIGGER actions_insert INSTEAD OF INSERT ON actions BEGIN
    {_intern("NEW.session_id", "NEW.agent_id", "NEW.task_id", "NEW.name", LABEL)}
    INSERT INTO steps (seq, session, agent, task, step, name, arguments, observation, exit_code, duration_cs,
                       created_at, target, target_name, error)
    SELECT COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, i.id,
           CASE WHEN r.task IS NULL THEN {TASK} WHEN NEW.task_id IS NULL THEN 0
                WHEN r.task = {TASK} THEN NULL ELSE {TASK} END,
           NEW.step, {id_of("NEW.name")}, NEW.arguments, NEW.observation, NEW.exit_code,
           {_hundredths("NEW.duration_ms")}, {relative("NEW.created_at", "r.started_at")},
           CASE WHEN NEW.name = 'finish' THEN NEW.target END, {id_of(LABEL)}, NEW.error
    FROM (SELECT {id_of("NEW.agent_id")} AS id) i LEFT JOIN agent_rows r ON r.id = i.id;
END"""


def _label(ref: str) -> str:
    return f"(SELECT name FROM names WHERE id = {ref})"


def upgrade_statements() -> list[str]:
    """From m013's ``calls`` to m014's, rows and all (their times as they were); new views and triggers."""
    old = "calls_m013"
    profile = f"{_label('o.role')}, {_label('o.model')}, {_label('o.endpoint')}, COALESCE({_label('o.schema_name')}, '')"
    return [
        "DROP TRIGGER IF EXISTS events_insert",
        "DROP VIEW IF EXISTS events",
        "DROP TRIGGER IF EXISTS llm_calls_insert",
        "DROP VIEW IF EXISTS llm_calls",
        "DROP TRIGGER IF EXISTS actions_insert",
        "DROP VIEW IF EXISTS actions",
        PROFILES,
        f"INSERT OR IGNORE INTO profiles (role, model, endpoint, schema_name) SELECT DISTINCT {profile} "
        f"FROM calls o",
        "DROP INDEX IF EXISTS idx_calls_agent",
        # the old table's name changes alone: the triggers that read the timeline's last seq keep reading calls
        "PRAGMA legacy_alter_table = ON",
        f"ALTER TABLE calls RENAME TO {old}",
        "PRAGMA legacy_alter_table = OFF",
        CALLS,
        "INSERT INTO calls (seq, session, agent, profile, request, response, prompt_tokens, completion_tokens, "
        "latency_cs, attempts, error, created_at, parent, kept, queue_cs, prompt_cs, predicted_cs, cached_tokens, "
        "slot) "
        f"SELECT o.seq, o.session, o.agent, (SELECT id FROM profiles WHERE (role, model, endpoint, schema_name) = "
        f"({profile})), o.request, o.response, o.prompt_tokens, o.completion_tokens, o.latency_cs, o.attempts, "
        f"o.error, o.created_at, o.parent, o.kept, o.queue_cs, {_hundredths('o.prompt_ms')}, "
        f"{_hundredths('o.predicted_ms')}, o.cached_tokens, o.slot FROM {old} o ORDER BY o.seq",
        f"DROP TABLE {old}",
        "CREATE INDEX idx_calls_agent ON calls(agent)",
        LLM_CALLS_VIEW,
        ACTIONS_VIEW,
        EVENTS_VIEW,
        LLM_CALLS_INSERT,
        ACTIONS_INSERT,
        EVENTS_INSERT,
    ]
