"""Benchmark the operator's terminal under load; prints ONE JSON line.

A thread plays 256 workers streaming actions into the store through the one ``Writer`` (an ``llm_calls`` row and
an ``actions`` row per step, each its own event in the timeline; every couple of seconds some
tasks end with a commit and new tasks and workers start). The TUI follows that store headless
(``App.run_test``) exactly as it follows a real session.

Measured: the latency from a key press moving the worker selection (``down`` in the agents table) to the
updated screen, where "updated" means the log pane has been filled with the newly selected worker's stored
lines (``SessionScreen._show_log`` ran for it, from the tail read on selection or a thread's longer read)
AND the screen has been refreshed after that (a ``call_after_refresh`` callback ran). Keys are posted to the app directly, without Pilot's wait for an idle
CPU, so the number is what an operator would feel. Also reported: peak RSS of the process.

Run from the repository root: ``python -m bench.tui`` or ``python bench/tui.py``
``[--workers 256] [--presses 100] [--rate 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from formicary.store.db import now
from formicary.store.writer import Writer

SID = "01BENCH0000000000000000SES"
CYCLE = "01BENCH000000000000000CYC1"
ACTIONS = ("read_file", "write_file", "run", "search")


class Streamer(threading.Thread):
    """Writes what ``workers`` busy workers would write, at ``rate`` steps per second in total."""

    def __init__(self, writer: Writer, workers: int, rate: float) -> None:
        super().__init__(name="bench-streamer", daemon=True)
        self.w, self.rate = writer, rate
        self.agents = [f"AGENT{i:05d}" for i in range(workers)]
        self.tasks = {a: f"TASK{i:05d}" for i, a in enumerate(self.agents)}
        self.steps = dict.fromkeys(self.agents, 0)
        self.stop_event = threading.Event()
        self.rows = 0
        self.next_id = workers
        self.commits = 0

    def setup(self) -> None:
        w = self.w
        w.insert("sessions", {"id": SID, "goal": "Benchmark: keep 256 workers busy", "repo": "bench-repo",
                              "branch": "formicary/bench", "status": "running", "started_at": now()})  # fmt: skip
        w.event(SID, "session_started", goal="bench", repo="bench-repo", workers=len(self.agents),
                sandbox="bubblewrap")  # fmt: skip
        w.insert("cycles", {"id": CYCLE, "session_id": SID, "number": 1, "reason": "start", "status": "running",
                            "started_at": now()})  # fmt: skip
        w.event(SID, "cycle_started", cycle_id=CYCLE, number=1, reason="start")
        self._task("ROOT", None, "planner", "Plan the benchmark", 0)
        self._agent("PLANNER", "ROOT", "planner")
        for agent, task in self.tasks.items():
            self._task(task, "ROOT", "work", f"Implement part {task[-5:]} of the feature", 1)
            self._agent(agent, task, "worker")
        w.flush()

    def _task(self, tid: str, parent: str | None, kind: str, title: str, depth: int) -> None:
        self.w.insert("tasks", {"id": tid, "session_id": SID, "cycle_id": CYCLE, "parent_id": parent, "kind": kind,
                                "depth": depth, "title": title, "instructions": title, "status": "running",
                                "attempts": 1, "created_at": now(), "started_at": now()})  # fmt: skip
        self.w.event(SID, "task_created", task_id=tid, title=title, kind=kind, parent_id=parent, depth=depth)
        self.w.event(SID, "task_started", task_id=tid, title=title, kind=kind, attempt=1)
        self.rows += 3

    def _agent(self, aid: str, tid: str, role: str) -> None:
        self.w.insert("agents", {"id": aid, "session_id": SID, "cycle_id": CYCLE, "task_id": tid, "role": role,
                                 "name": f"{role}-{aid[-5:].lower()}", "model": "scripted-model",
                                 "status": "running", "started_at": now()})  # fmt: skip
        self.w.event(
            SID, "agent_started", agent_id=aid, task_id=tid, role=role, name=aid, model="scripted-model"
        )
        self.rows += 2

    def _step(self, agent: str) -> None:
        self.steps[agent] += 1
        step, task = self.steps[agent], self.tasks[agent]
        name = ACTIONS[step % len(ACTIONS)]
        path = f"src/module_{agent[-3:]}/file_{step % 7}.py"
        args = {"command": "pytest -q"} if name == "run" else {"path": path}
        observation = "\n".join(f"line {n} of the output of {name} at step {step}" for n in range(6))
        w = self.w
        w.insert("llm_calls", {"id": f"{agent}L{step:06d}", "session_id": SID, "agent_id": agent, "role": "worker",
                               "model": "scripted-model", "endpoint": "bench", "request": "[]",
                               "prompt_tokens": 900 + step, "completion_tokens": 120, "latency_ms": 40.0,
                               "created_at": now()})  # fmt: skip
        # the llm_calls and actions rows are their own llm_call and agent_step events in the timeline
        w.insert("actions", {"session_id": SID, "agent_id": agent, "task_id": task, "step": step, "name": name,
                             "arguments": args, "observation": observation, "exit_code": 0 if name == "run" else None,
                             "duration_ms": 12.0, "created_at": now(),
                             "target": args.get("path") or args["command"]})  # fmt: skip
        self.rows += 2

    def _turnover(self, rng: random.Random) -> None:
        """A few workers finish (commit landed) and new ones start on new tasks, as in a real cycle."""
        w = self.w
        for agent in rng.sample(self.agents[len(self.agents) // 2 :], 4):
            task = self.tasks[agent]
            self.commits += 1
            w.event(SID, "commit_landed", agent_id=agent, task_id=task, sha="ab" * 20, integrated_sha="cd" * 20,
                    retries=0, conflicts=0, title=task)  # fmt: skip
            w.update("tasks", task, {"status": "done", "ended_at": now()})
            w.event(SID, "task_ended", task_id=task, status="done", summary="done")
            w.update("agents", agent, {"status": "done", "ended_at": now()})
            w.event(SID, "agent_ended", agent_id=agent, task_id=task, status="done", steps=self.steps[agent],
                    prompt_tokens=0, completion_tokens=0)  # fmt: skip
            self.agents.remove(agent)
            new_agent, new_task = f"AGENT{self.next_id:05d}", f"TASK{self.next_id:05d}"
            self.next_id += 1
            self._task(new_task, "ROOT", "work", f"Follow-up {new_task[-5:]}", 1)
            self._agent(new_agent, new_task, "worker")
            self.agents.append(new_agent)
            self.tasks[new_agent], self.steps[new_agent] = new_task, 0
            self.rows += 6

    def run(self) -> None:
        rng = random.Random(7)
        tick, per_tick = 0.01, self.rate * 0.01
        owed, last_turnover, start = 0.0, time.monotonic(), time.monotonic()
        while not self.stop_event.is_set():
            owed += per_tick
            while owed >= 1:
                self._step(rng.choice(self.agents))
                owed -= 1
            if time.monotonic() - last_turnover > 2.0:
                self._turnover(rng)
                last_turnover = time.monotonic()
            time.sleep(max(0.0, start + tick - time.monotonic()))
            start += tick


async def measure(db: Path, presses: int, warmup: float) -> dict[str, Any]:
    from textual import events

    from formicary.screens.session import SessionScreen
    from formicary.tui import FormicaryApp
    from formicary.widgets.agent_log import AgentLog
    from formicary.widgets.workers_table import WorkersTable

    probes: dict[str, asyncio.Event] = {}
    original = SessionScreen._show_log

    def probed(self: SessionScreen, agent_id: str, *args: Any) -> None:
        original(self, agent_id, *args)
        probe = probes.get(agent_id)
        if probe is not None and self.log_ready and self.log_agent == agent_id:
            self.call_after_refresh(probe.set)

    SessionScreen._show_log = probed  # type: ignore[method-assign]
    latencies: list[float] = []
    app = FormicaryApp(db, session_id=SID)
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + 30
        while not (isinstance(app.screen, SessionScreen) and app.screen.loaded and app.screen.log_ready):
            if time.monotonic() > deadline:
                raise RuntimeError("the session screen did not load")
            await asyncio.sleep(0.05)
        screen = app.screen
        table = screen.query_one(WorkersTable)
        table.focus()
        await asyncio.sleep(warmup)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        rng = random.Random(11)
        for _ in range(presses):
            row = table.cursor_row + 1
            expected = table.row_key(row)
            probe = probes[expected] = asyncio.Event()
            start = time.perf_counter()
            app.post_message(events.Key("down", None))
            await asyncio.wait_for(probe.wait(), timeout=10)
            latencies.append((time.perf_counter() - start) * 1000)
            log = screen.query_one(AgentLog)
            if log.agent_id != expected or not any(expected[-5:].lower() in line for line in log.lines[:2]):
                raise RuntimeError(f"the log pane does not show {expected}")
            del probes[expected]
            await asyncio.sleep(rng.uniform(0.05, 0.15))
        ui_cpu = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
        await pilot.pause(0)
    return {"latencies": latencies, "ui_cpu": ui_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument(
        "--rate", type=float, default=1000, help="worker steps per second, all workers together"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of streaming before measuring")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="formicary-bench-tui-") as tmp:
        db = Path(tmp) / "bench.db"
        writer = Writer(db)
        streamer = Streamer(writer, args.workers, args.rate)
        streamer.setup()
        streamer.start()
        started, rows_before = time.monotonic(), writer.rows_written
        try:
            result = asyncio.run(measure(db, args.presses, args.warmup))
        finally:
            streamer.stop_event.set()
            streamer.join()
            writer.flush()
            elapsed = time.monotonic() - started
            rows = writer.rows_written - rows_before
            writer.close()
    lat = sorted(result["latencies"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "bench": "tui",
                "workers": args.workers,
                "presses": len(lat),
                "p50_ms": round(statistics.median(lat), 1),
                "p95_ms": round(lat[max(0, int(len(lat) * 0.95) - 1)], 1),
                "max_ms": round(lat[-1], 1),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "ui_thread_cpu": round(result["ui_cpu"], 2),
                "rows_per_s": round(rows / elapsed),
                "steps_per_s": round(sum(streamer.steps.values()) / elapsed),
                "updated": "log pane filled with the new worker's stored lines and the screen refreshed",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
