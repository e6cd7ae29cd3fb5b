"""The stored log of one agent: what the log pane shows when an agent is selected, read from the record."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..agents.session import events as ev
from ..agents.status import Role
from ..store import queries as q
from .loglines import LogChunk, action_row_chunk, agent_header, ended_line, event_chunk

HISTORY = 400
"""Actions (or timeline rows) of one agent the log pane holds at most."""


class StoredLog(NamedTuple):
    chunks: list[LogChunk]
    upto: int
    """The event ``seq`` the chunks are current to."""
    complete: bool
    """False when ``limit`` cut older rows off (a longer read gives them)."""


def read_agent_log(db: Any, session_id: str, agent_id: str, limit: int = HISTORY) -> StoredLog:
    """What the log pane shows when an agent is selected: its newest ``limit`` actions or timeline rows.

    Workers' stories are their ``actions`` rows (indexed by agent); planners and the judge keep theirs in the
    timeline. Read in one transaction so the follower's later chunks can be told apart from these.
    """
    db.conn.execute("BEGIN")
    try:
        upto = q.max_event_seq(db, session_id)
        rows = q.agents_by_ids(db, [agent_id])
        if not rows:
            return StoredLog([LogChunk(upto, None, ("This agent is not in the record yet.",))], upto, True)
        agent = rows[0]
        task = q.tasks_by_ids(db, [agent["task_id"]]) if agent["task_id"] else []
        chunks = [LogChunk(0, None, agent_header(agent, task[0]["title"] if task else None))]
        if agent["role"] == Role.WORKER:
            actions = q.last_actions_of(db, agent_id, limit)
            complete = len(actions) < limit
            chunks += [action_row_chunk(row) for row in actions]
            if agent["ended_at"]:
                line = ended_line(
                    agent["status"], agent["steps"], agent["prompt_tokens"], agent["completion_tokens"]
                )
                chunks.append(LogChunk(upto, None, (line,)))
        else:
            events = q.agent_events(db, session_id, agent_id, limit)
            complete = len(events) < limit
            for row in events:
                chunk = event_chunk(ev.from_row(row), agent["role"])
                if chunk is not None:
                    chunks.append(chunk)
        return StoredLog(chunks, upto, complete)
    finally:
        db.conn.execute("COMMIT")
