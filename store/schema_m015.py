"""Migration m015: a model call and a landing stop storing what the record says elsewhere.

- A call's parent is always its agent's previous call (the client keeps one conversation per agent): a new row
  stores ``parent`` as 0 (no bytes: SQLite keeps 0 and 1 in the row's header), the ``llm_calls`` view finds
  that call through ``idx_calls_agent``. The insert no longer looks it up (one index search less per call).
  Rows from before keep the seq they name.
- ``commit_rows`` is indexed by its task instead of its session (a record holds one session, or few): a
  ``commit_landed`` event whose shas and counts are its task's landed commit row is stored without them, and a
  reader finds that row by the task (see ``store.queries``). A task's handoff naming the commit that its landed
  commit row names is stored without it, as a BLOB of UTF-8 JSON (the mark: a handoff was text before): the
  ``tasks`` view adds it back (SQLite's JSON has no spaces). An update of another column keeps it so.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, LAST_SEQ, _hundredths, _intern, id_of, name_of
from .schema_m012 import COLUMNS as TASK_COLUMNS
from .schema_m012 import INTERNED, TASKS_INSERT, _values
from .schema_m012 import _intern as _intern_task
from .schema_m013 import hex_of
from .schema_m014 import CALL_TIME, PROFILE, relative

PREVIOUS = "(SELECT MAX(p.seq) FROM calls p WHERE p.agent = c.agent AND p.seq < c.seq)"
"""The agent's previous call: what a stored ``parent`` of 0 stands for."""

LLM_CALLS_VIEW = f"""
CREATE VIEW llm_calls AS
SELECT c.seq, CAST(c.seq AS TEXT) AS id, s.name AS session_id, a.name AS agent_id, p.role, p.model, p.endpoint,
       NULLIF(p.schema_name, '') AS schema_name, c.request, c.response, c.prompt_tokens, c.completion_tokens,
       c.latency_cs / 100.0 AS latency_ms, c.attempts, c.error, {CALL_TIME} AS created_at,
       CAST(CASE c.parent WHEN 0 THEN {PREVIOUS} ELSE c.parent END AS TEXT) AS parent_id, c.kept,
       c.queue_cs / 100.0 AS queue_ms, c.prompt_cs / 100.0 AS prompt_ms, c.predicted_cs / 100.0 AS predicted_ms,
       c.cached_tokens, c.slot
FROM calls c JOIN profiles p ON p.id = c.profile LEFT JOIN names s ON s.id = c.session
LEFT JOIN names a ON a.id = c.agent LEFT JOIN agent_rows r ON r.id = c.agent"""

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
           CASE WHEN NEW.parent_id IS NOT NULL THEN 0 END,
           NEW.kept, {_hundredths("NEW.queue_ms")}, {_hundredths("NEW.prompt_ms")},
           {_hundredths("NEW.predicted_ms")}, NEW.cached_tokens, NEW.slot
    FROM (SELECT {id_of("NEW.agent_id")} AS id) i LEFT JOIN agent_rows r ON r.id = i.id;
END"""


LANDED_SHA = (
    f"(SELECT {hex_of('c.integrated_sha')} FROM commit_rows c WHERE c.task = r.id "
    "AND c.status = (SELECT id FROM names WHERE name = 'integrated') ORDER BY c.id DESC LIMIT 1)"
)
HANDOFF = (
    "CASE typeof(r.handoff) WHEN 'blob' THEN json_set(CAST(r.handoff AS TEXT), '$.commit', "
    f"{LANDED_SHA}) ELSE r.handoff END"
)

TASKS_VIEW = f"""
CREATE VIEW tasks AS
SELECT i.name AS id, s.name AS session_id, {name_of("r.cycle")} AS cycle_id, {name_of("r.parent")} AS parent_id,
       {name_of("r.kind")} AS kind, r.depth, r.title, r.instructions, r.files, r.check_cmd,
       {name_of("r.status")} AS status, r.attempts, {HANDOFF} AS handoff, r.error,
       {ISO_TIME.format(col="r.created_at")} AS created_at, {ISO_TIME.format(col="r.started_at")} AS started_at,
       {ISO_TIME.format(col="r.ended_at")} AS ended_at
FROM task_rows r JOIN names i ON i.id = r.id LEFT JOIN names s ON s.id = r.session"""

KEPT_HANDOFF = (
    f"CASE WHEN NEW.handoff IS OLD.handoff THEN (SELECT handoff FROM task_rows WHERE id = {id_of('OLD.id')}) "
    "ELSE NEW.handoff END"
)

TASKS_UPDATE = f"""
CREATE TRIGGER tasks_update INSTEAD OF UPDATE ON tasks BEGIN
    {_intern_task(*(f"NEW.{c}" for c in INTERNED))}
    UPDATE task_rows SET ({TASK_COLUMNS}) = ({_values("NEW").replace("NEW.handoff", KEPT_HANDOFF)})
    WHERE id = {id_of("OLD.id")};
END"""


def upgrade_statements() -> list[str]:
    """The new ``llm_calls`` view and insert; the commit rows' index on the task. No row changes."""
    return [
        "DROP TRIGGER IF EXISTS llm_calls_insert",
        "DROP VIEW IF EXISTS llm_calls",
        LLM_CALLS_VIEW,
        LLM_CALLS_INSERT,
        "DROP TRIGGER IF EXISTS tasks_update",
        "DROP VIEW IF EXISTS tasks",
        TASKS_VIEW,
        TASKS_INSERT,
        TASKS_UPDATE,
        "DROP INDEX IF EXISTS idx_commit_rows_session",
        "CREATE INDEX IF NOT EXISTS idx_commit_rows_task ON commit_rows(task)",
    ]
