"""Migration m012: a ``tasks`` row is compact like an ``agents`` row since m011: its id, session, cycle and parent
are ``names`` (the task's id is already there: its steps and events name it, and its row's key is that name's
id, so no index on a ULID), its kind and status are labels, its times milliseconds. ``tasks`` is a view with
the old columns; inserting into it and updating it (a task starting, ending, going back to the queue) store the
compact row.
"""

from __future__ import annotations

from .schema_m008 import ISO_TIME, id_of, name_of
from .schema_m009 import _ms_or_text
from .schema_m011 import _intern

TASK_ROWS = """
CREATE TABLE task_rows (
    id INTEGER PRIMARY KEY,         -- names: the task's id
    session INTEGER,                -- names
    cycle INTEGER,                  -- names
    parent INTEGER,                 -- names: the planner's task that made it
    kind INTEGER NOT NULL,          -- names: planner | subplanner | work
    depth INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL DEFAULT '',
    files TEXT,                     -- JSON list of files expected to change
    check_cmd TEXT,
    status INTEGER NOT NULL,        -- names: pending | running | done | failed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    handoff TEXT,                   -- JSON: summary, notes, commit
    error TEXT,
    created_at NOT NULL,            -- ms since the epoch, UTC, or ISO text
    started_at,                     -- ms since the epoch, UTC, or ISO text
    ended_at                        -- ms since the epoch, UTC, or ISO text
)"""

TASKS_VIEW = f"""
CREATE VIEW tasks AS
SELECT i.name AS id, s.name AS session_id, {name_of("r.cycle")} AS cycle_id, {name_of("r.parent")} AS parent_id,
       {name_of("r.kind")} AS kind, r.depth, r.title, r.instructions, r.files, r.check_cmd,
       {name_of("r.status")} AS status, r.attempts, r.handoff, r.error,
       {ISO_TIME.format(col="r.created_at")} AS created_at, {ISO_TIME.format(col="r.started_at")} AS started_at,
       {ISO_TIME.format(col="r.ended_at")} AS ended_at
FROM task_rows r JOIN names i ON i.id = r.id LEFT JOIN names s ON s.id = r.session"""

COLUMNS = (
    "session, cycle, parent, kind, depth, title, instructions, files, check_cmd, status, attempts, handoff, "
    "error, created_at, started_at, ended_at"
)
INTERNED = ("session_id", "cycle_id", "parent_id", "kind", "status")


def _values(new: str) -> str:
    """The compact columns (after ``id``) of a row given as the view's columns in ``new``."""
    return (
        f"{id_of(f'{new}.session_id')}, {id_of(f'{new}.cycle_id')}, {id_of(f'{new}.parent_id')}, "
        f"{id_of(f'{new}.kind')}, COALESCE({new}.depth, 0), {new}.title, COALESCE({new}.instructions, ''), "
        f"{new}.files, {new}.check_cmd, {id_of(f'{new}.status')}, COALESCE({new}.attempts, 0), {new}.handoff, "
        f"{new}.error, {_ms_or_text(f'{new}.created_at')}, {_ms_or_text(f'{new}.started_at')}, "
        f"{_ms_or_text(f'{new}.ended_at')}"
    )


TASKS_INSERT = f"""
CREATE TRIGGER tasks_insert INSTEAD OF INSERT ON tasks BEGIN
    {_intern("NEW.id", *(f"NEW.{c}" for c in INTERNED))}
    INSERT INTO task_rows (id, {COLUMNS}) VALUES ({id_of("NEW.id")}, {_values("NEW")});
END"""

TASKS_UPDATE = f"""
CREATE TRIGGER tasks_update INSTEAD OF UPDATE ON tasks BEGIN
    {_intern(*(f"NEW.{c}" for c in INTERNED))}
    UPDATE task_rows SET ({COLUMNS}) = ({_values("NEW")}) WHERE id = {id_of("OLD.id")};
END"""


def upgrade_statements() -> list[str]:
    """From the ``tasks`` table to m012's, rows and all."""
    old = "tasks_m011"
    return [
        f"ALTER TABLE tasks RENAME TO {old}",
        *[
            f"INSERT OR IGNORE INTO names (name) SELECT DISTINCT {c} FROM {old} WHERE {c} IS NOT NULL"
            for c in ("id", *INTERNED)
        ],
        TASK_ROWS,
        f"INSERT INTO task_rows (id, {COLUMNS}) SELECT {id_of('o.id')}, {_values('o')} FROM {old} o "
        "ORDER BY o.rowid",
        f"DROP TABLE {old}",
        "CREATE INDEX idx_task_rows_session ON task_rows(session)",
        TASKS_VIEW,
        TASKS_INSERT,
        TASKS_UPDATE,
    ]
