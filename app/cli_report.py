"""``formicary report [SESSION]``: write one self-contained HTML file of a session's charts and tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from .cli_common import fail, open_record, session_row


@click.command()
@click.argument("session", required=False)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (default: formicary-<session>.html here).",
)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
def report(session: str | None, output: Path | None, db_path: Path | None) -> None:
    """Write SESSION's report (default: the newest): commits, tasks, tokens, durations, conflicts and the
    judge's verdicts over time, as charts and tables in one HTML file that opens offline."""
    from .report_data import load_report
    from .report_html import render_report

    db = open_record(db_path)
    row = session_row(db, session)
    page = render_report(load_report(db, row["id"]))
    target = output or Path(f"formicary-{row['id'][-8:].lower()}.html")
    write_atomically(target, page)
    click.echo(f"wrote {target} ({len(page.encode()) // 1024} KiB)")


def write_atomically(target: Path, text: str) -> None:
    """Write to a temporary file beside ``target`` and rename it: a failure leaves nothing half-written."""
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".formicary-report-", suffix=".tmp", dir=folder)
    except OSError as exc:
        fail(f"cannot write in {folder}: {exc.strerror}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        fail(f"cannot write {target}: {exc.strerror}")
