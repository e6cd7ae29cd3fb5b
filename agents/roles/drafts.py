"""First drafts of a stub's body by fill-in-the-middle, each tested, before the worker's first chat call.

Why: a code model writes a function body best the way it was trained to, between the code before it and the
code after it, as plain code. Asked through the chat action schema, the same model writes the body as an
escaped JSON string, after ~40 tokens of thought, and copies what the prompt shows. Measured on the six stubs of
bench/effectiveness.py (Qwen2.5-Coder-1.5B, llama-server's ``/infill`` then, 2 cores, 5 draws each, the first at
temperature 0): dasherize 5 of 5 drafts passed their tests, ``_normalize_integer_rgb`` 5 of 5, ``rgb_to_hex``
2-3 of 5, the other three 0 of 5; a draft takes 2-15 s once the file is in the slot's cache (~35-45 s for the
first, which reads ~2,000 tokens of the file). The chat loop had restored 1-2 of the six in 8 minutes.

A draft goes in through ``write_function`` like the model's own edits (the same checks, the targeted tests
after it, the record); the worker finishes by itself when its task's tests pass. A draft that fails is undone
and never enters the conversation, except the one that made the most progress (more of the task's tests
passing), which stays as the worker's first edit for the chat loop to carry on from. The next draft is told,
in a comment after the file, which test the last one failed and how, and every draft sees what the module
imports from the repository (in a comment above the function). Endpoints without
fill-in-the-middle (not llama-server, or a model without FIM tokens) skip this, once.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..model.client import InfillUnsupported, NoSpareSlot, Reply
from ..model.errors import EndpointError, ModelError
from ..status import Role
from ..tools import confine
from ..tools.actions import parse_action
from ..tools.pyedit import body_gap, is_stub_body, same_code
from .briefing import read_text
from .restart import restore, snapshot

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .context import Agent, RoleContext, Task

TEMPERATURES = (0.0, 0.7, 0.9, 1.0, 1.1)
"""Per draft: the first is the model's best guess; the later ones are hotter, so they differ. One request each,
on the worker's own slot: the file is in its cache after the first, so a draft costs generation only (several
samples in one request sometimes never answer on llama-server, see ``model/bodies.py``)."""
MAX_WIDTH = 4
"""Drafts drawn at once at most: the agent's own and extra ones on slots no other agent claims."""
NOTE_CHARS = 240
"""A failed draft's note, at most (one comment line)."""
SHORT_BODY = 20
"""A function the task names whose tests fail is drafted afresh when its body is at most this many lines (a stub
always is): after step-limited partial work landed, the function the task is planned again for is no stub."""


class DraftingLoop(Protocol):
    """What drafting needs of the worker's loop (a protocol: the worker imports this module)."""

    context: RoleContext
    agent: Agent
    task: Task
    ctx: Any
    limits: Any
    settings: Any
    brief: Any
    messages: list[dict[str, str]]
    first_check: Any
    last_check: Any
    _previous: Any

    async def act(self, content: str, action: Any, step: int) -> dict[str, Any] | None: ...


def body_of(text: str, indent: int) -> str | None:
    """The drafted body: the lines at ``indent`` or deeper up to the first one that is not (the model went on
    past the function); None when nothing is left."""
    kept: list[str] = []
    for line in text.rstrip().split("\n"):
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        kept.append(line.rstrip())
    body = "\n".join(kept).strip("\n")
    return body if body.strip() else None


def with_helpers(prefix: str, head: str, helpers: list[str], replaced: str | None = None) -> tuple[str, str]:
    """``prefix`` split where a note goes, just above the function: (the code before, the note and the
    function's head). The note says what the module imports from the repository (a signature and a docstring
    line each, :mod:`..tools.imported`): what the file alone does not say. The code before is what a draft cuts
    to fit (:mod:`..model.fim`); the second part is never cut.

    Not the module's own functions: listed there too (measured, one effectiveness run), the 1.5B model's drafts
    called whichever listed name sounded close (``ordinal`` returned ``ordinalize(number)``, ``hex_to_rgb``
    went through ``hex_to_rgb_percent``) and copied the list into its code.

    ``replaced``: the body a draft replaces when it is not a stub (a bug fix), shown as comments after the
    note. Without it each draft rewrote the function blind to what it did; measured on more-itertools'
    ``always_iterable()`` with its ``None`` case removed, 8 drafts each: 0 passed blind (three called names
    that do not exist), 1 passed with the old body shown."""
    cut = len(prefix) - len(head) - 1
    if cut < 0 or prefix[cut:] != head + "\n":
        return prefix, ""
    indent = head[: len(head) - len(head.lstrip())]
    lines = ["Imported from this repository:", *helpers] if helpers else []
    if replaced is not None and replaced.strip():
        lines.append("The body below replaces this one, which fails its tests:")
        lines += [line.rstrip() for line in replaced.strip("\n").split("\n")]
    note = "".join(f"{indent}# {line}\n" for line in lines)
    return prefix[:cut], note + prefix[cut:]


def after_failure(name: str, failed: str | None) -> str:
    """The note after the file that tells the next draft how the last one failed (see :func:`failure_note`):
    last in the prompt, so the slot's cached prompt still holds the whole file."""
    return f"\n# A draft of {name}() failed {failed}\n" if failed else ""


def failure_note(output: str) -> str | None:
    """The first failing test and its error, in one line (pytest's ``--tb=short`` or unittest's output): what
    the next draft is told of the last one, as a person fixing it would read it. None when none is found."""
    name = re.search(r"^_{3,} (\S.*?) _{3,}$", output, re.M) or re.search(
        r"^(?:FAIL|ERROR): (\S+)", output, re.M
    )
    errors = re.findall(r"^E\s+(\S.*)$", output, re.M) or re.findall(
        r"^(\w+(?:Error|Exception): .+)$", output, re.M
    )
    if not errors:
        return None
    said = " ".join(e.strip() for e in errors[:2])
    return (f"{name.group(1)}: {said}" if name else said)[:NOTE_CHARS]


def _targets(root: str, files: list[str], names: set[str], failing: str) -> list[tuple[str, str]]:
    """(path, function) of each function the task names that can be drafted, in the Python files it names: a
    stub, or a short body that the failing tests' output (``failing``) names. Why the latter: seen on an unseen
    bug-fix goal, a task planned for a working ``slugify()`` (the failing tests were another function's)
    redrafted it twelve times."""
    found = []
    for path in files:
        if not path.endswith(".py"):
            continue
        text = read_text(root, path)
        if text is None:
            continue
        for name in sorted(names):
            if body_gap(text, name, 0) is not None or (
                body_gap(text, name, SHORT_BODY) is not None
                and re.search(rf"\b{re.escape(name.rsplit('.', 1)[-1])}", failing, re.I)
            ):
                found.append((path, name))
    return found


def _temperature(index: int) -> float:
    return TEMPERATURES[min(index, len(TEMPERATURES) - 1)]


def _draw(
    group: TaskGroup,
    loop: DraftingLoop,
    gap: tuple[str, str, str, int],
    *,
    tail: str,
    first: int,
    width: int,
    replaced: str | None = None,
) -> MemoryObjectReceiveStream[Reply | Exception]:
    """Start ``width`` drafts of the gap at once (the agent's own on its slot, the others on spare ones) in
    ``group``; each reply is sent on as it arrives. The agent's own draw that fails is sent as its
    :class:`ModelError`, any draw's :class:`EndpointError` or :class:`InfillUnsupported` too (the consumer
    raises them, as themselves: a task group would wrap them); an extra draw that fails otherwise or finds no
    spare slot sends nothing. Why at once: a slot no other agent claims is idle model capacity, and a stub's
    tests tell a good draft from a bad one."""
    prefix, suffix, head, indent = gap
    far, near = with_helpers(prefix, head, loop.brief.helpers, replaced)
    send, receive = anyio.create_memory_object_stream[Reply | Exception](width)

    async def one(k: int, out: MemoryObjectSendStream[Reply | Exception]) -> None:
        async with out:
            try:
                reply: Reply | Exception = await loop.context.client.infill(
                    loop.settings,
                    far,
                    suffix,
                    near=near,
                    tail=tail,
                    role=Role.WORKER,
                    agent_id=loop.agent.id,
                    temperature=_temperature(first + k),
                    stop=[f"\n{' ' * max(0, indent - 4)}def "] if indent > 4 else None,
                    spare=f"{loop.agent.id}/{k}" if k else None,
                )
            except NoSpareSlot:
                return
            except (EndpointError, InfillUnsupported) as exc:  # the consumer raises it
                reply = exc
            except ModelError as exc:  # timed out (see INFILL_TIMEOUT) or failed
                if k:
                    return  # an extra draw: nothing lost
                reply = exc
            with contextlib.suppress(anyio.BrokenResourceError):  # the consumer is done (one passed)
                await out.send(reply)

    with send:
        for k in range(width):
            group.start_soon(one, k, send.clone())
    return receive


async def fill_stubs(loop: DraftingLoop) -> dict[str, Any] | None:
    """Draft each stub (or short function) the task names; the finish arguments once the task's tests pass
    (None: the chat loop goes on)."""
    per_stub = loop.limits.drafts_per_stub
    first = loop.first_check
    if per_stub <= 0 or not loop.context.client.can_infill(loop.settings, Role.WORKER):
        return None
    if first is None or first.passed or first.exit_code is None:
        return None  # nothing to tell a good draft from a bad one
    root = loop.ctx.real_root
    files, names = list(loop.task.files), set(loop.brief.names)
    targets = await anyio.to_thread.run_sync(_targets, root, files, names, first.output)
    for path, name in targets:
        try:
            done = await _draft_one(loop, root, path, name, per_stub)
        except InfillUnsupported:
            return None
        if done is not None:
            return done
    return None


class _Drafter:
    """One stub's drafts: how many were drawn, the bodies tested, the one that did most, how the last failed."""

    def __init__(self, loop: DraftingLoop, root: str, path: str, name: str) -> None:
        self.loop, self.root, self.path, self.name = loop, root, path, name
        self.prompt_length = len(loop.messages)
        # (its check, content, action) of the draft that did most
        self.best: tuple[Any, str, Any] | None = None
        self.drawn = 0
        self.tested: set[str] = set()  # bodies already tried (hot samples repeat themselves)
        self.failed: str | None = None  # how the last tested draft failed, for the next one
        self.stop = False  # the agent's own draw failed, or a draft could not be undone

    async def round(self, gap: tuple[str, str, str, int], current: str, width: int) -> dict[str, Any] | None:
        """Draw ``width`` drafts at once and test each as it arrives; the finish arguments of the first that
        passes (the others are cancelled), else None. Exceptions come out as raised, not in a group."""
        result: dict[str, Any] | None = None
        error: Exception | None = None

        async def consume(arrived: MemoryObjectReceiveStream[Reply | Exception]) -> None:
            nonlocal result, error
            try:
                with arrived:
                    async for reply in arrived:
                        result = await self.test(reply, gap, current)
                        if result is not None or self.stop:
                            break
            except Exception as exc:  # raised by the host below, as itself
                error = exc
            finally:
                group.cancel_scope.cancel()  # the draws still out are not needed

        tail = after_failure(self.name, self.failed)
        async with anyio.create_task_group() as group:
            replaced = None if is_stub_body(gap[2], current) else current  # a bug fix: the body it replaces
            drawn = _draw(group, self.loop, gap, tail=tail, first=self.drawn, width=width, replaced=replaced)
            group.start_soon(consume, drawn)
        if error is not None:
            raise error
        return result

    async def test(
        self, reply: Reply | Exception, gap: tuple[str, str, str, int], current: str
    ) -> dict[str, Any] | None:
        """Write a drafted body and run the task's tests; the finish arguments when they pass, else the draft
        is undone (the best one is remembered) and None."""
        loop, name = self.loop, self.name
        if isinstance(reply, EndpointError | InfillUnsupported):
            raise reply
        if isinstance(reply, Exception):  # the agent's own draw failed: the chat loop takes over
            loop.context.recorder.status(
                f"{loop.agent.name}: a draft of {name}() failed ({reply}); drafting stops"
            )
            self.stop = True
            return None
        _prefix, _suffix, head, indent = gap
        loop.agent.steps += 1
        self.drawn += 1
        body = body_of(reply.content, indent)
        if body is None or is_stub_body(head, body) or same_code(head, body, current):
            return None  # nothing new: write_function would refuse it (and the loop would start over)
        if body.strip() in self.tested:
            return None
        self.tested.add(body.strip())
        content = json.dumps(
            {
                "thought": f"A first draft of {name}(), written in place.",
                "action": {
                    "name": "write_function",
                    "path": self.path,
                    "function": name,
                    "content": head + "\n" + body,
                },
            }
        )
        action = parse_action(content)
        before = await anyio.to_thread.run_sync(snapshot, self.root, self.path)
        result = await loop.act(content, action, loop.agent.steps)
        if result is not None:
            loop.context.recorder.status(
                f"{loop.agent.name}: draft {self.drawn} of {name}() by fill-in-the-middle passed its tests"
            )
            return result  # the task's tests pass
        check = loop.last_check
        self.failed = failure_note(check.output) if check is not None else None
        bar = self.best[0] if self.best is not None else loop.first_check  # what a draft must beat
        if check is not None and check.better_than(bar) and len(loop.messages) == self.prompt_length + 2:
            self.best = (check, content, action)
        try:
            await anyio.to_thread.run_sync(restore, self.root, self.path, before)
        except (confine.ActionFailed, OSError):
            self.stop = True
            return None
        del loop.messages[self.prompt_length :]
        loop.last_check, loop._previous = None, None
        return None


async def _draft_one(
    loop: DraftingLoop, root: str, path: str, name: str, tries: int
) -> dict[str, Any] | None:
    drafter = _Drafter(loop, root, path, name)
    loop.context.recorder.status(  # the first draft reads the whole file: a minute or two on a small CPU
        f"{loop.agent.name}: drafting {name}() by fill-in-the-middle, up to {tries} drafts, each tested"
    )
    while not drafter.stop and drafter.drawn < tries and loop.agent.steps < loop.limits.steps_per_worker:
        text = await anyio.to_thread.run_sync(read_text, root, path)
        gap = body_gap(text or "", name, SHORT_BODY)
        if gap is None:
            break
        prefix, suffix = gap[0], gap[1]
        current = (text or "")[len(prefix) : len(text or "") - len(suffix)]
        spares = loop.context.client.spare_slots(loop.settings, loop.agent.id, loop.context.workers_busy)
        steps_left = loop.limits.steps_per_worker - loop.agent.steps
        width = min(1 + spares, MAX_WIDTH, tries - drafter.drawn, steps_left)
        if (done := await drafter.round(gap, current, width)) is not None:
            return done
    drawn, best = drafter.drawn, drafter.best
    if drawn:
        then = "the chat loop goes on from the one that did most" if best else "the chat loop takes over"
        loop.context.recorder.status(
            f"{loop.agent.name}: {drawn} drafts of {name}() by fill-in-the-middle, none passed its tests; {then}"
        )
    if best is not None:  # the chat loop carries on from the draft that did most, as its first edit
        loop.agent.steps += 1
        return await loop.act(best[1], best[2], loop.agent.steps)
    return None
