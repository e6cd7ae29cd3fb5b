"""Migration m009: the rows written once per landing (``commits``, ``integrations``) become compact like the
timeline's in m008: ids and labels interned in ``names``, times in milliseconds, durations in integer
hundredths of a millisecond, a task branch named by the usual pattern not spelled out, and no ULID key (a row's
id is its ``rowid``). ``commits`` and ``integrations`` are views with the old columns; inserting into them
stores the compact row.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, id_of, name_of

BRANCH = "'formicary-tasks/' || {session} || '/' || {task}"
"""The branch a task's work is kept on (agents.git.workspace names it so): stored only when it differs."""

MS = "CAST(round((julianday({col}) - 2440587.5) * 86400000) AS INTEGER)"


def _ms_or_text(col: str) -> str:
    """An ISO time as milliseconds when they read back as the same text (else the text itself)."""
    ms = MS.format(col=col)
    back = f"strftime('%Y-%m-%dT%H:%M:%f+00:00', {ms} / 1000.0, 'unixepoch')"
    return f"CASE WHEN typeof({col}) = 'text' AND {back} = {col} THEN {ms} ELSE {col} END"


def _hundredths(value: str) -> str:
    return f"CAST(round({value} * 100) AS INTEGER)"


COMMIT_ROWS = """
CREATE TABLE commit_rows (
    id INTEGER PRIMARY KEY,
    session INTEGER,                -- names
    task INTEGER,                   -- names
    agent INTEGER,                  -- names
    sha TEXT NOT NULL,              -- the worker's own commit
    integrated_sha TEXT,            -- the commit that landed on the shared branch
    branch TEXT,                    -- the task branch that keeps the work; NULL: formicary-tasks/SESSION/TASK
    status INTEGER NOT NULL,        -- names: integrated | failed
    retries INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0,
    duration_cs INTEGER,            -- hundredths of a millisecond
    error TEXT,
    created_at NOT NULL,            -- ms since the epoch, UTC, or ISO text
    integrated_at                   -- ms since the epoch, UTC, or ISO text
)"""

INTEGRATION_ROWS = """
CREATE TABLE integration_rows (
    id INTEGER PRIMARY KEY,
    session INTEGER,                -- names
    task INTEGER,                   -- names
    agent INTEGER,                  -- names
    attempt INTEGER NOT NULL,
    result INTEGER NOT NULL,        -- names: landed | moved | conflict | failed | held
    old_tip TEXT,
    new_tip TEXT,
    conflict_paths TEXT,            -- JSON list
    duration_cs INTEGER,            -- hundredths of a millisecond
    created_at NOT NULL             -- ms since the epoch, UTC, or ISO text
)"""

COMMITS_VIEW = f"""
CREATE VIEW commits AS
SELECT CAST(c.id AS TEXT) AS id, s.name AS session_id, k.name AS task_id, {name_of("c.agent")} AS agent_id,
       c.sha, c.integrated_sha, COALESCE(c.branch, {BRANCH.format(session="s.name", task="k.name")}) AS branch,
       {name_of("c.status")} AS status, c.retries, c.conflicts, c.duration_cs / 100.0 AS duration_ms, c.error,
       {ISO_TIME.format(col="c.created_at")} AS created_at,
       {ISO_TIME.format(col="c.integrated_at")} AS integrated_at
FROM commit_rows c LEFT JOIN names s ON s.id = c.session LEFT JOIN names k ON k.id = c.task"""

INTEGRATIONS_VIEW = f"""
CREATE VIEW integrations AS
SELECT CAST(i.id AS TEXT) AS id, {name_of("i.session")} AS session_id, k.name AS task_id,
       {name_of("i.agent")} AS agent_id, i.attempt, {name_of("i.result")} AS result, i.old_tip, i.new_tip,
       i.conflict_paths, i.duration_cs / 100.0 AS duration_ms, {ISO_TIME.format(col="i.created_at")} AS created_at
FROM integration_rows i LEFT JOIN names k ON k.id = i.task"""


def _intern(*values: str) -> str:
    return f"INSERT OR IGNORE INTO names (name) VALUES {', '.join(f'({v})' for v in values)};"


COMMITS_INSERT = f"""
CREATE TRIGGER commits_insert INSTEAD OF INSERT ON commits BEGIN
    {_intern("NEW.session_id", "NEW.task_id", "NEW.agent_id", "NEW.status")}
    INSERT INTO commit_rows (session, task, agent, sha, integrated_sha, branch, status, retries, conflicts,
                             duration_cs, error, created_at, integrated_at)
    VALUES ({id_of("NEW.session_id")}, {id_of("NEW.task_id")}, {id_of("NEW.agent_id")}, NEW.sha,
            NEW.integrated_sha,
            CASE WHEN NEW.branch IS {BRANCH.format(session="NEW.session_id", task="NEW.task_id")} THEN NULL
                 ELSE NEW.branch END,
            {id_of("NEW.status")}, COALESCE(NEW.retries, 0), COALESCE(NEW.conflicts, 0),
            {_hundredths("NEW.duration_ms")}, NEW.error, {_ms_or_text("NEW.created_at")},
            {_ms_or_text("NEW.integrated_at")});
END"""

INTEGRATIONS_INSERT = f"""
CREATE TRIGGER integrations_insert INSTEAD OF INSERT ON integrations BEGIN
    {_intern("NEW.session_id", "NEW.task_id", "NEW.agent_id", "NEW.result")}
    INSERT INTO integration_rows (session, task, agent, attempt, result, old_tip, new_tip, conflict_paths,
                                  duration_cs, created_at)
    VALUES ({id_of("NEW.session_id")}, {id_of("NEW.task_id")}, {id_of("NEW.agent_id")}, NEW.attempt,
            {id_of("NEW.result")}, NEW.old_tip, NEW.new_tip, NEW.conflict_paths, {_hundredths("NEW.duration_ms")},
            {_ms_or_text("NEW.created_at")});
END"""


def upgrade_statements() -> list[str]:
    """From m008's ``commits`` and ``integrations`` tables to m009's, rows and all (in their order)."""
    return [
        "ALTER TABLE commits RENAME TO commits_m008",
        "ALTER TABLE integrations RENAME TO integrations_m008",
        *[
            f"INSERT OR IGNORE INTO names (name) SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL"
            for t, cols in (
                ("commits_m008", ("session_id", "task_id", "agent_id", "status")),
                ("integrations_m008", ("session_id", "task_id", "agent_id", "result")),
            )
            for c in cols
        ],
        COMMIT_ROWS,
        INTEGRATION_ROWS,
        COMMITS_VIEW,
        INTEGRATIONS_VIEW,
        COMMITS_INSERT,
        INTEGRATIONS_INSERT,
        "INSERT INTO commits (session_id, task_id, agent_id, sha, integrated_sha, branch, status, retries, "
        "conflicts, duration_ms, error, created_at, integrated_at) SELECT session_id, task_id, agent_id, sha, "
        "integrated_sha, branch, status, retries, conflicts, duration_ms, error, created_at, integrated_at "
        "FROM commits_m008 ORDER BY rowid",
        "INSERT INTO integrations (session_id, task_id, agent_id, attempt, result, old_tip, new_tip, "
        "conflict_paths, duration_ms, created_at) SELECT session_id, task_id, agent_id, attempt, result, "
        "old_tip, new_tip, conflict_paths, duration_ms, created_at FROM integrations_m008 ORDER BY rowid",
        "DROP TABLE commits_m008",
        "DROP TABLE integrations_m008",
        "CREATE INDEX idx_commit_rows_session ON commit_rows(session)",
        "CREATE INDEX idx_integration_rows_task ON integration_rows(task)",
    ]
