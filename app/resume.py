"""Carrying on a stopped or crashed session from the TUI (the ``r`` key), as ``formicary resume`` does.

The blocking part (read the record, load the repository's settings, build the engine) runs in a thread; the
caller then awaits ``engine.prepare()`` and runs the engine in its own loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ResumeFactory = Callable[[Any, dict[str, Any], Path], Any]


class NotResumable(Exception):
    """Why a session cannot be carried on here, in one line."""


def default_resume_factory(settings: Any, row: dict[str, Any], db_path: Path) -> Any:
    from .agents.session.engine import Engine

    return Engine.for_resume(settings, row, db_path=db_path)


def build_resume_engine(
    db_path: Path, session_id: str, factory: ResumeFactory = default_resume_factory
) -> Any:
    """The engine that carries on ``session_id``; NotResumable if it is done or still running elsewhere."""
    from .agents.session.controls import pid_alive
    from .config import ConfigError, load_settings
    from .store.db import connect
    from .store.queries import get_session

    db = connect(db_path, readonly=True, migrate=False)
    try:
        row = get_session(db, session_id)
    finally:
        db.conn.close()
    if row is None:
        raise NotResumable(f"no session {session_id} in the record")
    if row["status"] == "done":
        raise NotResumable("this session is done (the judge said so): start a new one with n in the sessions")
    if row["status"] in ("running", "paused") and pid_alive(row.get("pid")):
        raise NotResumable(
            f"this session is still running (pid {row['pid']}): open it from the sessions to attach"
        )
    repo = Path(row["repo"])
    if not repo.is_dir():
        raise NotResumable(f"its repository {repo} is not there any more")
    try:
        return factory(load_settings(repo=repo), row, db_path)
    except (ConfigError, ValueError) as exc:
        raise NotResumable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
