"""``formicary calls AGENT``: an agent's model calls with the whole conversation each sent, rebuilt from the lean
record (which stores only what was new at each call)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_common import fail


@click.command()
@click.argument("agent")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
@click.option("--last", type=int, default=0, help="Only the newest N calls (0: all).")
def calls(agent: str, db_path: Path | None, last: int) -> None:
    """Print AGENT's model calls as JSON lines: messages sent, reply, tokens, error.

    AGENT is an agent id, or its first or last characters when they name one agent.
    """
    from .agents import paths
    from .store import db as store_db
    from .store.queries import agent_calls

    path = db_path or paths.default_db_path()
    if not path.exists():
        fail(f"no record at {path}")
    db = store_db.connect(path, readonly=True)
    like = agent.upper()
    ids = [
        r[0]
        for r in db.execute(
            "SELECT id FROM agents WHERE id = ? OR id LIKE ? OR id LIKE ? LIMIT 2",
            [like, like + "%", "%" + like],
        )
    ]
    if len(ids) != 1:
        fail(f"{'no agent' if not ids else 'more than one agent'} matches {agent!r}")
    try:
        rows = agent_calls(db, ids[0])
    except LookupError as exc:
        fail(str(exc))
    keep = (
        "id",
        "role",
        "schema_name",
        "endpoint",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "error",
    )
    for row in rows[-last:] if last > 0 else rows:
        out = {k: row[k] for k in keep} | {"messages": row["messages"], "response": row["response"]}
        click.echo(json.dumps(out, ensure_ascii=False))
