"""Draw a failed edit again from the same prompt: a small model's second or third sample is often right where its
first was not, and on a local server a redraw is the cheapest call there is.

Measured (bench/effectiveness.py, Qwen2.5-Coder-1.5B on 2 cores): prompt processing is most of a call's time
(a first prompt of ~1,500 tokens at 50-90 tokens/s against ~150 generated tokens), and a worker's failed edit
pulls its next reply toward small patches of the same mistake (``tableize`` patched with ``.lower()``, then
``.title()``, then ``.capitalize()``). So when an edit is refused for its code (a stub, no body, does not parse)
or fails the task's tests without progress (no fewer failures, no more passing), it is undone and the step is
drawn again, hotter, from the very prompt that produced it: llama-server still holds that prompt in the agent's
slot (the client keeps an agent on one slot), so the redraw pays for generation only (measured on one slot:
6-14 s against 20-40 s for the first draw), and the failed try never enters the conversation. A ``replace``
whose search text is wrong needs the feedback, not another sample, and goes on as before. After
:data:`PER_EDIT` redraws the last failed edit is kept and the conversation goes on, with a line saying how many
other tries failed. Each redraw is a step and a recorded model call; a worker has ``limits.redraws_per_worker``
of them in all (0 turns them off).

Redraws are sequential, one request each: llama-server's several-samples-per-request (``n``) sometimes never
answers (see ``model/bodies.py``), and separate requests on other slots would read the whole prompt again.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..model.errors import ReplyFormatError
from ..status import Role
from ..tools import confine
from ..tools.actions import EDIT_ACTIONS, SCHEMA_NAME, reply_schema
from .ask import ask_once
from .restart import restore, snapshot

if TYPE_CHECKING:
    from .context import Agent, RoleContext

PER_EDIT = 2
HEAT_STEP = 0.35
MAX_TEMPERATURE = 1.2


class EditingLoop(Protocol):
    """What a redraw needs of the worker's loop (a protocol: the worker imports this module)."""

    context: RoleContext
    agent: Agent
    ctx: Any
    limits: Any
    messages: list[dict[str, str]]
    last_check: Any
    edit_failed: bool
    redraws_left: int
    python: bool
    _previous: Any

    async def act(self, content: str, action: Any, step: int) -> dict[str, Any] | None: ...


def wanted(loop: EditingLoop, action: Any) -> bool:
    return action.name in EDIT_ACTIONS and loop.redraws_left > 0


_NAME_ERROR = re.compile(
    r"\b(NameError: name '\w+' is not defined|ImportError: cannot import name|ModuleNotFoundError: No module named)"
)


def needs_feedback(check: Any) -> bool:
    """The edit's tests failed on a missing name or import: the fix is in the error message (measured: a test
    written without importing the function it tests was redrawn twice, the same way, before the model saw
    its NameError)."""
    return check is not None and not check.passed and _NAME_ERROR.search(check.output or "") is not None


def _signature(action: Any) -> str:
    return json.dumps([action.name, action.arguments()], sort_keys=True)


async def edit(
    loop: EditingLoop, settings: Any, content: str, action: Any, step: int
) -> dict[str, Any] | None:
    """Do the edit ``action``; while it fails and redraws are left, undo it and draw the step again."""
    root = loop.ctx.real_root
    prompt = list(loop.messages)  # what the edit was drawn from: every redraw sends exactly this
    tried = {_signature(action)}
    failures = 0
    for attempt in range(1, PER_EDIT + 1):
        before_check = loop.last_check
        before = await anyio.to_thread.run_sync(snapshot, root, action.path)
        result = await loop.act(content, action, step)
        if result is not None or not loop.edit_failed or len(loop.messages) != len(prompt) + 2:
            return result  # finished, passed, or the loop started over / answered from context
        if needs_feedback(loop.last_check):
            return None  # a name it must import or define: the error says which, another sample would not
        redrawn = await _redraw(loop, settings, prompt, attempt, tried)
        if redrawn is None:
            break
        failures += 1
        loop.redraws_left -= 1
        try:  # undo the failed edit; it never enters the conversation
            await anyio.to_thread.run_sync(restore, root, action.path, before)
        except (confine.ActionFailed, OSError):
            break
        del loop.messages[len(prompt) :]
        loop.last_check = before_check
        loop._previous = None
        step = loop.agent.steps
        content, action = redrawn
    else:
        result = await loop.act(content, action, step)
        if result is not None or not loop.edit_failed or len(loop.messages) != len(prompt) + 2:
            return result
    if failures:
        loop.messages[-1]["content"] += f"\n({failures} other tries at this edit failed too.)"
    return None


async def _redraw(
    loop: EditingLoop, settings: Any, prompt: list[dict[str, str]], attempt: int, tried: set[str]
) -> tuple[str, Any] | None:
    """A new edit drawn from ``prompt``, hotter; None when none is to be had (budget, a non-edit, a bad reply)."""
    while loop.redraws_left > 0 and loop.agent.steps < loop.limits.steps_per_worker:
        loop.agent.steps += 1
        hotter = settings.model_copy(
            update={"temperature": min(MAX_TEMPERATURE, settings.temperature + HEAT_STEP * attempt)}
        )
        try:
            reply = await ask_once(
                loop.context, loop.agent, Role.WORKER, prompt, SCHEMA_NAME, reply_schema(loop.python), hotter
            )
        except ReplyFormatError:
            loop.redraws_left -= 1
            continue
        action = reply.data.action
        if action.name not in EDIT_ACTIONS:
            return None  # it wants to do something else: the failed edit's observation will say why
        signature = _signature(action)
        if signature in tried:  # the same edit again: worth nothing, draw once more
            loop.redraws_left -= 1
            attempt += 1
            continue
        tried.add(signature)
        return reply.content, action
    return None
