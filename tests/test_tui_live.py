"""The operator's terminal on a real engine: the scripted model server, a real repository and record, the app on
the real clock — panes follow the run to the judge, and the keys reach the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.tui_record import loaded_session, log_text, make_app, until


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def live_settings(base_url: str, workers: int = 3) -> Any:
    from formicary.agents.settings import Settings

    return Settings.model_validate(
        {
            "model": {"base_url": base_url, "model": "scripted-model", "retries": 2, "timeout": 10},
            "limits": {
                "workers": workers,
                "cycles": 3,
                "planner_depth": 1,
                "steps_per_worker": 1000,
                "tokens_per_worker": 10**9,
            },  # fmt: skip
            "sandbox": {"mode": "none"},
        }
    )


def live_team(steps: int) -> Any:
    from tests.scripted_team import ScriptedTeam, finish, plan, task, write

    def default(title: str, step: int) -> dict[str, Any]:
        name = title.replace(" ", "_")
        return write(f"{name}.txt", f"{title} {step}\n") if step < steps else finish(f"wrote {name}.txt")

    return ScriptedTeam(
        root_plans=[plan([task(f"Task {i}") for i in range(4)], [{"title": "Docs", "scope": "docs"}])],
        sub_plans={"Docs": plan([task("Write the guide")])},
        default_work=default,
        verdicts=[{"decision": "done", "reason": "every file is there", "notes": ""}],
    )


@contextmanager
def live_app(tmp_path: Path, goal: str, steps: int, latency: float) -> Iterator[tuple[Any, Any, Path]]:
    """A real engine on the scripted model server, driven by the app on the real clock: ``(app, engine, db)``."""
    import time

    from formicary.agents.session.engine import Engine
    from tests.gitrepo import make_repo
    from tests.scripted_server import ScriptedServer

    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    db = tmp_path / "f.db"
    with ScriptedServer(responder=live_team(steps=steps), latency=latency) as server:
        engine = Engine.create(live_settings(server.base_url), repo, goal, db_path=db)
        app = make_app(db, engine=engine)
        app.clock = time.time
        yield app, engine, db


@pytest.mark.anyio
async def test_live_engine_runs_to_the_judge_and_panes_show_it(tmp_path: Path) -> None:
    from formicary.widgets.task_tree import TaskTree
    from formicary.widgets.verdict_log import VerdictLog

    with live_app(tmp_path, "Write five files", steps=2, latency=0.01) as (app, _engine, _db):
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await loaded_session(app, pilot)
            await until(pilot, lambda: screen.status.ended, timeout=30)
            tree = screen.query_one(TaskTree)
            assert tree.task_count == 7  # planner, sub-planner, five tasks
            assert screen.status.done == 5 and screen.status.commits == 5
            assert screen.query_one(VerdictLog).count == 1
            assert "done · read-only" in str(screen.query_one("#mode").render())
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)
    assert app.return_value is not None and app.return_value.status == "done"


def send_key(app: Any, key: str) -> None:
    """A key press without Pilot's wait for an idle CPU (which never comes while an engine runs here)."""
    from textual import events

    app.post_message(events.Key(key, key if len(key) == 1 else None))


@pytest.mark.anyio
async def test_live_engine_obeys_the_keys(tmp_path: Path) -> None:
    from textual.widgets import Input, TextArea

    from formicary.screens.confirm import ConfirmScreen
    from formicary.screens.steer import SteerScreen
    from formicary.screens.workers import WorkersScreen
    from formicary.store.db import connect
    from formicary.widgets.workers_table import WorkersTable

    def control_events() -> list[str]:
        return [
            r["data"]
            for r in connect(db, readonly=True).query("SELECT data FROM events WHERE kind = 'control'")
        ]

    with live_app(tmp_path, "Write files", steps=400, latency=0.05) as (app, engine, db):
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await loaded_session(app, pilot)
            table = screen.query_one(WorkersTable)
            await until(
                pilot, lambda: sum(a.role == "worker" for a in table.agents.values()) >= 2, timeout=15
            )
            send_key(app, "p")
            await until(
                pilot, lambda: engine.snapshot().paused and screen.status.paused
            )  # the store says so too
            send_key(app, "p")
            await until(pilot, lambda: not engine.snapshot().paused and not screen.status.paused)
            send_key(app, "w")
            await until(pilot, lambda: isinstance(app.screen, WorkersScreen))
            app.screen.query_one(Input).value = "2"
            send_key(app, "enter")
            await until(pilot, lambda: engine.workers == 2 and screen.status.workers == 2)
            send_key(app, "e")
            await until(
                pilot, lambda: isinstance(app.screen, SteerScreen) and bool(app.screen.query(TextArea))
            )
            app.screen.query_one(TextArea).load_text("mind the docs")
            send_key(app, "ctrl+s")
            await until(pilot, lambda: any("mind the docs" in d for d in control_events()))
            while table.agent(table.selected_agent).role != "worker":  # a worker's log streams its actions
                send_key(app, "down")
                await pilot.pause(0.05)
            await until(pilot, lambda: "write_file" in log_text(screen), timeout=10)
            send_key(app, "s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            send_key(app, "y")
            await until(pilot, lambda: screen.status.ended, timeout=20)
            assert screen.status.session_status == "stopped"
            controls = [json.loads(d) for d in control_events()]
            assert [c["control"] for c in controls] == ["pause", "resume", "workers", "steer", "stop"]
            assert {c["source"] for c in controls} == {"tui"}
            send_key(app, "q")
            await until(pilot, lambda: not app.is_running)
    assert app.return_value.status == "stopped"
