"""Planners: split the goal (or an area of it) into worker tasks and sub-planner scopes; never write code.

A planner asks once under the ``plan`` schema, queues its tasks, starts its sub-planners in parallel, then sleeps
until handoffs arrive. When all its tasks have reported it may add follow-up tasks (within limits) and sleeps
again; when nothing is left it hands a summary to its own parent. The root planner's scratchpad is rewritten
each round and carried to the next cycle; its conversation is not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ..model.errors import EndpointError, ModelError
from ..status import AgentStatus, Role, TaskKind, TaskStatus
from ..tools.incomplete import has_code
from ..tools.targeted import TEST_FILE, module_name, module_tested
from . import targets, under_test
from .ask import ask
from .briefing import ADDS_FUNCTION
from .context import Handoff, Task, check_command
from .progress import check_summary, failing_tests, repeats_landed
from .render import render
from .replies import Plan, PlannedTask

PATH_WORD = re.compile(r"[\w.-]*(?:/[\w.-]+)*\.[A-Za-z][A-Za-z0-9]{0,4}\b")
"""A word that looks like a file path (``src/pkg/mod.py``, ``README.md``), in an area's title or scope."""

if TYPE_CHECKING:
    from .context import RoleContext


async def run_planner(ctx: RoleContext, task: Task, scope: str = "") -> list[Handoff]:
    """Plan ``task``'s area, see its subtree through, and return the handoffs it collected."""
    role = Role.PLANNER if task.kind == TaskKind.PLANNER else Role.SUBPLANNER
    state = ctx.ledger
    agent = state.start_agent(role, task, ctx.settings.role(role).model, task.cycle_id)
    state.start_task(task)
    collected: list[Handoff] = []
    followups_left = ctx.settings.limits.followups_per_planner
    limits = ctx.settings.limits
    can_split = task.depth < limits.planner_depth
    status = TaskStatus.DONE
    async with ctx.inbox(task.id) as inbox, anyio.create_task_group() as group:
        handoffs: list[Handoff] = []
        first = True
        while True:
            max_tasks = ctx.task_budget_left() if first else min(followups_left, ctx.task_budget_left())
            if not first and (max_tasks <= 0 or not any(not h.done or h.notes for h in handoffs)):
                break
            try:
                plan = await _plan(
                    ctx,
                    agent,
                    task,
                    role,
                    scope,
                    handoffs,
                    max_tasks,
                    _fanout(ctx) if (first and can_split) else 0,
                    finished={h.title for h in collected if h.done},
                )
            except EndpointError:
                raise  # retrying cannot fix it: the session ends with one line
            except ModelError as exc:  # caught here, inside the group, so it is not wrapped in a group
                status = TaskStatus.FAILED
                ctx.recorder.warning(f"{agent.name}: {exc.reason}", agent_id=agent.id, task_id=task.id)
                collected.append(
                    Handoff(task.id, task.title, TaskStatus.FAILED, f"planning failed: {exc.reason}")
                )
                break
            agent.steps += 1
            outstanding = _queue(ctx, task, plan, max_tasks, group, first and can_split)
            if not first:
                followups_left -= len(outstanding)
            first = False
            if not outstanding:
                break
            handoffs = []
            while outstanding:
                handoff = await inbox.receive()
                outstanding.discard(handoff.task_id)
                handoffs.append(handoff)
            collected += handoffs
    done = sum(h.done for h in collected)
    summary = f"{done}/{len(collected)} tasks done in '{task.title}'"
    handoff = Handoff(
        task.id,
        task.title,
        status,
        summary,
        notes="; ".join(f"{h.title}: {h.notes}" for h in collected if h.notes)[:2000],
    )
    state.end_task(task, status, handoff=handoff, error=None if status == TaskStatus.DONE else summary)
    state.end_agent(agent, AgentStatus(status))
    return collected


async def _plan(
    ctx: RoleContext,
    agent,
    task: Task,
    role: str,
    scope: str,
    handoffs: list[Handoff],
    max_tasks: int,
    max_subplanners: int,
    finished: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    plan = await _named_targets(ctx, max_tasks, finished) if role == Role.PLANNER else None
    if plan is None:
        plan = await _ask_model(ctx, agent, role, task, scope, handoffs, max_tasks, max_subplanners)
        plan.tasks = await _not_written_yet(ctx, plan.tasks)
    ctx.recorder.plan(
        agent.id,
        task.id,
        tasks=[t.title for t in plan.tasks],
        subplanners=[s.title for s in plan.subplanners],
        scratchpad=plan.scratchpad,
    )
    return plan


async def _ask_model(
    ctx: RoleContext,
    agent,
    role: str,
    task: Task,
    scope: str,
    handoffs: list[Handoff],
    max_tasks: int,
    max_subplanners: int,
) -> Plan:
    repo_map = await ctx.repo_map()
    check = await ctx.tip_check()
    check_text = check_summary(*check) if check is not None else ""
    if check is not None and check[0] not in (0, None):
        called = await _failing_tests_call(ctx, failing_tests(check[1], limit=None))
        check_text += f"\nThe failing tests call: {', '.join(called)}" if called else ""
    landed = [{"title": d.title, "files": d.files} for d in ctx.landed]
    if role == Role.PLANNER:
        messages = render(
            "planner",
            ctx.settings.prompt_override("planner"),
            goal=ctx.goal,
            steering=ctx.take_steering(),
            repo_map=repo_map,
            verdict_notes=ctx.verdict_notes,
            scratchpad=ctx.scratchpad,
            handoffs=[h.as_prompt() for h in handoffs],
            max_tasks=max_tasks,
            max_subplanners=max_subplanners,
            landed=landed,
            written=ctx.already_written,
            check_command=check_command(ctx),
            check=check_text,
        )
    else:
        messages = render(
            "subplanner",
            ctx.settings.prompt_override("subplanner"),
            goal=ctx.goal,
            title=task.title,
            scope=scope,
            repo_map=repo_map,
            handoffs=[h.as_prompt() for h in handoffs],
            max_tasks=max_tasks,
            max_subplanners=max_subplanners,
            landed=landed,
            written=ctx.already_written,
            check_command=check_command(ctx),
            check=check_text,
        )
    plan = await ask(ctx, agent, role, messages, "plan", Plan)
    if role == Role.PLANNER and plan.scratchpad.strip():
        ctx.set_scratchpad(plan.scratchpad)
    return plan


async def _named_targets(
    ctx: RoleContext, max_tasks: int, finished: frozenset[str] | set[str]
) -> Plan | None:
    """The plan when the goal names its targets (see targets.py): those not landed nor finished yet, as many
    as the round may queue; None to ask the model (no named targets, or none left).

    A follow-up round plans the targets whose workers failed again, each for a fresh worker: with a small
    model a second independent try is what most often succeeds, and it costs no planner call.
    """
    files = await _tip_files(ctx)
    if files is None:
        return None
    read = await _tip_reader(ctx, [f for f in files if f in ctx.goal])
    found = targets.find_targets(ctx.goal, files, read)
    planned = targets.planned_tasks(ctx.goal, found)
    done = {
        t.title for t in planned if t.title in finished or repeats_landed(t.title, list(t.files), ctx.landed)
    }
    again: set[str] = set()
    if done:  # landed or finished, but are their tests passing? (a step-limited worker lands partial work)
        check = await ctx.tip_check()
        if check is not None and check[0] not in (0, None):
            failing = targets.still_failing(found, failing_tests(check[1], limit=None))
            again = {t.title for t in failing} & done
    tasks = [t for t in planned if t.title not in done or t.title in again]
    if again:
        ctx.recorder.status(f"planned again, their tests still fail: {', '.join(sorted(again))}")
    if not tasks or max_tasks <= 0:
        return None
    left = f" ({len(tasks) - max_tasks} left for the next round)" if len(tasks) > max_tasks else ""
    tasks = tasks[:max_tasks]
    ctx.recorder.status(f"planned {len(tasks)} targets the goal names, without a model call{left}")
    plan = Plan(tasks=tasks, subplanners=[], scratchpad=ctx.scratchpad)
    plan._again = again
    return plan


_CHANGE = r"\b(?:add|implement|create|write|define|fix|repair|correct|change|rewrite|update|improve|refactor|rename|make|optimi[sz]e|speed\s+up)\b"


def _goal_asks_for(goal: str, name: str) -> bool:
    """Whether the goal asks for ``name`` to be written or changed (a verb a few words before it), not only
    names it: "Add miles_to_km(), the inverse of km_to_miles" asks for miles_to_km only."""
    return (
        re.search(_CHANGE + r"\W+(?:[\w.]+\W+){0,3}?`?" + re.escape(name) + r"\b", goal, re.IGNORECASE)
        is not None
    )


async def _not_written_yet(ctx: RoleContext, tasks: list[PlannedTask]) -> list[PlannedTask]:
    """The plan without tasks that add a function its files already define with code, which the goal does not
    ask for. Seen with the 1.5B model: "Add miles_to_km() to units.py" was planned as eleven tasks, nine of them to
    "implement" the module's working functions (two sub-planners' worth); workers spent 14 minutes on them and
    one put a return above a function's docstring (it landed, every test passing). A function the tip's check
    fails on is kept: partial work that landed is planned again by the same words."""
    adds = {id(t): m.group(1) for t in tasks if (m := ADDS_FUNCTION.match(t.title)) and t.files}
    adds = {k: name for k, name in adds.items() if not _goal_asks_for(ctx.goal, name)}
    if not adds:
        return tasks
    read = await _tip_reader(ctx, sorted({f for t in tasks if id(t) in adds for f in t.files}))
    has = {
        id(t): f
        for t in tasks
        if id(t) in adds
        for f in t.files
        if (x := read(f)) and has_code(x, adds[id(t)])
    }
    if has and (check := await ctx.tip_check()) is not None and check[0] != 0:  # run once per tip
        has = {k: f for k, f in has.items() if adds[k].lower() not in check[1].lower()}
    for t in tasks:
        if id(t) in has:
            ctx.recorder.status(
                f"dropped a task to add {adds[id(t)]}(): {has[id(t)]} has it already ({t.title})"
            )
            if (written := f"{adds[id(t)]}() in {has[id(t)]}") not in ctx.already_written:
                ctx.already_written.append(written)  # the next plan is told: a small model plans it again
    return [t for t in tasks if id(t) not in has]


async def _failing_tests_call(ctx: RoleContext, failing: list[str]) -> list[str]:
    """The repository's functions the failing tests call, read from the tip (see under_test.py)."""
    files = await _tip_files(ctx) if failing else None
    if files is None:
        return []
    wanted = {where[0] for t in failing if (where := under_test.locate_test(t, set(files)))}
    return under_test.functions_under_test(failing, files, await _tip_reader(ctx, sorted(wanted)))


async def _tip_files(ctx: RoleContext) -> list[str] | None:
    """Every file of the shared branch's tip (None when git cannot list it)."""
    from ..git.run import git

    listing = await git("ls-tree", "-r", "--name-only", ctx.git.shared.tip, cwd=ctx.git.root, check=False)
    return listing.out.splitlines() if listing.rc == 0 else None


async def _tip_reader(ctx: RoleContext, paths: list[str]):
    """A reader of ``paths`` at the tip (one ``cat-file`` batch); other paths read as None."""
    from ..git.run import cat_blobs

    tip = ctx.git.shared.tip
    texts = await cat_blobs(ctx.git.root, [f"{tip}:{p}" for p in paths])
    return lambda path: texts.get(f"{tip}:{path}")


def _fanout(ctx: RoleContext) -> int:
    """Sub-planners one planner may start: the configured fan-out, but no more than the endpoint has slots
    (each sub-planner is a model call competing with the workers for the same slots)."""
    return min(ctx.settings.limits.planner_fanout, _slots(ctx))


def _slots(ctx: RoleContext) -> int:
    settings = ctx.settings.role(Role.SUBPLANNER)
    pool = ctx.client.slots(settings) if ctx.client is not None else None
    return pool.size if pool is not None else settings.max_concurrency


def _small(plan: Plan, ctx: RoleContext) -> bool:
    """A handful of tasks: the workers can start on every one at once, so sub-planners would only add model
    calls competing with them for the endpoint's slots."""
    return len(plan.tasks) + len(plan.subplanners) <= ctx.workers


def _covered(text: str, files: set[str]) -> bool:
    """Whether every file ``text`` names is one of ``files`` (and it names one). Seen with the 1.5B model on a
    one-function bug: a task for ``number.py`` with its tests, and two areas, "Fix ordinal() in number.py" and
    "Add tests for ordinal()" naming ``tests/test_number.py``: three workers on one function."""
    named = {m.strip(".,;:'\"`()") for m in PATH_WORD.findall(text)}
    return bool(named) and named <= files


def _is_test(path: str) -> bool:
    return bool(TEST_FILE.match(path.rsplit("/", 1)[-1]))


def with_their_tests(
    tasks: list[PlannedTask], landed: Callable[[PlannedTask], bool] = lambda t: False
) -> list[PlannedTask]:
    """``tasks`` with each task that only edits tests joined to the task that edits the module they are named
    after (``test_text.py`` → ``text.py``), when the plan has one.

    Why: the landing gate lands nothing that adds a failing test, so tests planned apart from the function another
    worker is writing at the same time cannot land, and their worker, told to make them pass, writes the function
    itself into the test file (measured: the 1.5B planner split "add is_palindrome() with tests" in two tasks; the
    tests' worker wrote is_palindrome into test_text.py). One worker writing both can land both. A task of code
    that ``landed`` already is no home (it is dropped as a repeat): its tests then stand alone, and can land."""
    code = [t for t in tasks if any(not _is_test(f) for f in t.files) and not landed(t)]
    joined: dict[int, PlannedTask] = {}
    kept: list[PlannedTask] = []
    for task in tasks:
        home = None
        if task.files and all(_is_test(f) for f in task.files):
            tested = {module_tested(f) for f in task.files}
            home = next(
                (c for c in code if any(module_name(f) in tested for f in c.files if not _is_test(f))), None
            )
        if home is None:
            kept.append(task)
            continue
        base = joined.get(id(home), home)
        joined[id(home)] = PlannedTask(
            title=base.title if base.title.endswith("(with its tests)") else f"{base.title} (with its tests)",
            instructions=f"{base.instructions} Tests: {task.instructions}",
            files=[*base.files, *(f for f in task.files if f not in base.files)],
            check=base.check or task.check,
        )
    return [joined.get(id(t), t) for t in kept]


def _queue(ctx: RoleContext, parent: Task, plan: Plan, max_tasks: int, group, allow_sub: bool) -> set[str]:
    """Create the plan's tasks (within budget) and start its sub-planners; return the ids to wait for.

    Tasks that repeat landed work are dropped; for a small plan, sub-planner areas become work tasks.
    """
    state = ctx.ledger
    outstanding: set[str] = set()
    planned_tasks = with_their_tests(
        list(plan.tasks),
        lambda t: t.title not in plan._again and repeats_landed(t.title, list(t.files), ctx.landed),
    )
    if len(planned_tasks) < len(plan.tasks):
        joined = len(plan.tasks) - len(planned_tasks)
        ctx.recorder.status(f"joined {joined} task(s) of tests with the task of the code they test")
    subplanners = list(plan.subplanners) if allow_sub else []
    if subplanners and _small(plan, ctx):
        ctx.recorder.status(f"a small plan: its {len(subplanners)} sub-planner area(s) become work tasks")
        files = {f for t in planned_tasks for f in t.files}
        for sub in subplanners:
            if _covered(f"{sub.title} {sub.scope}", files):
                ctx.recorder.status(f"dropped an area the plan's tasks already cover: {sub.title}")
                continue
            planned_tasks.append(PlannedTask(title=sub.title, instructions=sub.scope, files=[], check=""))
        subplanners = []
    queued: set[str] = set()
    for planned in planned_tasks[: max(0, max_tasks)]:
        if ctx.task_budget_left() <= 0:
            break
        key = " ".join((planned.title or planned.instructions[:60]).lower().split())
        if key in queued:  # a small model repeats an item in one plan (measured: two identical sub-planners)
            ctx.recorder.status(f"dropped a repeat within the plan: {planned.title or key}")
            continue
        queued.add(key)
        title = planned.title or planned.instructions[:60]
        if title not in plan._again and repeats_landed(title, list(planned.files), ctx.landed):
            ctx.recorder.status(f"dropped a plan for work that already landed: {planned.title}")
            continue
        child = state.new_task(
            parent.cycle_id,
            TaskKind.WORK,
            planned.title or planned.instructions[:60],
            parent,
            instructions=planned.instructions,
            files=list(planned.files),
            check=planned.check,
        )
        outstanding.add(child.id)
        ctx.add_work(child)
    if subplanners:
        for sub in subplanners[: _fanout(ctx)]:
            child = state.new_task(
                parent.cycle_id, TaskKind.SUBPLANNER, sub.title, parent, instructions=sub.scope
            )
            outstanding.add(child.id)
            group.start_soon(_run_sub, ctx, child, sub.scope)
    return outstanding


async def _run_sub(ctx: RoleContext, task: Task, scope: str) -> None:
    collected = await run_planner(ctx, task, scope)
    await ctx.deliver(
        Handoff(
            task.id,
            task.title,
            task.status,
            f"{sum(h.done for h in collected)}/{len(collected)} tasks done",
        )
    )
