"""The compact timeline of migration m008: the rows written once per model call (``calls``, ``steps``, ``log``)
hold integers where they held repeated text, behind views that keep the names and columns readers know.

A session, agent or task id (a 26-character ULID) and a repeated label (a role, model, endpoint, event kind,
action name) is stored once in ``names`` and referred to by its integer id; a time is milliseconds since the
epoch; a duration is an integer in hundredths of a millisecond (what the writers round to). A model call's id
is its ``seq``, and its parent is the ``seq`` of the agent's previous call. ``llm_calls``, ``actions``,
``event_log`` and ``events`` are views giving the old columns back; inserting into them stores the compact row
(triggers intern the names), so every writer and reader keeps its SQL.
"""

from __future__ import annotations

ISO_TIME = (
    "CASE typeof({col}) WHEN 'integer' "
    "THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', {col} / 1000.0, 'unixepoch') ELSE {col} END"
)
"""A stored time as ISO text (milliseconds since the epoch, or text in rows from before m007)."""


def name_of(ref: str) -> str:
    return f"(SELECT name FROM names WHERE id = {ref})"


def id_of(value: str) -> str:
    return f"(SELECT id FROM names WHERE name = {value})"


NAMES = """
CREATE TABLE names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE       -- a session, agent or task id, or a label repeated on many rows
)"""

CALLS = """
CREATE TABLE calls (
    seq INTEGER PRIMARY KEY,        -- its place in the timeline; also its id; < 0: from before m007
    session INTEGER,                -- names
    agent INTEGER,                  -- names
    role INTEGER NOT NULL,          -- names
    model INTEGER NOT NULL,         -- names
    endpoint INTEGER NOT NULL,      -- names
    schema_name INTEGER,            -- names
    request NOT NULL,               -- JSON messages new since the parent's, redacted; TEXT or packed BLOB
    response,                       -- raw reply text, TEXT or packed BLOB
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_cs INTEGER,             -- hundredths of a millisecond
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at NOT NULL,            -- ms since the epoch, UTC (ISO text in rows from before m007)
    parent INTEGER,                 -- seq of the same agent's previous call, NULL for the first
    kept INTEGER,                   -- messages of the parent's conversation (+ its reply) that come first
    queue_cs INTEGER,               -- hundredths of a millisecond
    prompt_ms REAL,
    predicted_ms REAL,
    cached_tokens INTEGER,
    slot INTEGER
)"""

STEPS = """
CREATE TABLE steps (
    seq INTEGER PRIMARY KEY,        -- its place in the timeline (its agent_step event); < 0: from before m007
    session INTEGER,                -- names
    agent INTEGER NOT NULL,         -- names
    task INTEGER,                   -- names
    step INTEGER NOT NULL,
    name INTEGER NOT NULL,          -- names: the action
    arguments,                      -- JSON, TEXT or packed BLOB
    observation,                    -- TEXT or packed BLOB
    exit_code INTEGER,
    duration_cs INTEGER,            -- hundredths of a millisecond
    created_at NOT NULL,            -- ms since the epoch, UTC (ISO text in rows from before m007)
    target TEXT,                    -- the path or command it was about, as its event shows it
    error INTEGER                   -- 1: the action failed
)"""

LOG = """
CREATE TABLE log (
    seq INTEGER PRIMARY KEY,        -- the order every UI follows, shared with steps and calls
    session INTEGER,                -- names
    kind INTEGER NOT NULL,          -- names
    agent INTEGER,                  -- names
    task INTEGER,                   -- names
    data TEXT,                      -- JSON
    created_at NOT NULL             -- ms since the epoch, UTC, or ISO text
)"""

INDEXES = [
    "CREATE INDEX idx_calls_agent ON calls(agent)",
    "CREATE INDEX idx_steps_agent ON steps(agent, step)",
    "CREATE INDEX idx_log_session ON log(session)",
]

LLM_CALLS_VIEW = f"""
CREATE VIEW llm_calls AS
SELECT c.seq, CAST(c.seq AS TEXT) AS id, s.name AS session_id, a.name AS agent_id, {name_of("c.role")} AS role,
       {name_of("c.model")} AS model, {name_of("c.endpoint")} AS endpoint,
       {name_of("c.schema_name")} AS schema_name, c.request, c.response, c.prompt_tokens, c.completion_tokens,
       c.latency_cs / 100.0 AS latency_ms, c.attempts, c.error, c.created_at, CAST(c.parent AS TEXT) AS parent_id,
       c.kept, c.queue_cs / 100.0 AS queue_ms, c.prompt_ms, c.predicted_ms, c.cached_tokens, c.slot
FROM calls c LEFT JOIN names s ON s.id = c.session LEFT JOIN names a ON a.id = c.agent"""

ACTIONS_VIEW = f"""
CREATE VIEW actions AS
SELECT t.seq, NULL AS id, s.name AS session_id, a.name AS agent_id, k.name AS task_id, t.step,
       {name_of("t.name")} AS name, t.arguments, t.observation, t.exit_code, t.duration_cs / 100.0 AS duration_ms,
       t.created_at, t.target, t.error
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN names k ON k.id = t.task"""

EVENT_LOG_VIEW = f"""
CREATE VIEW event_log AS
SELECT l.seq, NULL AS id, s.name AS session_id, {name_of("l.kind")} AS kind, a.name AS agent_id,
       k.name AS task_id, l.data, {ISO_TIME.format(col="l.created_at")} AS created_at
FROM log l LEFT JOIN names s ON s.id = l.session LEFT JOIN names a ON a.id = l.agent
LEFT JOIN names k ON k.id = l.task"""

EVENTS_VIEW = f"""
CREATE VIEW events AS
SELECT seq, id, session_id, kind, agent_id, task_id, data, created_at FROM event_log
UNION ALL
SELECT t.seq, NULL, s.name, 'agent_step', a.name, k.name,
       json_object('step', t.step, 'action', {name_of("t.name")}, 'target', COALESCE(t.target, ''),
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

LAST_SEQ = (
    "SELECT MAX(COALESCE((SELECT MAX(seq) FROM log), 0), COALESCE((SELECT MAX(seq) FROM steps), 0),"
    " COALESCE((SELECT MAX(seq) FROM calls), 0))"
)
"""The timeline's last ``seq``."""


def _hundredths(value: str) -> str:
    return f"CAST(round({value} * 100) AS INTEGER)"


def _intern(*values: str) -> str:
    return f"INSERT OR IGNORE INTO names (name) VALUES {', '.join(f'({v})' for v in values)};"


LLM_CALLS_INSERT = f"""
CREATE TRIGGER llm_calls_insert INSTEAD OF INSERT ON llm_calls BEGIN
    {_intern("NEW.session_id", "NEW.agent_id", "NEW.role", "NEW.model", "NEW.endpoint", "NEW.schema_name")}
    INSERT INTO calls (seq, session, agent, role, model, endpoint, schema_name, request, response, prompt_tokens,
                       completion_tokens, latency_cs, attempts, error, created_at, parent, kept, queue_cs,
                       prompt_ms, predicted_ms, cached_tokens, slot)
    VALUES (COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, {id_of("NEW.agent_id")},
            {id_of("NEW.role")}, {id_of("NEW.model")}, {id_of("NEW.endpoint")}, {id_of("NEW.schema_name")},
            NEW.request, NEW.response, NEW.prompt_tokens, NEW.completion_tokens, {_hundredths("NEW.latency_ms")},
            COALESCE(NEW.attempts, 1), NEW.error, NEW.created_at,
            CASE WHEN NEW.parent_id IS NOT NULL THEN
                (SELECT seq FROM calls WHERE agent = {id_of("NEW.agent_id")} ORDER BY seq DESC LIMIT 1) END,
            NEW.kept, {_hundredths("NEW.queue_ms")}, NEW.prompt_ms, NEW.predicted_ms, NEW.cached_tokens,
            NEW.slot);
END"""
"""A call names its parent by the id its client gave it; the parent is always that agent's previous call (the
client keeps one conversation per agent), which is what is stored."""

ACTIONS_INSERT = f"""
CREATE TRIGGER actions_insert INSTEAD OF INSERT ON actions BEGIN
    {_intern("NEW.session_id", "NEW.agent_id", "NEW.task_id", "NEW.name")}
    INSERT INTO steps (seq, session, agent, task, step, name, arguments, observation, exit_code, duration_cs,
                       created_at, target, error)
    VALUES (COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, {id_of("NEW.agent_id")},
            {id_of("NEW.task_id")}, NEW.step, {id_of("NEW.name")}, NEW.arguments, NEW.observation, NEW.exit_code,
            {_hundredths("NEW.duration_ms")}, NEW.created_at, NEW.target, NEW.error);
END"""

EVENT_LOG_INSERT = f"""
CREATE TRIGGER event_log_insert INSTEAD OF INSERT ON event_log BEGIN
    {_intern("NEW.session_id", "NEW.kind", "NEW.agent_id", "NEW.task_id")}
    INSERT INTO log (seq, session, kind, agent, task, data, created_at)
    VALUES (COALESCE(NEW.seq, ({LAST_SEQ}) + 1), {id_of("NEW.session_id")}, {id_of("NEW.kind")},
            {id_of("NEW.agent_id")}, {id_of("NEW.task_id")}, NEW.data, NEW.created_at);
END"""

EVENTS_INSERT = """
CREATE TRIGGER events_insert INSTEAD OF INSERT ON events BEGIN
    INSERT INTO event_log (seq, session_id, kind, agent_id, task_id, data, created_at)
    VALUES (NEW.seq, NEW.session_id, NEW.kind, NEW.agent_id, NEW.task_id, NEW.data, NEW.created_at);
END"""


def _interned(table: str, *columns: str) -> list[str]:
    return [
        f"INSERT OR IGNORE INTO names (name) SELECT DISTINCT {c} FROM {table} WHERE {c} IS NOT NULL"
        for c in columns
    ]


def _ref(table: str, column: str) -> str:
    return f"(SELECT id FROM names WHERE name = {table}.{column})"


def upgrade_statements() -> list[str]:
    """From m007's tables (``llm_calls``, ``actions``, ``event_log``) to m008's, rows and all."""
    old_calls, old_actions, old_log = "llm_calls_m007", "actions_m007", "event_log_m007"
    return [
        "DROP TRIGGER IF EXISTS events_insert",
        "DROP VIEW IF EXISTS events",
        f"ALTER TABLE llm_calls RENAME TO {old_calls}",
        f"ALTER TABLE actions RENAME TO {old_actions}",
        f"ALTER TABLE event_log RENAME TO {old_log}",
        NAMES,
        *_interned(old_calls, "session_id", "agent_id", "role", "model", "endpoint", "schema_name"),
        *_interned(old_actions, "session_id", "agent_id", "task_id", "name"),
        *_interned(old_log, "session_id", "kind", "agent_id", "task_id"),
        CALLS,
        STEPS,
        LOG,
        f"CREATE INDEX idx_m008_call_ids ON {old_calls}(id)",
        f"INSERT INTO calls (seq, session, agent, role, model, endpoint, schema_name, request, response, "
        f"prompt_tokens, completion_tokens, latency_cs, attempts, error, created_at, parent, kept, queue_cs, "
        f"prompt_ms, predicted_ms, cached_tokens, slot) "
        f"SELECT o.seq, {_ref('o', 'session_id')}, {_ref('o', 'agent_id')}, {_ref('o', 'role')}, "
        f"{_ref('o', 'model')}, {_ref('o', 'endpoint')}, {_ref('o', 'schema_name')}, o.request, o.response, "
        f"o.prompt_tokens, o.completion_tokens, {_hundredths('o.latency_ms')}, o.attempts, o.error, o.created_at, "
        f"(SELECT p.seq FROM {old_calls} p WHERE p.id = o.parent_id), o.kept, {_hundredths('o.queue_ms')}, "
        f"o.prompt_ms, o.predicted_ms, o.cached_tokens, o.slot FROM {old_calls} o",
        f"INSERT INTO steps (seq, session, agent, task, step, name, arguments, observation, exit_code, "
        f"duration_cs, created_at, target, error) "
        f"SELECT o.seq, {_ref('o', 'session_id')}, {_ref('o', 'agent_id')}, {_ref('o', 'task_id')}, o.step, "
        f"{_ref('o', 'name')}, o.arguments, o.observation, o.exit_code, {_hundredths('o.duration_ms')}, "
        f"o.created_at, o.target, o.error FROM {old_actions} o",
        f"INSERT INTO log (seq, session, kind, agent, task, data, created_at) "
        f"SELECT o.seq, {_ref('o', 'session_id')}, {_ref('o', 'kind')}, {_ref('o', 'agent_id')}, "
        f"{_ref('o', 'task_id')}, o.data, o.created_at FROM {old_log} o",
        f"DROP TABLE {old_calls}",
        f"DROP TABLE {old_actions}",
        f"DROP TABLE {old_log}",
        *INDEXES,
        LLM_CALLS_VIEW,
        ACTIONS_VIEW,
        EVENT_LOG_VIEW,
        EVENTS_VIEW,
        LLM_CALLS_INSERT,
        ACTIONS_INSERT,
        EVENT_LOG_INSERT,
        EVENTS_INSERT,
    ]
