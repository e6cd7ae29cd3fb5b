"""The fixed fixture record for the TUI tests: one ``Writer``, fixed ids and timestamps, a frozen clock.

Shared by the Pilot tests (``test_tui.py``) and the layout snapshots (``test_tui_snapshots.py``), which must render
the same screen on every run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
            # a model call's and an action's rows are their own llm_call and agent_step events
            self.w.insert(
                "actions",
                {"session_id": self.sid, "agent_id": aid, "task_id": tid, "step": i, "name": action,
                 "arguments": args, "observation": observation, "exit_code": code, "duration_ms": 40.0,
                 "created_at": at(ts), "target": next(iter(args.values()), "")},
            )  # fmt: skip
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


# ---- driving the app in pilot tests


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
