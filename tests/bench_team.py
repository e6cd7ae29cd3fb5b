"""The scripted team of ``bench/efficiency.py``: one root plan of many tasks, each a fixed run of actions.

Everything is read from the request, so the server process needs no configuration: the goal says
``BENCH tasks=N actions=A files=F``; the root planner answers with N tasks; each task's instructions carry
``ACTIONS=A`` and the worker's step is the number of assistant messages so far. A task's A model calls are
its actions, ``finish`` included: reads of the repository's generated files and whole-file writes of the
task's own file (``bench/gNN/tNNNNN.txt``, so every task commits and no two tasks conflict), then finish.
Follow-up rounds plan nothing; the judge says done.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from tests.scripted_server import message_text, schema_name
from tests.scripted_team import finish, plan, read, task, write

_GOAL = re.compile(r"BENCH tasks=(\d+) actions=(\d+) files=(\d+)")
_TITLE = re.compile(r"TASK: bench-(\d+)")
_ACTIONS = re.compile(r"ACTIONS=(\d+) FILES=(\d+)")
_LINES = 40


def bench_goal(tasks: int, actions: int, files: int) -> str:
    return f"BENCH tasks={tasks} actions={actions} files={files}: scripted benchmark work"


@lru_cache(maxsize=4)
def _plan(tasks: int, actions: int, files: int) -> str:
    return json.dumps(
        plan(
            [
                task(
                    f"bench-{i:05d}",
                    f"Benchmark task {i}. ACTIONS={actions} FILES={files}",
                    files=[own_file(i)],
                )
                for i in range(tasks)
            ],
            scratchpad="benchmark",
        )
    )


def own_file(i: int) -> str:
    return f"bench/g{i % 50:02d}/t{i:05d}.txt"


def bench_action(i: int, step: int, actions: int, files: int) -> dict[str, Any]:
    """Step ``step`` (0-based) of task ``i``: read, read, then write/read alternating, ``finish`` last."""
    if step >= actions - 1:
        return finish(f"task {i} wrote {own_file(i)}")
    if step < 2 or step % 2:
        n = (i * 7 + step) % max(1, files)
        return read(f"src/d{n % 10:02}/file{n:03}.txt")
    body = "".join(f"task {i} step {step} line {k}: some generated text\n" for k in range(_LINES))
    return write(own_file(i), body)


def bench_responder(body: dict[str, Any]) -> str:
    name = schema_name(body) or ""
    messages = body.get("messages") or []
    if name == "plan":
        text = message_text(messages[-1]) if messages else ""
        goal = _GOAL.search(text)
        if "HANDOFFS FROM WORKERS" in text or goal is None:
            return json.dumps(plan([], scratchpad="benchmark: nothing to add"))
        return _plan(*(int(g) for g in goal.groups()))
    if name == "action":
        first = message_text(messages[1])
        i = int(_TITLE.search(first).group(1))  # type: ignore[union-attr]
        actions, files = (int(g) for g in _ACTIONS.search(first).groups())  # type: ignore[union-attr]
        step = sum(1 for m in messages if m.get("role") == "assistant")
        return json.dumps(bench_action(i, step, actions, files))
    if name == "verdict":
        return json.dumps({"decision": "done", "reason": "benchmark over", "notes": ""})
    return json.dumps({"ok": True})
