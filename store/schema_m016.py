"""Migration m016: a worker's step is stored in the row of the model call that chose it.

A worker calls the model, then runs the action the reply names: a ``calls`` row and a ``steps`` row, each with
its own key, cell and header, its session, agent and time. The writer now holds a worker's call until its step
arrives and stores both as one ``calls`` row (``store.writer``): the step's columns are added to ``calls``, its
time is milliseconds after the call's. The step keeps its own place in the timeline, the call's ``seq`` + 1
(the writer numbers the pair together), so the ``actions`` and ``events`` views read as before; the timeline's
last ``seq`` counts it (:data:`LAST_SEQ`). A call whose step does not come (an error, a planner's call, a step
of another task) is stored alone, and such a step in ``steps``, as before.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, _hundredths, _intern, id_of, name_of
from .schema_m008 import LAST_SEQ as LAST_SEQ_M008
from .schema_m014 import CALL_TIME, PROFILE, STEP_TASK, STEP_TIME, TARGET, relative

LAST_CALL = "COALESCE((SELECT MAX(seq) FROM calls), 0)"
LAST_CALL_OR_STEP = "COALESCE((SELECT seq + (step IS NOT NULL) FROM calls ORDER BY seq DESC LIMIT 1), 0)"
LAST_SEQ = LAST_SEQ_M008.replace(LAST_CALL, LAST_CALL_OR_STEP)
"""The timeline's last ``seq``: a call holding its step ends at the step's."""
assert LAST_SEQ != LAST_SEQ_M008

STEP_COLUMNS = (
    "step INTEGER",  # the step's number, NULL: the call holds no step
    "action INTEGER",  # names: the action
    "arguments",  # JSON, TEXT or packed BLOB
    "observation",  # TEXT or packed BLOB
    "exit_code INTEGER",
    "step_cs INTEGER",  # the action's duration, hundredths of a millisecond
    "step_at INTEGER",  # ms after the call's created_at
    "target TEXT",  # a finish's target (others: target_name)
    "target_name INTEGER",  # names: the path or command it was about
    "failed INTEGER",  # 1: the action failed
)

STEP_OF_CALL_TIME = f"({CALL_TIME}) + c.step_at"
CALL_TARGET = "COALESCE(c.target, " + name_of("c.target_name") + ")"

ACTIONS_VIEW = f"""
CREATE VIEW actions AS
SELECT t.seq, NULL AS id, s.name AS session_id, a.name AS agent_id, k.name AS task_id, t.step,
       {name_of("t.name")} AS name, t.arguments, t.observation, t.exit_code, t.duration_cs / 100.0 AS duration_ms,
       {STEP_TIME} AS created_at, {TARGET} AS target, t.error
FROM steps t LEFT JOIN names s ON s.id = t.session JOIN names a ON a.id = t.agent
LEFT JOIN agent_rows r ON r.id = t.agent LEFT JOIN names k ON k.id = {STEP_TASK}
UNION ALL
SELECT c.seq + 1, NULL, s.name, a.name, k.name, c.step, {name_of("c.action")}, c.arguments, c.observation,
       c.exit_code, c.step_cs / 100.0, {STEP_OF_CALL_TIME}, {CALL_TARGET}, c.failed
FROM calls c LEFT JOIN names s ON s.id = c.session JOIN names a ON a.id = c.agent
LEFT JOIN agent_rows r ON r.id = c.agent LEFT JOIN names k ON k.id = r.task WHERE c.step IS NOT NULL"""


def step_event(arm: str) -> str:
    """The ``agent_step`` event of a step held by a call (``arm``: a condition on ``c``, e.g. its ``seq``)."""
    return f"""
SELECT c.seq + 1 AS seq, NULL AS id, s.name AS session_id, 'agent_step' AS kind, a.name AS agent_id,
       k.name AS task_id,
       json_object('step', c.step, 'action', {name_of("c.action")}, 'target', COALESCE({CALL_TARGET}, ''),
                   'observation', CASE typeof(c.observation) WHEN 'text' THEN substr(c.observation, 1, 300) END,
                   'exit_code', c.exit_code, 'error', json(CASE WHEN c.failed THEN 'true' ELSE 'false' END))
           AS data,
       {ISO_TIME.format(col=STEP_OF_CALL_TIME)} AS created_at
FROM calls c LEFT JOIN names s ON s.id = c.session JOIN names a ON a.id = c.agent
LEFT JOIN agent_rows r ON r.id = c.agent LEFT JOIN names k ON k.id = r.task
WHERE c.step IS NOT NULL AND c.seq > 0{arm}"""


def events_views(previous: str) -> list[str]:
    """m014's ``events`` view (``previous``: its SQL) as ``events_rows``, and ``events``: those and the steps
    held by calls. A follower reads ``events_rows`` and :func:`step_event` apart: the step's place, the call's
    ``seq`` + 1, is not a condition SQLite can search the calls by."""
    rows = previous.replace("CREATE VIEW events AS", "CREATE VIEW events_rows AS", 1)
    assert rows != previous
    return [rows, "CREATE VIEW events AS SELECT * FROM events_rows\nUNION ALL" + step_event("")]


CALL_STEPS = """
CREATE VIEW call_steps AS
SELECT l.*, NULL AS step_step, NULL AS step_name, NULL AS step_arguments, NULL AS step_observation,
       NULL AS step_exit_code, NULL AS step_duration_ms, NULL AS step_created_at, NULL AS step_target,
       NULL AS step_error
FROM llm_calls l WHERE 0"""
"""What the writer inserts a call and its step into: the call's columns, then the step's (``step_``)."""

STEP_LABEL = "CASE WHEN NEW.step_name != 'finish' THEN NEW.step_target END"

CALL_STEPS_INSERT = f"""
CREATE TRIGGER call_steps_insert INSTEAD OF INSERT ON call_steps BEGIN
    {_intern("NEW.session_id", "NEW.agent_id", "NEW.step_name", STEP_LABEL)}
    INSERT OR IGNORE INTO profiles (role, model, endpoint, schema_name) VALUES ({PROFILE});
    INSERT INTO calls (seq, session, agent, profile, request, response, prompt_tokens, completion_tokens,
                       latency_cs, attempts, error, created_at, parent, kept, queue_cs, prompt_cs, predicted_cs,
                       cached_tokens, slot, step, action, arguments, observation, exit_code, step_cs, step_at,
                       target, target_name, failed)
    SELECT NEW.seq, {id_of("NEW.session_id")}, i.id,
           (SELECT id FROM profiles WHERE (role, model, endpoint, schema_name) = ({PROFILE})),
           NEW.request, NEW.response, NEW.prompt_tokens, NEW.completion_tokens, {_hundredths("NEW.latency_ms")},
           COALESCE(NEW.attempts, 1), NEW.error, {relative("NEW.created_at", "r.started_at")},
           CASE WHEN NEW.parent_id IS NOT NULL THEN 0 END,
           NEW.kept, {_hundredths("NEW.queue_ms")}, {_hundredths("NEW.prompt_ms")},
           {_hundredths("NEW.predicted_ms")}, NEW.cached_tokens, NEW.slot,
           NEW.step_step, {id_of("NEW.step_name")}, NEW.step_arguments, NEW.step_observation, NEW.step_exit_code,
           {_hundredths("NEW.step_duration_ms")}, NEW.step_created_at - NEW.created_at,
           CASE WHEN NEW.step_name = 'finish' THEN NEW.step_target END, {id_of(STEP_LABEL)}, NEW.step_error
    FROM (SELECT {id_of("NEW.agent_id")} AS id) i LEFT JOIN agent_rows r ON r.id = i.id;
END"""
"""Only the writer inserts here, with the pair's ``seq`` and both times in ms since the epoch."""

SEQUENCED_TRIGGERS = ("event_log_insert", "agents_insert", "agents_update", "llm_calls_insert")
"""The triggers that read the timeline's last ``seq`` (and ``actions_insert``, which goes with its view):
recreated with :data:`LAST_SEQ`."""


def upgrade_statements(existing: dict[str, str]) -> list[str]:
    """The step's columns on ``calls``, the views that read them, and the triggers that number the timeline
    (``existing``: the SQL of the record's triggers and of its ``events`` view, by name)."""
    out = [f"ALTER TABLE calls ADD COLUMN {column}" for column in STEP_COLUMNS]
    for name in SEQUENCED_TRIGGERS:
        if name in existing:
            out += [f"DROP TRIGGER {name}", existing[name].replace(LAST_SEQ_M008, LAST_SEQ)]
    out += ["DROP VIEW IF EXISTS actions", ACTIONS_VIEW]  # (its trigger goes with it)
    if "actions_insert" in existing:
        out.append(existing["actions_insert"].replace(LAST_SEQ_M008, LAST_SEQ))
    out += ["DROP VIEW IF EXISTS events", *events_views(existing["events"])]
    if "events_insert" in existing:
        out.append(existing["events_insert"])
    out += [CALL_STEPS, CALL_STEPS_INSERT]
    return out
