"""Several candidate edits from idle slots, checked by the tests: what a swarm has over a single agent.

When the endpoint has idle slots (others are not using them right now), a worker whose last edit failed its check
draws more than one reply for its next step in one request, and keeps the first edit that passes the check; the
others are undone. llama-server reads the prompt once and samples it on as many free slots (``n``): measured on
2 cores, a 2,150-token prompt with 3 samples took 40 s against 37 s for one, where 3 separate requests on cold
slots read the prompt 3 times (~115 s each, in parallel). A 1.5B model's second or third sample is often right
where its first was not. When no edit passes, the first candidate's edit is kept, as if only it had been drawn.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..model.errors import ModelError, ReplyFormatError
from ..tools.actions import EDIT_ACTIONS, FormatError, execute, parse_action, reply_schema
from .restart import restore, snapshot

if TYPE_CHECKING:
    from .briefing import Seen
    from .context import Agent, RoleContext


class WorkerLoop(Protocol):
    """What candidates need of the worker's loop (a protocol: the worker imports this module)."""

    context: RoleContext
    agent: Agent
    ctx: Any
    messages: list[dict[str, str]]
    check: str
    last_check: Any
    seen: Seen
    _previous: Any
    _repeats: int

    attempts: Any

    async def act(self, content: str, action: Any, step: int) -> dict[str, Any] | None: ...
    def tests_now_pass(self) -> bool: ...
    def auto_finish(self, step: int) -> dict[str, Any]: ...
    async def after_edit(self, action: Any) -> str: ...
    def _observe(self, content: str, text: str, step: int, name: str, args: dict[str, Any],
                 exit_code: int | None, duration_ms: float, *, error: bool) -> None: ...  # fmt: skip


MAX_CANDIDATES = 3
TEMPERATURE_STEP = 0.5
"""Candidates are sampled this much hotter than a single step: in the demo's record, two samples at +0.35 were
the same reply most of the time (one prompt, one temperature: only the sampling differs)."""


def wanted(loop: WorkerLoop, settings: Any) -> bool:
    """Draw candidates when the task has a check, an edit has already failed it, and 2+ slots are idle."""
    if not loop.check or loop.last_check is None or loop.last_check.passed:
        return False
    return loop.context.client.idle_slots(settings) >= 2


async def _draw(loop: WorkerLoop, settings: Any, n: int) -> list[tuple[str, Any]]:
    """Up to ``n`` replies to the step's one request, sampled a little hotter than a single step; (content,
    action or None) each."""
    replies = await loop.context.client.complete_samples(
        settings,
        loop.messages,
        "action",
        reply_schema(loop.python),
        role="worker",
        agent_id=loop.agent.id,
        temperature=min(1.2, settings.temperature + TEMPERATURE_STEP),
        samples=n,
    )
    drawn: list[tuple[str, Any]] = []
    for reply in replies:
        if isinstance(reply, ReplyFormatError):
            drawn.append((reply.content, None))
            continue
        try:
            drawn.append((reply.content, parse_action(reply.content)))
        except FormatError:
            drawn.append((reply.content, None))
    return drawn


async def step(loop: WorkerLoop, settings: Any, step_no: int) -> dict[str, Any] | None:
    """One worker step drawn as several candidates; falls back to the first reply when it is not an edit."""
    n = min(MAX_CANDIDATES, loop.context.client.idle_slots(settings))
    drawn = await _draw(loop, settings, n)
    if not drawn:
        raise ModelError("no candidate reply")
    first_content, first_action = drawn[0]
    if first_action is None or first_action.name not in EDIT_ACTIONS:
        if first_action is None:
            loop._observe(first_content, "ERROR: your reply was not a valid action", step_no, "invalid", {}, None,
                          0.0, error=True)  # fmt: skip
            return None
        return await loop.act(first_content, first_action, step_no)
    edits: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for content, action in drawn:
        if action is None or action.name not in EDIT_ACTIONS:
            continue
        key = json.dumps([action.name, action.arguments()], sort_keys=True)
        if key not in seen:
            seen.add(key)
            edits.append((content, action))
    root = loop.ctx.real_root
    started = time.perf_counter()
    for index, (content, action) in enumerate(edits):
        await anyio.to_thread.run_sync(loop.attempts.before_edit, root, action.path)
        before = await anyio.to_thread.run_sync(snapshot, root, action.path)
        observation = await execute(action, loop.ctx)
        if not observation.error:
            extra = await loop.after_edit(action)
            if loop.last_check is not None and loop.last_check.passed:
                note = f"\n(kept candidate {index + 1} of {len(edits)}: the first whose check passed)"
                _finish(loop, content, action, observation.text + extra + note, step_no, started)
                return loop.auto_finish(step_no) if loop.tests_now_pass() else None
        await anyio.to_thread.run_sync(restore, root, action.path, before)
    # none passed: keep the first candidate's edit, as if it had been the only reply
    content, action = edits[0]
    observation = await execute(action, loop.ctx)
    extra = await loop.after_edit(action) if not observation.error else ""
    note = f"\n({len(edits)} candidate edits tried at different temperatures; none passed the check)"
    _finish(loop, content, action, observation.text + extra + note, step_no, started, error=observation.error)
    return None


def _finish(
    loop: WorkerLoop,
    content: str,
    action: Any,
    text: str,
    step_no: int,
    started: float,
    *,
    error: bool = False,
) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    loop._previous = None
    loop._repeats = 0
    loop._observe(content, text, step_no, action.name, action.arguments(), None, elapsed, error=error)
    if action.name == "write_file" and not error:
        loop.seen.remember(action.path, action.content, loop.messages[-2])
