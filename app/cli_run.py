"""``formicary run``, ``resume``, ``attach`` and ``demo``: start, continue or watch a session."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import fail, load_settings_or_fail, print_summaries


def _run_engine(engine, headless: bool, verbose: bool = False) -> None:
    """Run ``engine`` headless with progress lines, or in the TUI; exit 0 only when the judge said done."""
    import anyio

    from .agents.git.workspace import WorkspaceError
    from .agents.session.engine import PreflightError

    if not headless:
        from .tui import run_live

        try:
            anyio.run(engine.prepare)
        except (WorkspaceError, PreflightError) as exc:
            fail(str(exc))
        outcome = run_live(engine)
        print_summaries(engine.db_path, [engine.session_id])
        sys.exit(0 if outcome is not None and outcome.status == "done" else 1)

    from .agents.session.controls import install_signal_handlers
    from .headless import ProgressPrinter

    printer = ProgressPrinter(engine, verbose=verbose)
    engine.subscribe(printer)

    async def main():
        install_signal_handlers(engine, engine)
        try:
            await engine.prepare()
        except (WorkspaceError, PreflightError) as exc:
            fail(str(exc))
        return await engine.run()

    try:
        outcome = anyio.run(main)
    except RuntimeError as exc:
        print_summaries(engine.db_path, [engine.session_id])
        fail(str(exc), code=1)
    printer.summary(outcome)
    sys.exit(0 if outcome.status == "done" else 1)


@click.command()
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    default=".",
    show_default=True,
    help="The git repository to work on.",
)
@click.option("--goal", required=True, help="What the agents should achieve.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="A config file (TOML)."
)
@click.option("--workers", type=click.IntRange(1, 4096), help="Workers at once (overrides limits.workers).")
@click.option("--headless", is_flag=True, help="No TUI: print progress lines; Ctrl-C stops gracefully.")
@click.option("--verbose", "-v", is_flag=True, help="Headless: also print every worker action.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to write.")
@click.option(
    "--check",
    "check",
    metavar="CMD",
    help='The landing gate\'s check (overrides check_command); "none": parse gate only. Default: detected.',
)
def run(
    repo: Path,
    goal: str,
    config_file: Path | None,
    workers: int | None,
    headless: bool,
    verbose: bool,
    db_path: Path | None,
    check: str | None,
) -> None:
    """Run a session: planners split GOAL into tasks, workers land them on one branch, a judge decides."""
    from .agents.session.engine import Engine
    from .config import ConfigError

    repo = repo.expanduser()
    if not repo.exists():
        fail(f"{repo} does not exist")
    settings = load_settings_or_fail(repo.resolve(), config_file)
    if workers:
        settings.limits.workers = workers
    if check is not None:
        if not check.strip():
            fail('--check needs a command, or "none" to run without one')
        settings.check_command = check
    try:
        engine = Engine.create(settings, repo, goal, db_path=db_path)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if check is not None:
        engine.check_source = "--check"
    _run_engine(engine, headless, verbose)


@click.command()
@click.argument("session", required=False)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="A config file (TOML)."
)
@click.option("--headless", is_flag=True, help="No TUI: print progress lines.")
@click.option("--verbose", "-v", is_flag=True, help="Headless: also print every worker action.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to use.")
def resume(
    session: str | None, config_file: Path | None, headless: bool, verbose: bool, db_path: Path | None
) -> None:
    """Carry on SESSION (an id or its last characters; default: the newest) after a crash or a stop."""
    from .agents import paths
    from .agents.session.engine import Engine
    from .config import ConfigError
    from .store import db as store_db
    from .store.queries import find_session

    path = db_path or paths.default_db_path()
    if not path.exists():
        fail(f"no record at {path}; nothing to resume")
    row = _find(store_db.connect(path), session, find_session)
    if row["status"] == "done":
        fail(f"session {row['id']} is done (the judge said so); start a new one with `formicary run`")
    from .agents.session.controls import pid_alive

    if row["status"] == "running" and pid_alive(row.get("pid")):
        fail(f"session {row['id']} is still running (pid {row['pid']}); use `formicary attach`")
    settings = load_settings_or_fail(Path(row["repo"]), config_file)
    try:
        engine = Engine.for_resume(settings, row, db_path=path)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    _run_engine(engine, headless, verbose)


def _find(db, session: str | None, find_session) -> dict:
    row = find_session(db, session)
    if row is None and session:
        from .store.queries import sessions_ending_with

        rows = sessions_ending_with(db, session)
        if len(rows) == 1:
            row = find_session(db, rows[0]["id"])
    if row is None:
        fail(f"no session matches {session!r}" if session else "no sessions yet")
    return row


@click.command()
@click.argument("session", required=False)
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to read.")
def attach(session: str | None, db_path: Path | None) -> None:
    """Open the TUI on SESSION (default: the newest) running in another terminal; closing leaves it running."""
    from .agents import paths
    from .store import db as store_db
    from .store.queries import find_session
    from .tui import attach as attach_tui

    path = db_path or paths.default_db_path()
    if not path.exists():
        fail(f"no record at {path}")
    row = _find(store_db.connect(path), session, find_session)
    attach_tui(path, row["id"])


def _copy_demo(dest: Path) -> Path:
    """A fresh git repository holding the demo project (shipped inside the package)."""
    import shutil
    from importlib.resources import as_file, files

    with as_file(files("formicary.examples") / "tinyutils") as source:
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    ident = ["-c", "user.name=formicary demo", "-c", "user.email=demo@formicary.local"]
    from .agents.git.run import git_sync

    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*ident, "commit", "-q", "-m", "The demo project"],
    ):
        res = git_sync(*args, cwd=dest)
        if res.rc != 0:
            fail(f"could not set up the demo repository: {res.err.strip()[:200] or res.rc}")
    return dest


@click.command()
@click.option("--headless", is_flag=True, help="No TUI: print progress lines.")
@click.option(
    "--into", type=click.Path(file_okay=False, path_type=Path), help="Where to put the demo project's copy."
)
@click.option("--skip-setup", is_flag=True, help="Don't prepare the local model (an endpoint is configured).")
def demo(headless: bool, into: Path | None, skip_setup: bool) -> None:
    """Set up the local model (first time only), copy the demo project to a fresh folder and run on it."""
    import time

    from .agents import paths
    from .agents.session.engine import Engine
    from .config import ConfigError

    dest = into or paths.data_dir() / "demo" / time.strftime("tinyutils-%Y%m%d-%H%M%S")
    if dest.exists():
        fail(f"{dest} already exists; choose another folder with --into")
    if not skip_setup:
        _setup_local_model()
    repo = _copy_demo(dest)
    click.echo(f"formicary: the demo project is at {repo} (your own checkouts are never touched)", err=True)
    settings = load_settings_or_fail(repo, None)
    goal = (repo / "GOAL.md").read_text().strip()
    try:
        engine = Engine.create(settings, repo, goal)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    _run_engine(engine, headless)


def _setup_local_model() -> None:
    from .agents.model import server as model_server
    from .agents.model import setup as model_setup

    settings = load_settings_or_fail()
    if not settings.uses_embedded_server() or model_server.status().ready:
        return
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    say("formicary: preparing the local model (first time only: a 1.1 GB download and a ~5 minute build)")
    try:
        model_setup.ensure_model(report=say)
        model_server.ensure_server(report=say)
    except model_setup.SetupError as exc:
        fail(str(exc), code=1)
