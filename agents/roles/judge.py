"""The judge: at the end of a cycle, ``continue`` or ``done``, with a reason and notes for the next planner.

It sees the goal, the cycle's handoffs, the diff stat of what landed this cycle and, when the project has a check
command, its output run in the sandbox on the shared branch's tip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.errors import EndpointError, ModelError
from ..status import AgentStatus, Role
from .ask import ask
from .context import Handoff
from .render import render
from .replies import Verdict

if TYPE_CHECKING:
    from .context import RoleContext

CHECK_OUTPUT_CHARS = 6000


async def run_judge(
    ctx: RoleContext, cycle_id: str, number: int, start_tip: str, handoffs: list[Handoff]
) -> Verdict:
    state = ctx.ledger
    agent = state.start_agent(Role.JUDGE, None, ctx.settings.role(Role.JUDGE).model, cycle_id)
    diff_stat = await _diff_stat(ctx, start_tip)
    check_command = ctx.check.command if ctx.check is not None else ctx.settings.check_command
    check_exit, check_output = (None, "")
    if check_command:
        check_exit, check_output = await _run_check(ctx, check_command)
    work = list(handoffs)
    messages = render(
        "judge",
        ctx.settings.prompt_override("judge"),
        goal=ctx.goal,
        number=number,
        tasks_done=sum(h.done for h in work),
        tasks_failed=sum(not h.done for h in work),
        commits=sum(1 for h in work if h.commit),
        handoffs=[h.as_prompt() for h in work][:60],
        diff_stat=diff_stat[-4000:],
        check_command=check_command,
        check_exit=check_exit,
        check_output=check_output[-CHECK_OUTPUT_CHARS:],
    )
    status = AgentStatus.DONE
    try:
        verdict = await ask(ctx, agent, Role.JUDGE, messages, "verdict", Verdict)
    except EndpointError:
        raise  # retrying cannot fix it: the session ends with one line
    except ModelError as exc:
        status = AgentStatus.FAILED
        verdict = Verdict(
            decision="continue",
            reason=f"the judge could not answer: {exc.reason}",
            notes=ctx.verdict_notes,
        )
    agent.steps += 1

    ctx.recorder.verdict(
        agent.id,
        cycle_id,
        number,
        decision=verdict.decision,
        reason=verdict.reason,
        notes=verdict.notes,
        check_output=check_output,
        check_exit=check_exit,
    )
    state.end_agent(agent, status)
    return verdict


async def _diff_stat(ctx: RoleContext, since: str) -> str:
    """What landed on the shared branch since ``since``, as ``git diff --stat``."""
    from ..git.run import git

    result = await git(
        "diff",
        "--stat",
        "--no-ext-diff",
        "--no-textconv",
        since,
        ctx.git.shared.tip,
        cwd=ctx.git.root,
        check=False,
    )
    return result.out


async def _run_check(ctx: RoleContext, command: str) -> tuple[int | None, str]:
    """The project's check command, sandboxed, in a worktree of the shared tip (the gate's cached result
    for the tip when it has one)."""
    from ..tools.sandbox import run_command

    tip_tree = ctx.git.shared.tip_tree
    cached = ctx.gate.cached(tip_tree) if ctx.gate and tip_tree else None
    if cached is not None and ctx.check is not None and command == ctx.check.command:
        return cached.exit_code, cached.output

    async with ctx.git.worktree(f"check-{ctx.cycle_number}", "judge") as wt:
        result = await run_command(
            command, wt.path, ctx.settings.sandbox, timeout=ctx.settings.sandbox.max_timeout
        )
    return result.exit_code, result.text
