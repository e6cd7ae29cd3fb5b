"""Migration m011: an ``agents`` row (one per worker, planner or judge) is compact like the timeline's rows: its
id, session, cycle and task are ``names`` (an agent's id is already there: its calls and steps name it, and
its row's key is that name's id, so no index on a ULID), its role, model and status are labels, its times
milliseconds, and its name is not spelled out when it is the usual ``role-xxxxxx`` (the id's last six
characters). ``agents`` is a view with the old columns; inserting into it and updating it (an agent's end)
store the compact row.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, id_of, name_of
from .schema_m009 import _ms_or_text

NAME = "{role} || '-' || lower(substr({id}, -6))"
"""An agent's usual name (agents.session.state names it so): stored only when it differs."""

AGENT_ROWS = """
CREATE TABLE agent_rows (
    id INTEGER PRIMARY KEY,         -- names: the agent's id
    session INTEGER,                -- names
    cycle INTEGER,                  -- names
    task INTEGER,                   -- names
    role INTEGER NOT NULL,          -- names
    name TEXT,                      -- NULL: role-xxxxxx, the id's last six characters in lower case
    model INTEGER NOT NULL,         -- names
    status INTEGER NOT NULL,        -- names: running | done | failed | cancelled
    steps INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    started_at NOT NULL,            -- ms since the epoch, UTC, or ISO text
    ended_at                        -- ms since the epoch, UTC, or ISO text
)"""

AGENTS_VIEW = f"""
CREATE VIEW agents AS
SELECT i.name AS id, s.name AS session_id, {name_of("r.cycle")} AS cycle_id, {name_of("r.task")} AS task_id,
       {name_of("r.role")} AS role,
       COALESCE(r.name, {NAME.format(role=name_of("r.role"), id="i.name")}) AS name,
       {name_of("r.model")} AS model, {name_of("r.status")} AS status, r.steps, r.prompt_tokens,
       r.completion_tokens, {ISO_TIME.format(col="r.started_at")} AS started_at,
       {ISO_TIME.format(col="r.ended_at")} AS ended_at
FROM agent_rows r JOIN names i ON i.id = r.id LEFT JOIN names s ON s.id = r.session"""


def _intern(*values: str) -> str:
    return f"INSERT OR IGNORE INTO names (name) VALUES {', '.join(f'({v})' for v in values)};"


def _values(new: str) -> str:
    """The compact columns (after ``id``) of a row given as the view's columns in ``new``."""
    usual = NAME.format(role=f"{new}.role", id=f"{new}.id")
    return (
        f"{id_of(f'{new}.session_id')}, {id_of(f'{new}.cycle_id')}, {id_of(f'{new}.task_id')}, "
        f"{id_of(f'{new}.role')}, CASE WHEN {new}.name IS {usual} THEN NULL ELSE {new}.name END, "
        f"{id_of(f'{new}.model')}, {id_of(f'{new}.status')}, COALESCE({new}.steps, 0), "
        f"COALESCE({new}.prompt_tokens, 0), COALESCE({new}.completion_tokens, 0), "
        f"{_ms_or_text(f'{new}.started_at')}, {_ms_or_text(f'{new}.ended_at')}"
    )


COLUMNS = "session, cycle, task, role, name, model, status, steps, prompt_tokens, completion_tokens, started_at, ended_at"
INTERNED = ("session_id", "cycle_id", "task_id", "role", "model", "status")

AGENTS_INSERT = f"""
CREATE TRIGGER agents_insert INSTEAD OF INSERT ON agents BEGIN
    {_intern("NEW.id", *(f"NEW.{c}" for c in INTERNED))}
    INSERT INTO agent_rows (id, {COLUMNS}) VALUES ({id_of("NEW.id")}, {_values("NEW")});
END"""

AGENTS_UPDATE = f"""
CREATE TRIGGER agents_update INSTEAD OF UPDATE ON agents BEGIN
    {_intern(*(f"NEW.{c}" for c in INTERNED))}
    UPDATE agent_rows SET ({COLUMNS}) = ({_values("NEW")}) WHERE id = {id_of("OLD.id")};
END"""


def upgrade_statements() -> list[str]:
    """From the ``agents`` table to m011's, rows and all."""
    old = "agents_m010"
    return [
        "DROP INDEX IF EXISTS idx_agents_session",
        f"ALTER TABLE agents RENAME TO {old}",
        *[
            f"INSERT OR IGNORE INTO names (name) SELECT DISTINCT {c} FROM {old} WHERE {c} IS NOT NULL"
            for c in ("id", *INTERNED)
        ],
        AGENT_ROWS,
        f"INSERT INTO agent_rows (id, {COLUMNS}) SELECT {id_of('o.id')}, {_values('o')} FROM {old} o "
        "ORDER BY o.rowid",
        f"DROP TABLE {old}",
        "CREATE INDEX idx_agent_rows_session ON agent_rows(session)",
        AGENTS_VIEW,
        AGENTS_INSERT,
        AGENTS_UPDATE,
    ]
