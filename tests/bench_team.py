"""The scripted team of ``bench/efficiency.py``: one root plan of many tasks, each a fixed run of actions.

Everything is read from the request, so the server process needs no configuration: the goal says
``BENCH tasks=N actions=A files=F`` (and ``work=edit`` for the edit workload); the root planner answers with N
tasks; each task's instructions carry ``ACTIONS=A`` and the worker's step is the number of assistant messages
so far. A task's A model calls are its actions, ``finish`` included: reads of the repository's generated files
and whole-file writes of the task's file, then finish. The task's file (:func:`task_file`): each task adds a
new file of its own (``bench/gNN/tNNNNN.txt``: the tree grows by one file per task, and every parked worktree
must write all of them), or with ``work=edit`` task i edits the existing generated file i mod F (the tree keeps
its size, like real work; with F at least twice the workers, task i + F starts after task i landed, so tasks
do not conflict). Follow-up rounds plan nothing; the judge says done.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from tests.scripted_server import message_text, schema_name
from tests.scripted_team import finish, plan, read, task, write

_GOAL = re.compile(r"BENCH tasks=(\d+) actions=(\d+) files=(\d+)( work=edit)?")
_TITLE = re.compile(r"TASK: bench-(\d+)")
_ACTIONS = re.compile(r"ACTIONS=(\d+) FILES=(\d+)( EDIT)?")
_LINES = 40


def bench_goal(tasks: int, actions: int, files: int, edit: bool = False) -> str:
    """The goal for N tasks of A actions on F generated files; ``edit``: tasks edit those files."""
    work = " work=edit" if edit else ""
    return f"BENCH tasks={tasks} actions={actions} files={files}{work}: scripted benchmark work"


@lru_cache(maxsize=4)
def _plan(tasks: int, actions: int, files: int, edit: bool) -> str:
    flag = " EDIT" if edit else ""
    return json.dumps(
        plan(
            [
                task(
                    f"bench-{i:05d}",
                    f"Benchmark task {i}. ACTIONS={actions} FILES={files}{flag}",
                    files=[task_file(i, files, edit)],
                )
                for i in range(tasks)
            ],
            scratchpad="benchmark",
        )
    )


def generated_file(n: int) -> str:
    """The path of generated file ``n`` of :func:`tests.gitrepo.make_repo`."""
    return f"src/d{n % 10:02}/file{n:03}.txt"


def task_file(i: int, files: int, edit: bool = False) -> str:
    """The file task ``i`` writes: a new file of its own, or with ``edit`` generated file i mod ``files``."""
    if not edit or files < 1:
        return f"bench/g{i % 50:02d}/t{i:05d}.txt"
    return generated_file(i % files)


def bench_action(i: int, step: int, actions: int, files: int, edit: bool = False) -> dict[str, Any]:
    """Step ``step`` (0-based) of task ``i``: read, read, then write/read alternating, ``finish`` last."""
    mine = task_file(i, files, edit)
    if step >= actions - 1:
        return finish(f"task {i} wrote {mine}")
    if step < 2 or step % 2:
        return read(generated_file((i * 7 + step) % max(1, files)))
    body = "".join(f"task {i} step {step} line {k}: some generated text\n" for k in range(_LINES))
    return write(mine, body)


def bench_responder(body: dict[str, Any]) -> str:
    name = schema_name(body) or ""
    messages = body.get("messages") or []
    if name == "plan":
        text = message_text(messages[-1]) if messages else ""
        goal = _GOAL.search(text)
        if "HANDOFFS FROM WORKERS" in text or goal is None:
            return json.dumps(plan([], scratchpad="benchmark: nothing to add"))
        tasks, actions, files, edit = goal.groups()
        return _plan(int(tasks), int(actions), int(files), bool(edit))
    if name == "action":
        first = message_text(messages[1])
        i = int(_TITLE.search(first).group(1))  # type: ignore[union-attr]
        actions, files, edit = _ACTIONS.search(first).groups()  # type: ignore[union-attr]
        step = sum(1 for m in messages if m.get("role") == "assistant")
        return json.dumps(bench_action(i, step, int(actions), int(files), bool(edit)))
    if name == "verdict":
        return json.dumps({"decision": "done", "reason": "benchmark over", "notes": ""})
    return json.dumps({"ok": True})
