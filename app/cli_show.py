"""``formicary show [SESSION]``: the end-of-session summary of any session in the record."""

from __future__ import annotations

from pathlib import Path

import click

from .cli import fail


@click.command()
@click.argument("session", required=False)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
def show(session: str | None, db_path: Path | None) -> None:
    """Summarise SESSION (an id, its first or last characters; default: the newest): branch, commits, tasks,
    checks, tokens per role, wall time and the git commands to review and merge its branch."""
    from .summary import load_summary, render

    db = open_record(db_path)
    row = find_row(db, session)
    click.echo("\n".join(render(load_summary(db, row["id"]))))


def open_record(db_path: Path | None):
    """The record, read-only; a one-line error if there is none."""
    import sqlite3

    from .agents import paths
    from .store import db as store_db

    path = db_path or paths.default_db_path()
    if not path.is_file():
        fail(f"no record at {path}")
    try:
        db = store_db.connect(path, readonly=True, migrate=False)
        db.execute("SELECT 1 FROM sessions LIMIT 1")
    except sqlite3.DatabaseError as exc:
        fail(f"cannot read the record at {path}: {exc}")
    return db


def find_row(db, session: str | None) -> dict:
    """The session named by ``session`` (first or last characters of its id), or the newest one."""
    from .store.queries import find_session, get_session

    row = find_session(db, session)
    if row is None and session:
        rows = list(db.query("SELECT id FROM sessions WHERE id LIKE ?", [f"%{session.upper()}"]))
        if len(rows) == 1:
            row = get_session(db, rows[0]["id"])
    if row is None:
        fail(f"no session matches {session!r}" if session else "no sessions yet")
    return row
