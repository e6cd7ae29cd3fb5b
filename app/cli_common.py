"""Helpers every ``formicary`` subcommand module shares, so those modules never import each other."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how every bad input ends."""
    click.echo(f"formicary: {message}", err=True)
    sys.exit(code)


def load_settings_or_fail(repo: Path | None = None, config_file: Path | None = None):
    """The settings for ``repo`` (its ``formicary.toml``, the user config, ``config_file``), or a one-line exit."""
    from .config import ConfigError, load_settings

    try:
        return load_settings(repo=repo, config_file=config_file)
    except ConfigError as exc:
        fail(str(exc))


def open_browser() -> None:
    """``formicary`` with no command: the sessions browser; sessions run in it are summarised at the end."""
    from .agents import paths
    from .tui import browse

    path = paths.default_db_path()
    print_summaries(path, browse(path))


def print_summaries(db_path: Path, session_ids: list[str]) -> None:
    """After the TUI has left the screen: what each session run in it left behind, and how to merge it."""
    from .summary import summary_text

    for session_id in session_ids:
        text = summary_text(db_path, session_id) if db_path.exists() else ""
        if text:
            click.echo(text)


def open_record(db_path: Path | None):
    """The record, read-only, for commands that only read it; a one-line exit if there is none."""
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


def session_row(db, session: str | None) -> dict:
    """The session named by ``session`` (first or last characters of its id), or the newest; else a one-line exit."""
    from .store.queries import find_session, get_session

    row = find_session(db, session)
    if row is None and session:
        rows = list(db.query("SELECT id FROM sessions WHERE id LIKE ?", [f"%{session.upper()}"]))
        if len(rows) == 1:
            row = get_session(db, rows[0]["id"])
    if row is None:
        fail(f"no session matches {session!r}" if session else "no sessions yet")
    return row
