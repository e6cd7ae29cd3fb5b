"""Pilot tests of the operator's terminal: panes follow the store, keys reach the controls.

The fixture writes a realistic session through the one ``Writer`` with fixed ids and timestamps, so the
snapshot tests (which import :func:`build_record`) render the same screen every time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from formicary.store.writer import Writer

T0 = datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)
NOW = (T0 + timedelta(minutes=14, seconds=30)).timestamp()
"""The frozen clock of every test screen."""
S1, S2 = "01JHFX0000000000000000SES1", "01JHF00000000000000000SES2"
GOAL = "Add a --json flag to the report command and cover it with tests"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


class Recorder:
    """Builds one session's rows and matching events, in time order."""

    def __init__(self, w: Writer, sid: str) -> None:
        self.w, self.sid, self.n = w, sid, 0

    def event(
        self, t: float, name: str, /, agent: str | None = None, task: str | None = None, **data: Any
    ) -> None:
        self.n += 1
        self.w.insert(
            "events",
            {
                "id": f"{self.sid[:20]}E{self.n:05d}",
                "session_id": self.sid,
                "kind": name,
                "agent_id": agent,
                "task_id": task,
                "data": data or None,
                "created_at": at(t),
            },
        )

    def cycle(self, t: float, cid: str, number: int, reason: str, status: str = "running") -> None:
        self.w.insert(
            "cycles",
            {"id": cid, "session_id": self.sid, "number": number, "reason": reason, "status": status,
             "started_at": at(t), "ended_at": at(t + 400) if status == "done" else None},
        )  # fmt: skip
        self.event(t, "cycle_started", cycle_id=cid, number=number, reason=reason)

    def task(self, t: float, tid: str, cid: str, parent: str | None, kind: str, title: str, status: str,
             depth: int = 0, **extra: Any) -> None:  # fmt: skip
        self.w.insert(
            "tasks",
            {"id": tid, "session_id": self.sid, "cycle_id": cid, "parent_id": parent, "kind": kind,
             "depth": depth, "title": title, "instructions": extra.pop("instructions", f"Do this: {title}."),
             "status": status, "attempts": 1 if status != "pending" else 0, "created_at": at(t), **extra},
        )  # fmt: skip
        self.event(
            t, "task_created", task=tid, title=title, kind=kind, parent_id=parent, depth=depth, cycle_id=cid
        )
        if status != "pending":
            self.event(t + 1, "task_started", task=tid, title=title, kind=kind, attempt=1)
        if status in ("done", "failed"):
            self.event(t + 60, "task_ended", task=tid, status=status, error=extra.get("error"), summary="")

    def agent(self, t: float, aid: str, cid: str, tid: str | None, role: str, name: str, status: str,
              steps: list[tuple[str, dict[str, Any], str, int | None]] = (), tokens: int = 1200) -> None:  # fmt: skip
        ended = status != "running"
        self.w.insert(
            "agents",
            {"id": aid, "session_id": self.sid, "cycle_id": cid, "task_id": tid, "role": role, "name": name,
             "model": "qwen2.5-coder-1.5b", "status": status, "steps": len(steps) if ended else 0,
             "prompt_tokens": tokens * len(steps or [1]) if ended else 0,
             "completion_tokens": tokens // 4 * len(steps or [1]) if ended else 0,
             "started_at": at(t), "ended_at": at(t + 5 * len(steps) + 5) if ended else None},
        )  # fmt: skip
        self.event(t, "agent_started", agent=aid, task=tid, role=role, name=name, model="qwen2.5-coder-1.5b")
        for i, (action, args, observation, code) in enumerate(steps, 1):
            ts = t + 5 * i
            self.w.insert(
                "llm_calls",
                {"id": f"{aid}L{i:03d}", "session_id": self.sid, "agent_id": aid, "role": role,
                 "model": "qwen2.5-coder-1.5b", "endpoint": "http://127.0.0.1:8080/v1", "request": "[]",
                 "prompt_tokens": tokens, "completion_tokens": tokens // 4, "latency_ms": 2100.0,
                 "created_at": at(ts - 1)},
            )  # fmt: skip
            self.event(ts - 1, "llm_call", agent=aid, role=role, prompt_tokens=tokens,
                       completion_tokens=tokens // 4, latency_ms=2100.0)  # fmt: skip
            self.w.insert(
                "actions",
                {"id": f"{aid}A{i:03d}", "session_id": self.sid, "agent_id": aid, "task_id": tid, "step": i,
                 "name": action, "arguments": args, "observation": observation, "exit_code": code,
                 "duration_ms": 40.0, "created_at": at(ts)},
            )  # fmt: skip
            target = next(iter(args.values()), "")
            self.event(ts, "agent_step", agent=aid, task=tid, step=i, action=action, target=target,
                       observation=observation[:300], exit_code=code)  # fmt: skip
        if ended:
            n = max(1, len(steps))
            self.event(t + 5 * len(steps) + 5, "agent_ended", agent=aid, task=tid, status=status, steps=len(steps),
                       prompt_tokens=tokens * n, completion_tokens=tokens // 4 * n)  # fmt: skip

    def commit(self, t: float, tid: str, aid: str, n: int, title: str, sha: str | None = None) -> None:
        sha = sha or f"{n:02d}" * 20
        self.w.insert(
            "commits",
            {"id": f"{self.sid[:20]}C{n:05d}", "session_id": self.sid, "task_id": tid, "agent_id": aid,
             "sha": "ab" * 20, "integrated_sha": sha, "branch": f"formicary/task-{n}", "status": "integrated",
             "retries": n % 2, "created_at": at(t), "integrated_at": at(t + 1)},
        )  # fmt: skip
        self.event(t + 1, "commit_landed", agent=aid, task=tid, sha="ab" * 20, integrated_sha=sha,
                   retries=n % 2, conflicts=0, title=title)  # fmt: skip


def work_steps(path: str, fail: bool = False) -> list[tuple[str, dict[str, Any], str, int | None]]:
    return [
        ("read", {"path": path}, f"def report(rows):\n    return format_table(rows)\n# {path}", None),
        ("write", {"path": path}, f"wrote 42 lines to {path}", None),
        (
            "run",
            {"command": "pytest -q tests/test_report.py"},
            "1 failed, 7 passed in 0.41s\nFAILED test_empty_json" if fail else "8 passed in 0.39s",
            1 if fail else 0,
        ),  # fmt: skip
        ("finish", {"summary": "done"}, "handoff recorded", None),
    ]


def build_record(db_path: Path, repo: Path, *, sha: str | None = None) -> None:
    """Two sessions: S1 in its second cycle (running) and S2, an older one that finished."""
    w = Writer(db_path)
    try:
        _session_one(Recorder(w, S1), repo, sha)
        _session_two(Recorder(w, S2), repo)
        w.flush()
    finally:
        w.close()


def _session_one(r: Recorder, repo: Path, sha: str | None) -> None:
    w = r.w
    w.insert(
        "sessions",
        {"id": S1, "goal": GOAL, "repo": str(repo), "branch": "formicary/demo", "status": "running",
         "started_at": at(0), "pid": 999_999_999},
    )  # fmt: skip
    r.event(
        0,
        "session_started",
        goal=GOAL,
        repo=str(repo),
        branch="formicary/demo",
        workers=4,
        sandbox="bubblewrap",
    )
    c1, c2 = "C1" + "0" * 24, "C2" + "0" * 24
    r.cycle(1, c1, 1, "start", status="done")
    r.task(2, "T01", c1, None, "planner", "Plan: " + GOAL, "done")
    r.agent(2, "AG01", c1, "T01", "planner", "planner", "done", [], tokens=3000)
    r.event(20, "plan", agent="AG01", tasks=["Emit JSON from report()"], subplanners=["CLI flag", "Tests"],
            scratchpad="The report command lives in cli.py; report() in report.py.")  # fmt: skip
    r.task(21, "T02", c1, "T01", "subplanner", "CLI flag", "done", depth=1)
    r.task(22, "T03", c1, "T01", "subplanner", "Tests", "done", depth=1)
    r.task(23, "T04", c1, "T02", "work", "Parse --json in cli.py", "done", depth=2, files='["cli.py"]',
           check_cmd="pytest -q", handoff=json.dumps({"summary": "Added --json.", "concerns": ["no schema"]}))  # fmt: skip
    r.task(24, "T05", c1, "T01", "work", "Emit JSON from report()", "done", depth=1)
    r.task(25, "T06", c1, "T03", "work", "Add tests for --json", "failed", depth=2, error="tests still fail")
    r.agent(30, "AG02", c1, "T04", "worker", "worker-1", "done", work_steps("cli.py"))
    r.agent(31, "AG03", c1, "T05", "worker", "worker-2", "done", work_steps("report.py"))
    r.agent(
        32, "AG04", c1, "T06", "worker", "worker-3", "failed", work_steps("tests/test_report.py", fail=True)
    )
    r.commit(60, "T04", "AG02", 1, "Parse --json in cli.py")
    r.commit(120, "T05", "AG03", 2, "Emit JSON from report()")
    r.agent(380, "AG05", c1, None, "judge", "judge", "done", [], tokens=5000)
    w.insert("verdicts", {"id": "V1", "session_id": S1, "cycle_id": c1, "decision": "continue",
                          "reason": "JSON output works but the empty-report test fails.",
                          "notes": "Fix the empty report case first.", "created_at": at(400)})  # fmt: skip
    r.event(400, "verdict", agent="AG05", cycle_id=c1, number=1, decision="continue",
            reason="JSON output works but the empty-report test fails.", notes="Fix the empty report case first.")  # fmt: skip
    r.event(401, "cycle_ended", cycle_id=c1, number=1, status="done")
    r.cycle(402, c2, 2, "continue")
    r.task(403, "T07", c2, None, "planner", "Plan: " + GOAL, "running")
    r.agent(403, "AG06", c2, "T07", "planner", "planner", "running", [], tokens=3000)
    r.task(410, "T08", c2, "T07", "work", "Handle empty reports in JSON", "running", depth=1)
    r.task(411, "T09", c2, "T07", "work", "Fix the test for an empty report", "running", depth=1)
    r.task(412, "T10", c2, "T07", "work", "Document --json in the README", "pending", depth=1)
    r.task(413, "T11", c2, "T07", "subplanner", "Polish", "running", depth=1)
    r.task(414, "T12", c2, "T11", "work", "Mention --json in the help text", "done", depth=2)
    r.agent(420, "AG07", c2, "T08", "worker", "worker-4", "running", work_steps("report.py")[:2])
    r.agent(421, "AG08", c2, "T09", "worker", "worker-5", "running", work_steps("tests/test_report.py")[:3])
    r.agent(422, "AG09", c2, "T12", "worker", "worker-6", "done", work_steps("cli.py"))
    r.commit(480, "T12", "AG09", 3, "Mention --json in the help text", sha)


def _session_two(r: Recorder, repo: Path) -> None:
    r.w.insert(
        "sessions",
        {"id": S2, "goal": "Fix the flaky date parsing test", "repo": str(repo), "branch": "formicary/old",
         "status": "done", "stop_reason": "judge: the goal is met", "started_at": at(-86_400),
         "ended_at": at(-86_400 + 754)},
    )  # fmt: skip
    c = "C3" + "0" * 24
    r.cycle(-86_399, c, 1, "start", status="done")
    r.task(-86_398, "T20", c, None, "planner", "Plan: fix the flaky test", "done")
    r.task(-86_390, "T21", c, "T20", "work", "Pin the timezone in test_dates.py", "done", depth=1)
    r.w.insert("verdicts", {"id": "V2", "session_id": S2, "cycle_id": c, "decision": "done",
                            "reason": "The test passes 50 times in a row.", "created_at": at(-86_000)})  # fmt: skip


class FakeControls:
    """Records every control the screen sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def pause(self) -> None:
        self.calls.append(("pause",))

    def resume(self) -> None:
        self.calls.append(("resume",))

    def fresh_start(self) -> None:
        self.calls.append(("fresh_start",))

    def stop(self) -> None:
        self.calls.append(("stop",))

    def steer(self, text: str, replace_goal: bool = False) -> None:
        self.calls.append(("steer", text, replace_goal))

    def set_workers(self, n: int) -> None:
        self.calls.append(("set_workers", n))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path / "home"))
    db = tmp_path / "formicary.db"
    build_record(db, tmp_path / "repo")
    return db


class FakeEngine(FakeControls):
    """Stands in for the engine: runs until stopped, records controls."""

    def __init__(self, db_path: Path, session_id: str = S1) -> None:
        super().__init__()
        self.db_path, self.session_id = db_path, session_id
        self._done: Any = None

    async def run(self) -> tuple[str, str]:
        import asyncio

        self._done = asyncio.Event()
        await self._done.wait()
        return ("stopped", "the operator stopped it")

    def stop(self) -> None:
        super().stop()
        if self._done is not None:
            self._done.set()


def make_app(db: Path, **kwargs: Any) -> Any:
    from formicary.tui import FormicaryApp

    return FormicaryApp(db, clock=lambda: NOW, poll_seconds=0.05, **kwargs)


async def until(pilot: Any, condition: Any, timeout: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (the follower and loaders work in threads)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.03)


async def loaded_session(app: Any, pilot: Any) -> Any:
    from formicary.screens.session import SessionScreen

    await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded)
    await until(pilot, lambda: app.screen.log_ready)
    return app.screen


def log_text(screen: Any) -> str:
    from formicary.widgets.agent_log import AgentLog

    return "\n".join(screen.query_one(AgentLog).lines)


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
        r.w.insert("actions", {"id": "AG10A002", "session_id": S1, "agent_id": "AG10", "task_id": "T13", "step": 2,
                               "name": "write", "arguments": {"path": "CHANGES.md"}, "observation": "wrote 3 lines",
                               "created_at": at(520)})  # fmt: skip
        r.event(520, "agent_step", agent="AG10", task="T13", step=2, action="write", target="CHANGES.md",
                observation="wrote 3 lines", exit_code=None)  # fmt: skip
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


def live_settings(base_url: str, workers: int = 3) -> Any:
    from formicary.config import Settings

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


@pytest.mark.anyio
async def test_live_engine_runs_to_the_judge_and_panes_show_it(tmp_path: Path) -> None:
    from formicary.agents.engine import Engine
    from formicary.widgets.task_tree import TaskTree
    from formicary.widgets.verdict_log import VerdictLog
    from tests.gitrepo import make_repo
    from tests.scripted_server import ScriptedServer

    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    db = tmp_path / "f.db"
    with ScriptedServer(responder=live_team(steps=2), latency=0.01) as server:
        engine = Engine.create(live_settings(server.base_url), repo, "Write five files", db_path=db)
        app = make_app(db, engine=engine)
        app.clock = __import__("time").time
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

    from formicary.agents.engine import Engine
    from formicary.screens.confirm import ConfirmScreen
    from formicary.screens.steer import SteerScreen
    from formicary.screens.workers import WorkersScreen
    from formicary.store.db import connect
    from formicary.widgets.workers_table import WorkersTable
    from tests.gitrepo import make_repo
    from tests.scripted_server import ScriptedServer

    def control_events() -> list[str]:
        return [
            r["data"]
            for r in connect(db, readonly=True).query("SELECT data FROM events WHERE kind = 'control'")
        ]

    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    db = tmp_path / "f.db"
    with ScriptedServer(responder=live_team(steps=400), latency=0.05) as server:
        engine = Engine.create(live_settings(server.base_url), repo, "Write files", db_path=db)
        app = make_app(db, engine=engine)
        app.clock = __import__("time").time
        async with app.run_test(size=(160, 48)) as pilot:
            screen = await loaded_session(app, pilot)
            table = screen.query_one(WorkersTable)
            await until(
                pilot, lambda: sum(a.role == "worker" for a in table.agents.values()) >= 2, timeout=15
            )
            send_key(app, "p")
            await until(
                pilot, lambda: engine.snapshot()["paused"] and screen.status.paused
            )  # the store says so too
            send_key(app, "p")
            await until(pilot, lambda: not engine.snapshot()["paused"] and not screen.status.paused)
            send_key(app, "w")
            await until(pilot, lambda: isinstance(app.screen, WorkersScreen))
            app.screen.query_one(Input).value = "2"
            send_key(app, "enter")
            await until(pilot, lambda: engine.workers == 2 and screen.status.workers == 2)
            send_key(app, "e")
            await until(pilot, lambda: isinstance(app.screen, SteerScreen))
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
        assert log.lines[-1] == "more 39 x�[31m"  # tabs expanded, no escape reaches the terminal
        log.scroll_to(y=0, animate=False, immediate=True)
        log.append(["later"])
        await pilot.pause()
        assert log.scroll_offset.y == 0
