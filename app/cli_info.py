"""``formicary sessions`` and ``formicary doctor``: read the record, probe the endpoints."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import fail, load_settings_or_fail


def _duration(start: str | None, end: str | None) -> str:
    from datetime import UTC, datetime

    if not start:
        return "-"
    a = datetime.fromisoformat(start)
    b = datetime.fromisoformat(end) if end else datetime.now(UTC)
    seconds = int((b - a).total_seconds())
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


@click.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
@click.option("--limit", default=50, show_default=True, help="How many sessions to list.")
def sessions(db_path: Path | None, limit: int) -> None:
    """List past sessions from the record, newest first."""
    from .agents import paths
    from .agents.model.errors import one_line
    from .store import db as store_db
    from .store.queries import list_sessions

    path = db_path or paths.default_db_path()
    if not path.exists():
        click.echo(f"No sessions yet ({path} does not exist).")
        return
    rows = list_sessions(store_db.connect(path), limit=limit)
    if not rows:
        click.echo("No sessions yet.")
        return
    header = f"{'ID':<12} {'STARTED':<16} {'TIME':>7} {'STATUS':<8} {'CYC':>3} {'TASKS':>7} {'COMMITS':>7} {'VERDICT':<8} GOAL"
    click.echo(header)
    for r in rows:
        tasks = f"{r['tasks_done']}/{r['tasks']}"
        click.echo(
            f"{r['id'][-12:]:<12} {r['started_at'][:16].replace('T', ' '):<16} "
            f"{_duration(r['started_at'], r['ended_at']):>7} {r['status']:<8} {r['cycles']:>3} {tasks:>7} "
            f"{r['commits']:>7} {(r['last_verdict'] or '-'):<8} {r['goal'][:60]}"
        )
        if r["status"] == "failed" and r["stop_reason"]:
            click.echo(f"{'':<12} ↳ {one_line(r['stop_reason'], 160)}")


@click.command()
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    help="Repository whose formicary.toml to read.",
)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="A config file."
)
def doctor(repo: Path, config_file: Path | None) -> None:
    """Check each configured endpoint: reachable, model served, context length, a valid JSON-schema reply."""
    import anyio

    from .config import ConfigError
    from .doctor import check_all

    settings = load_settings_or_fail(repo.resolve(), config_file)
    try:
        settings.check_keys()
    except ConfigError as exc:
        fail(str(exc))
    reports = anyio.run(check_all, settings)
    click.echo(f"{'ENDPOINT':<36} {'ROLES':<31} {'REACH':<5} {'MODEL':<5} {'CONTEXT':>7} {'SCHEMA':<6}")
    mark = {True: "ok", False: "FAIL", None: "-"}
    for r in reports:
        click.echo(
            f"{r.endpoint[:36]:<36} {','.join(r.roles)[:31]:<31} {mark[r.reachable]:<5} {mark[r.model_listed]:<5} "
            f"{(r.context_length or '-')!s:>7} {mark[r.schema_ok]:<6}"
        )
    problems = [(r, p) for r in reports for p in r.problems]
    for r, p in problems:
        click.echo(f"  {r.endpoint}: {p}", err=True)
    if any(not r.healthy for r in reports):
        fail("some endpoints are not healthy (see above)", code=1)
    click.echo("All endpoints healthy.")
