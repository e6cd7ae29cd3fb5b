"""``formicary show [SESSION]``: the end-of-session summary of any session in the record."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import open_record, session_row


@click.command()
@click.argument("session", required=False)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
def show(session: str | None, db_path: Path | None) -> None:
    """Summarise SESSION (an id, its first or last characters; default: the newest): branch, commits, tasks,
    checks, tokens per role, wall time and the git commands to review and merge its branch."""
    from .store.sanitize import safe_text
    from .summary import load_summary, render

    db = open_record(db_path)
    row = session_row(db, session)
    click.echo(
        safe_text("\n".join(render(load_summary(db, row["id"]))))
    )  # titles and reasons came from models
