"""Pilot tests of the operator's terminal: panes follow the store, keys reach the controls.

The fixture record (fixed ids and timestamps) is built in ``tui_record.py``, shared with the snapshot tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from formicary.store.writer import Writer
from tests.tui_record import (
    S1,
    S2,
    FakeEngine,
    Recorder,
    at,
    build_record,
    loaded_session,
    log_text,
    make_app,
    until,
    work_steps,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path / "home"))
    db = tmp_path / "formicary.db"
    build_record(db, tmp_path / "repo")
    return db


@pytest.mark.anyio
async def test_browser_lists_sessions_and_opens_one_read_only(record: Path) -> None:
    from formicary.screens.browser import BrowserScreen
    from formicary.widgets.sessions_table import SessionsTable
    from formicary.widgets.task_tree import TaskTree

    app = make_app(record)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.screen.query_one(SessionsTable).row_count == 2)
        table = app.screen.query_one(SessionsTable)
        assert [r["id"] for r in table.sessions.values()] == [S1, S2]
        assert "continue" in str(table.get_row(S1)[8]) and table.get_row(S1)[6] == "3/7"
        await pilot.press("enter")
        screen = await loaded_session(app, pilot)
        assert screen.session_id == S1 and screen.controls is None and screen.mode == "read-only"
        tree = screen.query_one(TaskTree)
        assert tree.task_count == 12
        assert str(tree.task_node("T07").label).startswith("◐ ◆ 1/4 Plan")
        assert "read-only" in str(screen.query_one("#mode").render())
        assert not screen.check_action("pause", ()) and not screen.check_action("stop", ())
        await pilot.press("p", "s")
        assert isinstance(app.screen, type(screen))  # nothing opened, nothing sent
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)


@pytest.mark.anyio
async def test_every_control_reaches_the_engine_and_quit_stops_it(record: Path) -> None:
    from textual.widgets import Input

    engine = FakeEngine(record)
    app = make_app(record, engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        assert screen.mode == "live" and screen.controls is engine
        await pilot.press("p")
        assert engine.calls[-1] == ("pause",) and screen.paused
        await pilot.press("p", "f")
        assert engine.calls[-2:] == [("resume",), ("fresh_start",)]
        await pilot.press("e")
        await pilot.press(*"focus on tests", "ctrl+s")
        assert engine.calls[-1] == ("steer", "focus on tests", False)
        await pilot.press("w")
        app.screen.query_one(Input).value = ""
        await pilot.press("8", "enter")
        assert engine.calls[-1] == ("set_workers", 8)
        await pilot.press("plus")
        assert engine.calls[-1] == ("set_workers", 9)
        await pilot.press("minus", "s")
        assert engine.calls[-1] == ("set_workers", 8)
        await pilot.press("n")  # the stop confirmation, declined
        assert ("stop",) not in engine.calls
        await pilot.press("s", "y")
        assert engine.calls[-1] == ("stop",)
        await pilot.press("q")
        await until(pilot, lambda: app.return_value is not None)
    assert app.return_value == ("stopped", "the operator stopped it")


@pytest.mark.anyio
async def test_command_palette_sends_controls(record: Path) -> None:
    engine = FakeEngine(record)
    app = make_app(record, engine=engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded_session(app, pilot)
        await pilot.press("ctrl+p", *"pause the", "enter")
        await until(pilot, lambda: engine.calls == [("pause",)])
        await pilot.press("ctrl+p", *"fresh start", "enter")
        await until(pilot, lambda: engine.calls[-1] == ("fresh_start",))


@pytest.mark.anyio
async def test_attached_controls_go_through_the_store(record: Path) -> None:
    from formicary.store import queries as q
    from formicary.store.db import connect

    app = make_app(record, session_id=S1, attach=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        assert screen.mode == "attached"
        await pilot.press("p", "minus")
        db = connect(record)
        await until(pilot, lambda: len(q.pending_controls(db, S1)) == 2)
        rows = q.pending_controls(db, S1)
        assert [(r["kind"], r["source"]) for r in rows] == [("pause", "attach"), ("workers", "attach")]
        assert json.loads(rows[1]["payload"]) == {"n": 3}


@pytest.mark.anyio
async def test_moving_the_selection_switches_the_log(record: Path) -> None:
    from formicary.widgets.workers_table import WorkersTable

    app = make_app(record, session_id=S1)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        assert screen.log_agent == "AG06" and "planner" in log_text(screen)
        await pilot.press("down")
        await until(pilot, lambda: screen.log_agent == "AG07" and screen.log_ready)
        assert "write   report.py" in log_text(screen) and "worker-4" in log_text(screen)
        await pilot.press("down", "down")
        await until(pilot, lambda: screen.log_agent == "AG09" and screen.log_ready)
        assert "ended done after 4 steps" in log_text(screen)
        assert screen.query_one(WorkersTable).selected_agent == "AG09"
        await pilot.press("tab", "tab")  # to the tree: highlighting a task shows its agent's log
        assert screen.query_one("#tasks").has_focus
        await until(pilot, lambda: screen.log_agent == "AG06" and screen.log_ready)  # the cycle's planner
        await pilot.press("down")
        await until(pilot, lambda: screen.log_agent == "AG07" and screen.log_ready)


@pytest.mark.anyio
async def test_a_long_log_shows_its_newest_lines_at_once_and_its_history_when_read(record: Path) -> None:
    """The tail is read on selection (the pane is full in the same frame); older steps follow from a thread,
    and a step streamed meanwhile is shown once."""
    from formicary.screens.session import LOG_TAIL

    app = make_app(record, session_id=S1)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        w = Writer(record)
        r = Recorder(w, S1)
        r.n = 1000
        steps = [("read", {"path": f"src/part_{i}.py"}, f"seen {i}", None) for i in range(1, LOG_TAIL + 21)]
        r.agent(600, "AG11", "C2" + "0" * 24, "T07", "worker", "worker-9", "running", steps)
        w.flush()
        await until(pilot, lambda: screen.query_one("WorkersTable").agent("AG11") is not None)
        screen.select_agent("AG11")
        assert screen.log_ready and f"src/part_{LOG_TAIL + 20}.py" in log_text(screen)
        assert "src/part_1.py" not in log_text(screen)  # older than the tail: the thread brings it
        last = LOG_TAIL + 21
        r.w.insert("actions", {"session_id": S1, "agent_id": "AG11", "task_id": "T07", "step": last,
                               "name": "write", "arguments": {"path": "src/late.py"}, "observation": "wrote 1 line",
                               "created_at": at(2000), "target": "src/late.py"})  # its own agent_step event  # fmt: skip
        w.flush()
        await until(pilot, lambda: "src/part_1.py" in log_text(screen) and "src/late.py" in log_text(screen))
        await pilot.pause(0.3)
        lines = screen.query_one("AgentLog").lines
        heads = [line.split()[0] for line in lines if line[:3].strip().isdigit()]
        assert heads == [str(i) for i in range(1, last + 1)]  # every step once, in order
        w.close()


@pytest.mark.anyio
async def test_panes_follow_events_as_they_are_written(record: Path) -> None:
    from formicary.widgets.task_tree import TaskTree
    from formicary.widgets.verdict_log import VerdictLog
    from formicary.widgets.workers_table import WorkersTable

    app = make_app(record, session_id=S1)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        w = Writer(record)
        r = Recorder(w, S1)
        r.n = 1000
        c2 = "C2" + "0" * 24
        r.task(500, "T13", c2, "T07", "work", "Add a changelog entry", "running", depth=1)
        r.agent(501, "AG10", c2, "T13", "worker", "worker-7", "running", work_steps("CHANGES.md")[:1])
        r.commit(510, "T08", "AG07", 4, "Handle empty reports in JSON")
        r.event(511, "warning", message="endpoint slow: 12 s per call")
        w.flush()
        tree, table = screen.query_one(TaskTree), screen.query_one(WorkersTable)
        await until(pilot, lambda: tree.has_task("T13") and table.agent("AG10") is not None)
        assert str(tree.task_node("T07").label).startswith("◐ ◆ 1/5")
        assert screen.status.commits == 4 and screen.status.warning == "endpoint slow: 12 s per call"
        table.focus()
        table.move_cursor(table.get_row_index("AG10"))
        await until(pilot, lambda: screen.log_agent == "AG10" and screen.log_ready)
        assert "read    CHANGES.md" in log_text(screen)
        r.w.insert("actions", {"session_id": S1, "agent_id": "AG10", "task_id": "T13", "step": 2, "name": "write",
                               "arguments": {"path": "CHANGES.md"}, "observation": "wrote 3 lines",
                               "created_at": at(520), "target": "CHANGES.md"})  # its own agent_step event  # fmt: skip
        r.event(
            530,
            "agent_ended",
            agent="AG10",
            task="T13",
            status="done",
            steps=2,
            prompt_tokens=10,
            completion_tokens=2,
        )
        r.event(
            531, "verdict", agent="AG05", cycle_id=c2, number=2, decision="done", reason="All tests pass."
        )
        r.event(532, "session_ended", status="done", reason="the judge is satisfied")
        w.flush()
        w.close()
        await until(pilot, lambda: screen.status.ended)
        assert log_text(screen).count("write   CHANGES.md") == 1
        assert "ended done after 2 steps" in log_text(screen)
        assert screen.query_one(VerdictLog).count == 2
        assert "done" in str(screen.query_one("#mode").render())


@pytest.mark.anyio
async def test_task_detail_shows_instructions_actions_and_the_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "cli.py").write_text("print('--json')\n")
    subprocess.run([*git, "add", "cli.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Mention --json in the help text"], check=True)
    sha = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    db = tmp_path / "formicary.db"
    build_record(db, repo, sha=sha)
    from textual.widgets import RichLog, Static

    from formicary.screens.task_detail import TaskDetailScreen

    app = make_app(db, session_id=S1)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded_session(app, pilot)
        await pilot.press("down", "down", "down", "enter")  # worker-6's row: its task landed a commit
        await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen))
        detail = app.screen
        await pilot.press("3")  # the diff tab (a hidden RichLog renders nothing)
        diff = detail.query_one("#diff-log", RichLog)
        await until(pilot, lambda: any("print('--json')" in line.text for line in diff.lines))
        text = str(detail.query_one("#task-text", Static).render())
        assert "Do this: Mention --json in the help text." in text and "integrated" in text
        assert "  4 finish  done" in log_text(detail)
        await pilot.press("escape")
        assert not isinstance(app.screen, TaskDetailScreen)


@pytest.mark.anyio
async def test_task_detail_without_the_repository(record: Path) -> None:
    from textual.widgets import RichLog

    from formicary.screens.task_detail import TaskDetailScreen

    app = make_app(record, session_id=S1)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        await pilot.press("down", "down", "down", "d")
        await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen))
        await pilot.press("3")
        diff = app.screen.query_one("#diff-log", RichLog)
        await until(pilot, lambda: any("is not at" in line.text for line in diff.lines))
        await pilot.press("escape")
        assert app.screen is screen


@pytest.mark.anyio
async def test_new_session_form_reports_errors_then_starts(record: Path, tmp_path: Path) -> None:
    from textual.widgets import Input, Label, TextArea

    from formicary.screens.new_session import NewSessionScreen

    made: list[Any] = []

    def factory(settings: Any, repo: Path, goal: str, db_path: Path) -> Any:
        if not (repo / ".git").exists():
            raise ValueError(f"{repo} is not a git repository")
        engine = FakeEngine(db_path, S1)
        made.append((settings.limits.workers, repo, goal, engine))
        return engine

    app = make_app(record, engine_factory=factory)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewSessionScreen))
        form = app.screen
        error = form.query_one("#error", Label)
        await pilot.press("ctrl+s")
        assert "goal" in str(error.render()).lower()
        form.query_one("#goal", TextArea).load_text("Write the docs")
        form.query_one("#repo", Input).value = str(tmp_path / "nowhere")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not a git repository" in str(error.render()))
        (tmp_path / "nowhere" / ".git").mkdir(parents=True)
        form.query_one("#config", Input).value = str(tmp_path / "missing.toml")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "config file not found" in str(error.render()))
        form.query_one("#config", Input).value = ""
        form.query_one("#workers", Input).value = "6"
        await pilot.press("ctrl+s")
        screen = await loaded_session(app, pilot)
        assert made and made[0][0] == 6 and made[0][2] == "Write the docs"
        assert screen.mode == "live" and screen.controls is made[0][3]
        await pilot.press("p")
        assert made[0][3].calls == [("pause",)]
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout=5)
    assert made[0][3].calls[-1] == ("stop",)


@pytest.mark.anyio
async def test_agent_log_follows_the_end_until_scrolled_up() -> None:
    from textual.app import App, ComposeResult

    from formicary.widgets.agent_log import AgentLog

    class LogApp(App[None]):
        def compose(self) -> ComposeResult:
            yield AgentLog()

    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        log = app.query_one(AgentLog)
        log.show("a", [f"line {i}" for i in range(5)])
        log.append([f"more {i}\tx\x1b[31m" for i in range(40)])
        await pilot.pause()
        assert log.scroll_offset.y == log.max_scroll_y > 0
        assert log.lines[-1] == "more 39 x"  # tabs expanded, no escape sequence reaches the terminal
        log.scroll_to(y=0, animate=False, immediate=True)
        log.append(["later"])
        await pilot.pause()
        assert log.scroll_offset.y == 0


@pytest.mark.anyio
async def test_task_tree_growing_past_its_pane_scrolls_without_a_screen_layout() -> None:
    from textual.app import App, ComposeResult

    from formicary.view.views import CycleView, TaskView
    from formicary.widgets.task_tree import TaskTree

    class TreeApp(App[None]):
        def compose(self) -> ComposeResult:
            yield TaskTree(id="tasks")

    def work(i: int) -> TaskView:
        return TaskView(f"T{i:03d}", "C1", "ROOT", "work", 1, f"Task number {i}", "running", 1)

    app = TreeApp()
    async with app.run_test(size=(60, 12)) as pilot:
        tree = app.query_one(TaskTree)
        tree.add_cycles([CycleView("C1", 1, "start", "running")])
        tree.upsert([TaskView("ROOT", "C1", None, "planner", 0, "Plan", "running", 1)])
        await pilot.pause()
        layouts = 0
        original = app.screen._refresh_layout

        def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal layouts
            layouts += 1
            original(*args, **kwargs)

        app.screen._refresh_layout = counted  # type: ignore[method-assign]
        tree.upsert([work(i) for i in range(5)])
        await pilot.pause(0.1)
        assert layouts == 0 and tree.virtual_size.height == 7  # cycle, planner, five tasks: a repaint
        tree.upsert([work(i) for i in range(5, 40)])
        await pilot.pause(0.1)
        assert (
            tree.show_vertical_scrollbar and tree.max_scroll_y == 42 - tree.scrollable_content_region.height
        )
        tree.focus()
        await pilot.press("end")
        assert tree.cursor_node is not None and tree.cursor_node.data == "T039"
        assert tree.scroll_offset.y == tree.max_scroll_y
