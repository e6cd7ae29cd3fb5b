"""The judge: at the end of a cycle, ``continue`` or ``done``, with a reason and notes for the next planner.

It sees the goal, the cycle's handoffs, the diff stat of what landed this cycle and, when the project has a check
command, its result at the start and at the end of the cycle (run in the sandbox, once per tip). Its notes are
kept free of repeated sentences (a small model loops on one until the length cap).

Its last notes are left out when the check failed at the cycle's start and passes now: they describe failures
that are gone (measured on the demo: the 1.5B judge said "continue" four cycles running after every test passed,
each time repeating its notes about a refused task from the first cycle).

A "done" is not taken while a task of the cycle failed and its work never landed: the session would report
success for work that is not on the branch. The cycle goes on (its planner sees the failed handoffs), and the
cycle budget still ends the session, as "stopped".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.errors import EndpointError, ModelError
from ..status import AgentStatus, Decision, Role
from .ask import ask
from .context import Handoff, check_command
from .progress import check_summary, dedupe_sentences
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
    command = check_command(ctx)
    check_exit, check_output = (None, "")
    start_check = end_check = ""
    start = None
    if command:
        start = ctx.checked(start_tip)
        check_exit, check_output = await ctx.tip_check() or (None, "")
        end_check = check_summary(check_exit, check_output)
        start_check = check_summary(*start) if start is not None else ""
    work = list(handoffs)
    now_passing = start is not None and start[0] not in (0, None) and check_exit == 0
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
        check_command=command,
        check_exit=check_exit,
        check_output=check_output[-CHECK_OUTPUT_CHARS:],
        start_check=start_check,
        end_check=end_check,
        previous_notes="" if now_passing else ctx.verdict_notes,
        now_passing=now_passing,
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
    verdict.notes = dedupe_sentences(verdict.notes)
    if not any(c.isalnum() for c in verdict.notes):  # the 1.5B judge's "notes": "," showed as "notes: ,"
        verdict.notes = ""
    verdict = _unless_work_failed(verdict, work)

    ctx.recorder.verdict(
        agent.id,
        cycle_id,
        number,
        decision=verdict.decision,
        reason=verdict.reason,
        notes=verdict.notes,
        check_output=check_output,
        check_exit=check_exit,
        start_exit=start[0] if start is not None else None,
    )
    state.end_agent(agent, status)
    return verdict


def _unless_work_failed(verdict: Verdict, work: list[Handoff]) -> Verdict:
    """``verdict``, or "continue" when it says done while tasks of the cycle failed without landing anything."""
    failed = [h.title for h in work if not h.done and not h.commit]
    if verdict.decision != Decision.DONE or not failed:
        return verdict
    titles = "; ".join(f"'{title[:80]}'" for title in failed[:3]) + (" …" if len(failed) > 3 else "")
    reason = f"not done: {len(failed)} task(s) failed and did not land ({titles}); the judge said: {verdict.reason}"
    return Verdict(decision="continue", reason=reason[:400], notes=verdict.notes)


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
