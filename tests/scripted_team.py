"""A scripted team of models for engine tests and benchmarks: planners, workers and a judge from tables.

The responder reads a request the way formicary builds it (the schema name, the task title in the worker's first
message, a CONFLICT message after a failed integration) and answers from the tables given. No model: every
reply is chosen by the test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.scripted_server import last_user_text, message_text, schema_name

Action = dict[str, Any]


def write(path: str, content: str, thought: str = "write") -> Action:
    return {"thought": thought, "action": {"name": "write_file", "path": path, "content": content}}


def read(path: str) -> Action:
    return {"thought": "read", "action": {"name": "read_file", "path": path, "start": 0, "end": 0}}


def run(command: str, timeout: int = 30) -> Action:
    return {"thought": "check", "action": {"name": "run", "command": command, "timeout": timeout}}


def finish(summary: str = "done", notes: str = "") -> Action:
    return {"thought": "finish", "action": {"name": "finish", "summary": summary, "notes": notes}}


def task(
    title: str, instructions: str = "", files: list[str] | None = None, check: str = ""
) -> dict[str, Any]:
    return {"title": title, "instructions": instructions or title, "files": files or [], "check": check}


def plan(
    tasks: list[dict[str, Any]], subplanners: list[dict[str, str]] | None = None, scratchpad: str = "notes"
) -> dict[str, Any]:
    return {"scratchpad": scratchpad, "tasks": tasks, "subplanners": subplanners or []}


RESTARTED = "YOU ARE STARTING THIS TASK AGAIN"


@dataclass
class ScriptedTeam:
    """Replies for every role. ``root_plans[i]`` is the root plan of cycle i+1 (the last repeats)."""

    root_plans: list[dict[str, Any]]
    sub_plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    work: dict[str, list[Action]] = field(default_factory=dict)
    """Task title → the actions its worker takes, in order (the last repeats)."""
    on_conflict: dict[str, list[Action]] = field(default_factory=dict)
    """Task title → the actions after a CONFLICT message."""
    on_restart: dict[str, list[Action]] = field(default_factory=dict)
    """Task title → the actions of its worker once it has started over (restart.py)."""
    on_refusal: dict[str, list[Action]] = field(default_factory=dict)
    """Task title → the actions after the landing gate's REFUSED message."""
    verdicts: list[dict[str, str]] = field(
        default_factory=lambda: [{"decision": "done", "reason": "ok", "notes": ""}]
    )
    default_work: Callable[[str, int], Action] | None = None
    """For titles not in ``work``: ``(title, step) -> action``."""
    calls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> str:
        name = schema_name(body) or ""
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            n = self.calls[name]
        if name == "plan":
            return json.dumps(self._plan(body))
        if name == "action":
            return json.dumps(self._action(body))
        if name == "verdict":
            return json.dumps(self.verdicts[min(n - 1, len(self.verdicts) - 1)])
        return json.dumps({"ok": True, "word": "ready"})

    def _plan(self, body: dict[str, Any]) -> dict[str, Any]:
        text = message_text(body["messages"][-1]) if body["messages"] else ""
        area = re.search(r"YOUR AREA: (.+)", text)
        if "HANDOFFS FROM WORKERS" in text:
            return plan([], scratchpad="follow-up: nothing to add")
        if area:
            return self.sub_plans.get(area.group(1).strip(), plan([]))
        with self._lock:
            self.calls["root_plan"] = self.calls.get("root_plan", 0) + 1
            i = self.calls["root_plan"] - 1
        return self.root_plans[min(i, len(self.root_plans) - 1)]

    def _action(self, body: dict[str, Any]) -> Action:
        messages = body["messages"]
        title = re.search(r"TASK: (.+)", message_text(messages[1])).group(1).strip()
        for marker, table in (("REFUSED", self.on_refusal), ("CONFLICT", self.on_conflict)):
            at = next(
                (
                    i
                    for i, m in enumerate(messages)
                    if m["role"] == "user" and message_text(m).startswith(marker)
                ),
                None,
            )
            if at is not None and title in table:
                steps = sum(1 for m in messages[at:] if m["role"] == "assistant")
                script = table[title]
                return script[min(steps, len(script) - 1)]
        steps = sum(1 for m in messages if m["role"] == "assistant")
        if title in self.on_restart and RESTARTED in message_text(messages[1]):
            script = self.on_restart[title]
            return script[min(steps, len(script) - 1)]
        if title in self.work:
            script = self.work[title]
            return script[min(steps, len(script) - 1)]
        if self.default_work is not None:
            return self.default_work(title, steps)
        return finish(f"nothing scripted for {title}")


def last_text(body: dict[str, Any]) -> str:
    return last_user_text(body)


def _crash_work(title: str, step: int) -> Action:
    name = title.replace(" ", "-")
    if step == 0:
        return write(f"{name}.txt", f"{title}\n")
    if step == 1:
        return read(f"{name}.txt")
    return finish(f"wrote {name}.txt")


CRASH_TEAM = ScriptedTeam(
    root_plans=[plan([task(f"cycle{c} task{j}") for j in range(6)]) for c in range(1, 4)]
    + [plan([task(f"extra{j}") for j in range(2)])],
    default_work=_crash_work,
    verdicts=[
        {"decision": "continue", "reason": "more", "notes": "keep going"},
        {"decision": "continue", "reason": "more", "notes": "keep going"},
        {"decision": "done", "reason": "all written", "notes": ""},
    ],
)


def crash_responder(body: dict[str, Any]) -> str:
    """A three-cycle session of small tasks, for headless runs in a subprocess (crash and resume tests)."""
    return CRASH_TEAM(body)
