"""The schema of the SQLite record, as append-only named migrations applied on open.

Never edit a migration that has shipped: add a new one. ``docs/schema.md`` is generated from the schema these
produce (``python -m formicary.store.schema_doc``) and a test checks it is current.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .schema_m008 import upgrade_statements
from .schema_m009 import upgrade_statements as landings_upgrade
from .schema_m010 import upgrade_statements as targets_upgrade
from .schema_m011 import upgrade_statements as agents_upgrade
from .schema_m012 import upgrade_statements as tasks_upgrade
from .schema_m013 import upgrade_statements as ranges_upgrade
from .schema_m014 import upgrade_statements as profiles_upgrade
from .schema_m015 import upgrade_statements as lean_links_upgrade
from .schema_m016 import upgrade_statements as call_steps_upgrade
from .schema_m017 import upgrade_statements as event_times_upgrade

migrations = Migrations("formicary")


@migrations(name="m001_core")
def m001_core(db: Database) -> None:
    """Sessions, cycles, the task tree, agents, model calls, actions, commits, verdicts and the event timeline."""
    db.executescript(
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,            -- ULID
            goal TEXT NOT NULL,
            repo TEXT NOT NULL,             -- absolute path of the target repository
            branch TEXT NOT NULL,           -- the shared branch workers land on
            base_sha TEXT,                  -- HEAD the branch was created from
            config TEXT,                    -- the effective config, JSON, secrets redacted
            status TEXT NOT NULL,           -- running | paused | stopped | done | failed
            stop_reason TEXT,
            scratchpad TEXT NOT NULL DEFAULT '',  -- the root planner's notes, rewritten each round
            pid INTEGER,                    -- process running it, for attach and resume
            started_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE TABLE cycles (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            number INTEGER NOT NULL,
            reason TEXT NOT NULL,           -- start | continue | fresh (forced) | resume
            status TEXT NOT NULL,           -- running | done | abandoned
            started_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            cycle_id TEXT NOT NULL REFERENCES cycles(id),
            parent_id TEXT REFERENCES tasks(id),  -- the planner that made it
            kind TEXT NOT NULL,             -- planner | subplanner | work
            depth INTEGER NOT NULL DEFAULT 0,
            title TEXT NOT NULL,
            instructions TEXT NOT NULL DEFAULT '',
            files TEXT,                     -- JSON list of files expected to change
            check_cmd TEXT,                 -- how to check the work
            status TEXT NOT NULL,           -- pending | running | done | failed | cancelled
            attempts INTEGER NOT NULL DEFAULT 0,
            handoff TEXT,                   -- JSON: summary, notes, concerns, deviations
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT
        );
        CREATE INDEX idx_tasks_session ON tasks(session_id, status);
        CREATE INDEX idx_tasks_parent ON tasks(parent_id);
        CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id),
            cycle_id TEXT REFERENCES cycles(id),
            task_id TEXT REFERENCES tasks(id),
            role TEXT NOT NULL,             -- planner | subplanner | worker | judge
            name TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,           -- running | done | failed | cancelled
            steps INTEGER NOT NULL DEFAULT 0,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE INDEX idx_agents_session ON agents(session_id);
        CREATE TABLE llm_calls (
            id TEXT PRIMARY KEY,
            session_id TEXT,
            agent_id TEXT,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            schema_name TEXT,
            request TEXT NOT NULL,          -- JSON messages, redacted
            response TEXT,                  -- raw reply text
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            error TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_llm_calls_agent ON llm_calls(agent_id);
        CREATE TABLE actions (
            id TEXT PRIMARY KEY,
            session_id TEXT,
            agent_id TEXT NOT NULL,
            task_id TEXT,
            step INTEGER NOT NULL,
            name TEXT NOT NULL,
            arguments TEXT,                 -- JSON
            observation TEXT,
            exit_code INTEGER,
            duration_ms REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_actions_agent ON actions(agent_id, step);
        CREATE TABLE commits (
            id TEXT PRIMARY KEY,
            session_id TEXT,
            task_id TEXT,
            agent_id TEXT,
            sha TEXT NOT NULL,              -- the worker's own commit
            integrated_sha TEXT,            -- the commit that landed on the shared branch
            branch TEXT NOT NULL,           -- the task branch that keeps the work
            status TEXT NOT NULL,           -- integrated | failed
            retries INTEGER NOT NULL DEFAULT 0,   -- compare-and-swap retries
            conflicts INTEGER NOT NULL DEFAULT 0, -- conflicts handed back to the worker
            duration_ms REAL,
            error TEXT,
            created_at TEXT NOT NULL,
            integrated_at TEXT
        );
        CREATE INDEX idx_commits_session ON commits(session_id);
        CREATE TABLE verdicts (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            cycle_id TEXT NOT NULL,
            decision TEXT NOT NULL,         -- continue | done
            reason TEXT NOT NULL,
            notes TEXT NOT NULL DEFAULT '',
            check_output TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order every UI follows
            id TEXT NOT NULL,
            session_id TEXT,
            kind TEXT NOT NULL,
            agent_id TEXT,
            task_id TEXT,
            data TEXT,                      -- JSON
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_events_session ON events(session_id, seq);
        """
    )


@migrations(name="m002_integrations_and_controls")
def m002_integrations_and_controls(db: Database) -> None:
    """Every integration attempt, and the control inbox an attached TUI writes to a running session."""
    db.executescript(
        """
        CREATE TABLE integrations (
            id TEXT PRIMARY KEY,
            session_id TEXT,
            task_id TEXT,
            agent_id TEXT,
            attempt INTEGER NOT NULL,
            result TEXT NOT NULL,           -- landed | moved (tip changed, redo) | conflict | failed
            old_tip TEXT,
            new_tip TEXT,
            conflict_paths TEXT,            -- JSON list
            duration_ms REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_integrations_task ON integrations(task_id);
        CREATE TABLE controls (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            kind TEXT NOT NULL,             -- pause | resume | fresh | stop | steer | workers
            payload TEXT,                   -- JSON
            source TEXT NOT NULL,           -- tui | attach | signal | cli
            created_at TEXT NOT NULL,
            consumed_at TEXT
        );
        CREATE INDEX idx_controls_session ON controls(session_id, consumed_at);
        """
    )


@migrations(name="m003_landing_gate")
def m003_landing_gate(db: Database) -> None:
    """The landing gate's decisions (one row per gated landing attempt) and the session's check."""
    db.executescript(
        """
        CREATE TABLE gates (
            id TEXT PRIMARY KEY,
            session_id TEXT,
            task_id TEXT,
            agent_id TEXT,
            verdict TEXT NOT NULL,          -- passed | refused | conflict
            reason TEXT,
            tip TEXT,                       -- the shared-branch commit the merge was gated on
            tree TEXT,                      -- the merged tree that was gated
            new_failures TEXT,              -- JSON list of test ids failing here but not on the tip
            parse_errors TEXT,              -- JSON {path: why} of changed files that no longer parse
            check_exit INTEGER,             -- the merged tree's check (NULL: not run or timed out)
            check_ms REAL,                  -- running the check on the merged tree
            tip_check_ms REAL,              -- running it on the tip, when this attempt did (else cached)
            duration_ms REAL,               -- the whole decision: merge, parse, check runs, waiting for a slot
            output TEXT,                    -- tail of the check's output when it failed
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_gates_task ON gates(task_id);
        ALTER TABLE sessions ADD COLUMN check_command TEXT;  -- the landing gate's check ('' none)
        ALTER TABLE sessions ADD COLUMN check_source TEXT;   -- config | --check | detected | none
        """
    )


@migrations(name="m004_gate_tip_exit")
def m004_gate_tip_exit(db: Database) -> None:
    """The exit status of the check on the tip a gate decision compared against (the session's check at start
    is the first one)."""
    db.executescript("ALTER TABLE gates ADD COLUMN tip_exit INTEGER;  -- NULL: no tip check known")


@migrations(name="m005_lean_calls")
def m005_lean_calls(db: Database) -> None:
    """A model call stores only the messages new since its agent's previous call (``parent_id``), after the
    first ``kept`` messages of that call's conversation; large texts are stored as zlib BLOBs.

    Rows written before this (``kept`` NULL) hold their whole conversation in ``request``, as text. Either way
    ``store.queries.call_messages`` rebuilds the conversation that was sent.
    """
    db.executescript(
        """
        ALTER TABLE llm_calls ADD COLUMN parent_id TEXT;  -- the same agent's previous call, NULL for the first
        ALTER TABLE llm_calls ADD COLUMN kept INTEGER;    -- messages of the parent's conversation that come first
        """
    )


@migrations(name="m006_llm_call_timings")
def m006_llm_call_timings(db: Database) -> None:
    """Where a model call's time went: waiting for an endpoint slot here, and the server's prompt processing and
    generation (llama-server's ``timings``), with the slot it ran on and the prompt tokens served from its cache."""
    db.executescript(
        """
        ALTER TABLE llm_calls ADD COLUMN queue_ms REAL;
        ALTER TABLE llm_calls ADD COLUMN prompt_ms REAL;
        ALTER TABLE llm_calls ADD COLUMN predicted_ms REAL;
        ALTER TABLE llm_calls ADD COLUMN cached_tokens INTEGER;
        ALTER TABLE llm_calls ADD COLUMN slot INTEGER;
        """
    )


EVENT_LOG = """
CREATE TABLE event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order every UI follows, shared with actions and llm_calls
    id TEXT,                                -- unused since m007 (NULL)
    session_id TEXT,
    kind TEXT NOT NULL,
    agent_id TEXT,
    task_id TEXT,
    data TEXT,                              -- JSON
    created_at TEXT NOT NULL
)"""

ACTIONS = """
CREATE TABLE actions (
    seq INTEGER PRIMARY KEY,        -- its place in the timeline (its agent_step event); < 0: from before m007
    id TEXT,                        -- unused since m007 (NULL)
    session_id TEXT,
    agent_id TEXT NOT NULL,
    task_id TEXT,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    arguments TEXT,                 -- JSON
    observation TEXT,
    exit_code INTEGER,
    duration_ms REAL,
    created_at INTEGER NOT NULL,    -- ms since the epoch, UTC (ISO text in rows from before m007)
    target TEXT,                    -- the path or command it was about, as its event shows it
    error INTEGER                   -- 1: the action failed
)"""

LLM_CALLS = """
CREATE TABLE llm_calls (
    seq INTEGER PRIMARY KEY,        -- its place in the timeline (its llm_call event); < 0: from before m007
    id TEXT NOT NULL,               -- a ULID; not indexed: calls are read by agent (parents resolved in memory)
    session_id TEXT,
    agent_id TEXT,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    schema_name TEXT,
    request TEXT NOT NULL,          -- JSON messages new since parent_id's, redacted (see store.conversation)
    response TEXT,                  -- raw reply text
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at INTEGER NOT NULL,    -- ms since the epoch, UTC (ISO text in rows from before m007)
    parent_id TEXT,                 -- the same agent's previous call, NULL for the first
    kept INTEGER,                   -- messages of the parent's conversation (+ its reply) that come first
    queue_ms REAL,
    prompt_ms REAL,
    predicted_ms REAL,
    cached_tokens INTEGER,
    slot INTEGER
)"""

EVENTS_VIEW = """
CREATE VIEW events AS
SELECT seq, id, session_id, kind, agent_id, task_id, data, created_at FROM event_log
UNION ALL
SELECT seq, NULL, session_id, 'agent_step', agent_id, task_id,
       json_object('step', step, 'action', name, 'target', COALESCE(target, ''),
                   'observation', CASE typeof(observation) WHEN 'text' THEN substr(observation, 1, 300) END,
                   'exit_code', exit_code, 'error', json(CASE WHEN error THEN 'true' ELSE 'false' END)),
       CASE typeof(created_at) WHEN 'integer'
           THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', created_at / 1000.0, 'unixepoch') ELSE created_at END
FROM actions WHERE seq > 0
UNION ALL
SELECT seq, NULL, session_id, 'llm_call', agent_id, NULL,
       json_object('role', role, 'prompt_tokens', COALESCE(prompt_tokens, 0),
                   'completion_tokens', COALESCE(completion_tokens, 0), 'latency_ms', latency_ms,
                   'error', error, 'endpoint', endpoint),
       CASE typeof(created_at) WHEN 'integer'
           THEN strftime('%Y-%m-%dT%H:%M:%f+00:00', created_at / 1000.0, 'unixepoch') ELSE created_at END
FROM llm_calls WHERE seq > 0"""

DICTIONARIES = """
CREATE TABLE dictionaries (
    id INTEGER PRIMARY KEY,         -- its Adler-32, as the zlib header of a text compressed against it names it
    body BLOB NOT NULL              -- the first text of its kind the writer stored (a role's first request)
)"""

EVENTS_INSERT = """
CREATE TRIGGER events_insert INSTEAD OF INSERT ON events BEGIN
    INSERT INTO event_log (seq, id, session_id, kind, agent_id, task_id, data, created_at)
    VALUES (NEW.seq, NEW.id, NEW.session_id, NEW.kind, NEW.agent_id, NEW.task_id, NEW.data, NEW.created_at);
END"""


@migrations(name="m007_events_from_rows")
def m007_events_from_rows(db: Database) -> None:
    """A model call and a worker's action are their own events: the ``events`` timeline becomes a view over
    ``event_log`` (every other kind) and the ``llm_calls`` and ``actions`` rows, which take their ``seq`` from
    the same sequence (the writer assigns it), instead of a second row repeating each one.

    Rows from before keep their events in ``event_log`` and get a negative ``seq`` (the view skips those).
    ``events`` stays insertable (a trigger forwards to ``event_log``). ``dictionaries`` holds the shared
    dictionaries texts are compressed against (see ``store.packing``).
    """
    old_actions = [c.name for c in db["actions"].columns]
    old_calls = [c.name for c in db["llm_calls"].columns]
    statements = [
        EVENT_LOG,
        "INSERT INTO event_log (seq, id, session_id, kind, agent_id, task_id, data, created_at) "
        "SELECT seq, id, session_id, kind, agent_id, task_id, data, created_at FROM events ORDER BY seq",
        "DROP TABLE events",
        "CREATE INDEX idx_event_log_session ON event_log(session_id, seq)",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'event_log', 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'event_log')",
        "ALTER TABLE actions RENAME TO actions_m006",
        ACTIONS,
        f"INSERT INTO actions (seq, {', '.join(old_actions)}) "
        f"SELECT -rowid, {', '.join(old_actions)} FROM actions_m006",
        "DROP TABLE actions_m006",
        "CREATE INDEX idx_actions_agent ON actions(agent_id, step)",
        "ALTER TABLE llm_calls RENAME TO llm_calls_m006",
        LLM_CALLS,
        f"INSERT INTO llm_calls (seq, {', '.join(old_calls)}) "
        f"SELECT -rowid, {', '.join(old_calls)} FROM llm_calls_m006",
        "DROP TABLE llm_calls_m006",
        "CREATE INDEX idx_llm_calls_agent ON llm_calls(agent_id)",
        EVENTS_VIEW,
        EVENTS_INSERT,
        DICTIONARIES,
    ]
    for sql in statements:
        db.execute(sql)


@migrations(name="m008_compact_timeline")
def m008_compact_timeline(db: Database) -> None:
    """The rows written for every model call hold integers where they held repeated text: ids and labels are
    stored once in ``names``, times as milliseconds, durations as integers (see ``store.schema_m008``).
    ``llm_calls``, ``actions``, ``event_log`` and ``events`` become views with the same columns as before; a
    model call's id becomes its ``seq``, its ``parent_id`` its parent's ``seq``."""
    for sql in upgrade_statements():
        db.execute(sql)


@migrations(name="m009_compact_landings")
def m009_compact_landings(db: Database) -> None:
    """``commits`` and ``integrations`` (a row or two per landed task) store their ids and labels in ``names``,
    times as milliseconds, and no ULID key or default branch name (see ``store.schema_m009``); they become views
    with the same columns (an id is the row's number)."""
    for sql in landings_upgrade():
        db.execute(sql)


@migrations(name="m010_targets_and_references")
def m010_targets_and_references(db: Database) -> None:
    """An action's target is a label in ``names`` (see ``store.schema_m010``); texts the record holds already
    are stored as references and frames from here on (see ``store.derived``)."""
    for sql in targets_upgrade():
        db.execute(sql)


@migrations(name="m011_compact_agents")
def m011_compact_agents(db: Database) -> None:
    """``agents`` (a row per agent) stores its ids and labels in ``names``, times as milliseconds and no usual
    name (see ``store.schema_m011``); it becomes a view with the same columns, insertable and updatable."""
    for sql in agents_upgrade():
        db.execute(sql)


@migrations(name="m012_compact_tasks")
def m012_compact_tasks(db: Database) -> None:
    """``tasks`` (a row per task) stores its ids and labels in ``names`` and times as milliseconds (see
    ``store.schema_m012``); it becomes a view with the same columns, insertable and updatable."""
    for sql in tasks_upgrade():
        db.execute(sql)


@migrations(name="m013_step_ranges_and_binary_shas")
def m013_step_ranges_and_binary_shas(db: Database) -> None:
    """``steps`` is not indexed by agent: an ``agent_rows`` row says the range of the timeline its steps lie in;
    SHAs of commits and landings are stored as 20 bytes (see ``store.schema_m013``)."""
    for sql in ranges_upgrade():
        db.execute(sql)


@migrations(name="m014_call_profiles_and_agent_times")
def m014_call_profiles_and_agent_times(db: Database) -> None:
    """A model call's role, model, endpoint and schema are one ``profiles`` row; a call's and a step's time counts
    from its agent's start, a step's task is its agent's unless it says otherwise; a call's server timings are
    integer hundredths of a millisecond (see ``store.schema_m014``)."""
    for sql in profiles_upgrade():
        db.execute(sql)


@migrations(name="m015_previous_call_and_landed_commits")
def m015_previous_call_and_landed_commits(db: Database) -> None:
    """A call's parent is stored as "its agent's previous call"; commit rows are indexed by their task, so a
    landing's event need not repeat its commit row (see ``store.schema_m015``)."""
    for sql in lean_links_upgrade():
        db.execute(sql)


@migrations(name="m016_calls_hold_their_steps")
def m016_calls_hold_their_steps(db: Database) -> None:
    """A worker's step is stored in the row of the call that chose it (see ``store.schema_m016``)."""
    existing = dict(
        db.execute("SELECT name, sql FROM sqlite_schema WHERE type IN ('trigger', 'view')").fetchall()
    )
    for sql in call_steps_upgrade(existing):
        db.execute(sql)


@migrations(name="m017_event_times_since_agent_or_task")
def m017_event_times_since_agent_or_task(db: Database) -> None:
    """An event's time counts from its agent's start or its task's creation (see ``store.schema_m017``)."""
    for sql in event_times_upgrade():
        db.execute(sql)


def apply(db: Database) -> None:
    """Bring ``db`` up to the newest schema."""
    migrations.apply(db)
