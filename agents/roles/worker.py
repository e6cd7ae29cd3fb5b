"""Workers: one task each, end to end, in their own worktree, knowing nothing of other workers.

The loop is ``observe(execute(ask()))``: the model answers under the ``action`` schema with one action per turn,
the action runs confined to the worktree (commands sandboxed), and its observation becomes the next message. A
malformed reply becomes an error observation and the loop goes on; step and token limits end a runaway worker.
On ``finish`` the work is committed and integrated; a conflict comes back to this same worker as an observation
and it resolves it with the same actions, then finishes again.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio

from ..model.errors import EndpointError, ModelError, ReplyFormatError
from ..status import AgentStatus, Role, TaskStatus
from ..tools import confine
from ..tools.actions import (
    SCHEMA_NAME,
    ActionContext,
    FormatError,
    action_target,
    execute,
    parse_action,
    reply_schema,
)
from .ask import ask_once
from .context import Agent, Handoff, Task
from .render import render

if TYPE_CHECKING:
    from ..git.gate import Refusal
    from ..git.integration import Conflict
    from ..git.workspace import Worktree
    from .context import RoleContext

CHARS_PER_TOKEN = 3.5
PRELOAD_FILES = 3
MAP_MAX_AGE = 5.0  # seconds the repository map a worker starts with may lag the shared tip (Engine.repo_map)
PRELOAD_CHARS = 6000
REPEAT_HEAT = 0.3  # temperature added per identical action in a row
REPEAT_NUDGE = (
    "\nNOTE: this action is exactly the same as your previous one, so it changed nothing. Do the next thing:"
    " write the file, run the check, or finish."
)


class WorkerLimit(Exception):
    """A budget ended the worker; the message says which."""


class WorkerLoop:
    def __init__(self, ctx: RoleContext, agent: Agent, task: Task, wt: Worktree) -> None:
        self.context = ctx
        self.agent = agent
        self.task = task
        self.wt = wt
        self.settings = ctx.settings.role("worker")
        self.limits = ctx.settings.limits
        self.ctx = ActionContext(
            root=wt.path,
            sandbox=ctx.settings.sandbox,
            secret_env_names=frozenset(ctx.settings.secret_env_names()),
        )
        self.messages: list[dict[str, str]] = []
        self.finish_args: dict[str, Any] = {}
        self._previous: tuple[str, str] | None = None
        self._repeats = 0

    async def start(self) -> None:
        self.messages = render(
            "worker",
            self.context.settings.prompt_override("worker"),
            title=self.task.title,
            instructions=self.task.instructions,
            files=self.task.files,
            check=self.task.check,
            file_contents=await anyio.to_thread.run_sync(self._expected_files),
            repo_map=await self.context.repo_map(max_age=MAP_MAX_AGE),
            max_steps=self.limits.steps_per_worker,
        )

    def _expected_files(self) -> list[dict[str, str]]:
        """The current text of the files the planner expects to change: saves a small model a read each."""
        shown, budget = [], PRELOAD_CHARS
        for path in self.task.files[:PRELOAD_FILES]:
            try:
                real, _shown = confine.resolve(str(self.wt.path), path)
                with open(real, "rb") as fh:
                    text = fh.read(budget + 1).decode("utf-8")
            except (confine.ActionFailed, OSError, UnicodeDecodeError):
                continue
            if len(text) < budget:
                shown.append({"path": path, "text": text})
                budget -= len(text)
        return shown

    async def until_finish(self) -> dict[str, Any]:
        """Step until the model finishes; raise :class:`WorkerLimit` when a budget runs out."""
        while True:
            if self.agent.steps >= self.limits.steps_per_worker:
                raise WorkerLimit(f"step limit reached ({self.limits.steps_per_worker} steps)")
            if self.agent.prompt_tokens + self.agent.completion_tokens >= self.limits.tokens_per_worker:
                raise WorkerLimit(f"token limit reached ({self.limits.tokens_per_worker} tokens)")
            done = await self.step()
            if done is not None:
                return done

    async def step(self) -> dict[str, Any] | None:
        self.agent.steps += 1
        step = self.agent.steps
        self._trim()
        try:
            settings = self.settings
            if self._repeats:  # shake a looping model loose: a little more randomness per repeat
                settings = settings.model_copy(
                    update={"temperature": min(1.0, settings.temperature + REPEAT_HEAT * self._repeats)}
                )
            reply = await ask_once(
                self.context, self.agent, Role.WORKER, self.messages, SCHEMA_NAME, reply_schema(), settings
            )
            content = reply.content
            action = reply.data.action
        except ReplyFormatError as exc:
            content = exc.content
            try:  # the action parser says more precisely what to fix than the schema check
                parse_action(content)
                detail = exc.reason
            except FormatError as format_error:
                detail = format_error.observation
            self._observe(content, f"ERROR: {detail}", step, "invalid", {}, None, 0.0, error=True)
            return None
        if action.name == "finish":
            self.finish_args = action.arguments()
            self._record(step, "finish", self.finish_args, "finished", None, 0.0, error=False)
            self.messages.append({"role": "assistant", "content": content})
            return self.finish_args
        started = time.perf_counter()
        observation = await execute(action, self.ctx)
        elapsed = (time.perf_counter() - started) * 1000
        # Redacted before it goes anywhere: the next prompt, the record, the operator's screen (`cat .env`).
        text = self.context.recorder.redact(observation.text)
        signature = (action.name, json.dumps(action.arguments(), sort_keys=True))
        if signature == self._previous:  # small models loop; say so instead of letting it spin
            text += REPEAT_NUDGE
            self._repeats += 1
        else:
            self._repeats = 0
        self._previous = signature
        self._observe(
            content,
            text,
            step,
            action.name,
            action.arguments(),
            observation.exit_code,
            elapsed,
            error=observation.error,
        )
        return None

    async def resolve_conflict(self, conflict: Conflict) -> bool:
        """Integration found a conflict with work that landed meanwhile: this worker resolves it."""
        self.context.recorder.conflict(
            self.agent.id, self.task.id, list(conflict.paths), getattr(conflict, "round", None)
        )
        message = self.context.recorder.redact(conflict_message(conflict))
        self.messages.append({"role": "user", "content": message})
        try:
            await self.until_finish()
        except WorkerLimit:
            return False
        return True

    async def fix_refusal(self, refusal: Refusal) -> bool:
        """The landing gate refused this worker's work (merged with the shared branch): it fixes it here."""
        self.messages.append({"role": "user", "content": refusal.message()})
        try:
            await self.until_finish()
        except WorkerLimit:
            return False
        return True

    # -- helpers -----------------------------------------------------------------------------------

    def _observe(
        self,
        content: str,
        text: str,
        step: int,
        name: str,
        args: dict[str, Any],
        exit_code: int | None,
        duration_ms: float,
        *,
        error: bool,
    ) -> None:
        self._record(step, name, args, text, exit_code, duration_ms, error=error)
        self.messages.append({"role": "assistant", "content": content})
        self.messages.append({"role": "user", "content": f"OBSERVATION (step {step}, {name}):\n{text}"})

    def _record(
        self,
        step: int,
        name: str,
        args: dict[str, Any],
        text: str,
        exit_code: int | None,
        duration_ms: float,
        *,
        error: bool,
    ) -> None:
        target = action_target(args)
        self.agent.last_action = f"{name} {target[:60]}".strip()
        self.context.recorder.action(
            self.agent,
            self.task.id,
            step,
            name,
            args,
            text,
            exit_code,
            duration_ms,
            target=target,
            error=error,
        )

    def _trim(self) -> None:
        """Keep the conversation inside the context window: drop the oldest steps, keep the task."""
        budget = (self.settings.context_length - self.settings.max_tokens) * CHARS_PER_TOKEN
        total = sum(len(m["content"]) for m in self.messages)
        dropped = 0
        while total > budget and len(self.messages) > 4:
            removed = self.messages.pop(2)
            total -= len(removed["content"])
            dropped += 1
        if dropped:
            note = "[older steps omitted to fit the context window]"
            if not self.messages[2]["content"].startswith(note):
                self.messages.insert(2, {"role": "user", "content": note})


def conflict_message(conflict: Conflict) -> str:
    parts = [
        "CONFLICT: your change conflicts with work other agents landed meanwhile on the shared branch.",
        "The files below now hold both sides with conflict markers (<<<<<<< ======= >>>>>>>).",
        "Rewrite each file so it keeps both intentions and has no markers left, then finish again.",
    ]
    for path in conflict.paths:
        parts.append(f"- {path}")
    for file in conflict.files[:3]:
        shown = file.merged if file.merged is not None else "(deleted on one side)"
        parts.append(f"\n{file.path} now reads:\n{shown[:3000]}")
    return "\n".join(parts)


async def run_worker(ctx: RoleContext, task: Task) -> Handoff | None:
    """Own ``task`` end to end. Returns the handoff, or None when the task should be retried."""
    state = ctx.ledger
    agent = state.start_agent(Role.WORKER, task, ctx.settings.role(Role.WORKER).model, task.cycle_id)
    state.start_task(task)
    limits = ctx.settings.limits
    try:
        async with ctx.git.worktree(task.id, agent.id) as wt:
            loop = WorkerLoop(ctx, agent, task, wt)
            await loop.start()
            limit_hit = None
            try:
                finish = await loop.until_finish()
            except WorkerLimit as exc:  # what it wrote lands only if it passes the gate; kept on its branch
                limit_hit = str(exc)
                finish = {
                    "summary": f"ended by the {limit_hit} before finishing",
                    "notes": "unfinished: check this work",
                }
            summary = str(finish.get("summary") or "").strip() or "(no summary)"
            notes = str(finish.get("notes") or "").strip()
            sha = await ctx.git.commit(wt, f"{task.title}\n\n{summary[:2000]}")
            if sha is None and limit_hit:
                raise WorkerLimit(limit_hit)
            if sha is None:
                handoff = Handoff(task.id, task.title, TaskStatus.DONE, f"{summary} (no changes)", notes)
            else:
                result = await ctx.git.integrate(
                    wt,
                    loop.resolve_conflict,
                    writer=ctx.recorder.writer,
                    max_conflict_rounds=limits.conflict_rounds,
                    gate=ctx.gate,
                    on_refusal=None if limit_hit else loop.fix_refusal,
                    max_gate_rounds=limits.gate_rounds,
                )
                if result.status == "empty":
                    handoff = Handoff(task.id, task.title, TaskStatus.DONE, f"{summary} (no changes)", notes)
                elif result.status != "integrated":
                    unfinished = f"unfinished ({limit_hit}); " if limit_hit else ""
                    raise WorkerLimit(
                        f"{unfinished}integration failed: {result.error or 'conflicts unresolved'}; "
                        f"work kept on {wt.branch}"
                    )
                else:
                    state.landed(
                        agent,
                        task,
                        sha=sha,
                        integrated_sha=result.sha,
                        retries=result.retries,
                        conflicts=result.conflicts,
                        refusals=result.refusals,
                        gate_ms=round(result.gate_ms, 1),
                    )
                    handoff = Handoff(task.id, task.title, TaskStatus.DONE, summary, notes, commit=result.sha)
    except EndpointError:
        raise  # retrying cannot fix it: the session ends with one line
    except (ModelError, WorkerLimit) as exc:
        reason = exc.reason if isinstance(exc, ModelError) else str(exc)
        state.end_agent(agent, AgentStatus.FAILED)
        if task.attempts < limits.task_attempts and isinstance(exc, ModelError):
            state.requeue_task(task, reason)
            return None
        handoff = Handoff(task.id, task.title, TaskStatus.FAILED, f"failed: {reason}")
        state.end_task(task, TaskStatus.FAILED, error=reason, handoff=handoff)
        return handoff
    state.end_task(task, TaskStatus.DONE, handoff=handoff)
    state.end_agent(agent, AgentStatus.DONE)
    return handoff
