"""Migration m013: three things the record stored at a cost for every model call or landing.

- ``steps`` loses its index on the agent (``idx_steps_agent``, ~13 bytes a step): an agent's steps are found by
  their place in the timeline instead. Its ``agent_rows`` row says where to look: ``first_seq``, the timeline's
  last ``seq`` when the agent started (each of its steps comes later), and ``last_seq``, the last one when it
  ended (each came before). A reader scans that range of ``steps`` (a worker lives one task: a few thousand
  rows) by its ``rowid``. An agent of a record from before starts at its first step (read while the index is
  still there) and has no end.
- ``log`` loses its index on the session (``idx_log_session``, ~5 bytes a call: an index appended to keeps
  its pages half full): a follower reads the timeline by ``seq``, and a record holds one session at a time,
  or few; a reader of one session's log scans it.
- A commit's and a landing's SHAs (four per landed task) are 20-byte BLOBs instead of 40 characters of hex: the
  writer stores them so (``store.writer``: a SHA that reads back as the same text), the ``commits`` and
  ``integrations`` views give the hex back.
"""

from __future__ import annotations

from .schema_m008 import LAST_SEQ, id_of
from .schema_m009 import (
    BRANCH,
    COMMITS_INSERT,
    INTEGRATIONS_INSERT,
    ISO_TIME,
    name_of,
)
from .schema_m011 import COLUMNS, INTERNED, _intern, _values

UNBOUNDED = 1 << 62
"""The range of an agent whose start or end the record does not say (rows written before m013)."""


def hex_of(col: str) -> str:
    """A SHA as hex text, stored as a BLOB since m013 (text before)."""
    return f"CASE typeof({col}) WHEN 'blob' THEN lower(hex({col})) ELSE {col} END"


COMMITS_VIEW = f"""
CREATE VIEW commits AS
SELECT CAST(c.id AS TEXT) AS id, s.name AS session_id, k.name AS task_id, {name_of("c.agent")} AS agent_id,
       {hex_of("c.sha")} AS sha, {hex_of("c.integrated_sha")} AS integrated_sha,
       COALESCE(c.branch, {BRANCH.format(session="s.name", task="k.name")}) AS branch,
       {name_of("c.status")} AS status, c.retries, c.conflicts, c.duration_cs / 100.0 AS duration_ms, c.error,
       {ISO_TIME.format(col="c.created_at")} AS created_at,
       {ISO_TIME.format(col="c.integrated_at")} AS integrated_at
FROM commit_rows c LEFT JOIN names s ON s.id = c.session LEFT JOIN names k ON k.id = c.task"""

INTEGRATIONS_VIEW = f"""
CREATE VIEW integrations AS
SELECT CAST(i.id AS TEXT) AS id, {name_of("i.session")} AS session_id, k.name AS task_id,
       {name_of("i.agent")} AS agent_id, i.attempt, {name_of("i.result")} AS result, {hex_of("i.old_tip")} AS old_tip,
       {hex_of("i.new_tip")} AS new_tip, i.conflict_paths, i.duration_cs / 100.0 AS duration_ms,
       {ISO_TIME.format(col="i.created_at")} AS created_at
FROM integration_rows i LEFT JOIN names k ON k.id = i.task"""

AGENTS_INSERT = f"""
CREATE TRIGGER agents_insert INSTEAD OF INSERT ON agents BEGIN
    {_intern("NEW.id", *(f"NEW.{c}" for c in INTERNED))}
    INSERT INTO agent_rows (id, {COLUMNS}, first_seq) VALUES ({id_of("NEW.id")}, {_values("NEW")}, ({LAST_SEQ}));
END"""

AGENTS_UPDATE = f"""
CREATE TRIGGER agents_update INSTEAD OF UPDATE ON agents BEGIN
    {_intern(*(f"NEW.{c}" for c in INTERNED))}
    UPDATE agent_rows SET ({COLUMNS}, last_seq) = ({_values("NEW")},
                                                   CASE WHEN NEW.ended_at IS NOT NULL THEN ({LAST_SEQ}) END)
    WHERE id = {id_of("OLD.id")};
END"""


def upgrade_statements() -> list[str]:
    """From m012's record to m013's; the rows stay as they are (SHAs stored before stay text)."""
    return [
        "ALTER TABLE agent_rows ADD COLUMN first_seq INTEGER",  # the timeline's last seq when it started
        "ALTER TABLE agent_rows ADD COLUMN last_seq INTEGER",  # ... when it ended (NULL: running)
        # an agent from before: its steps come from its first one on, read while they are indexed (it may take
        # more if its session goes on; an agent without steps: anywhere)
        "UPDATE agent_rows SET first_seq = (SELECT MIN(seq) FROM steps WHERE agent = agent_rows.id)",
        "DROP INDEX IF EXISTS idx_steps_agent",
        "DROP INDEX IF EXISTS idx_log_session",
        "DROP TRIGGER IF EXISTS agents_insert",
        "DROP TRIGGER IF EXISTS agents_update",
        AGENTS_INSERT,
        AGENTS_UPDATE,
        "DROP VIEW IF EXISTS commits",
        "DROP VIEW IF EXISTS integrations",
        COMMITS_VIEW,
        INTEGRATIONS_VIEW,
        COMMITS_INSERT,
        INTEGRATIONS_INSERT,
    ]
