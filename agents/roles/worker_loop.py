"""One worker's step loop: ask for an action, run it confined to the worktree, observe, repeat.

The model answers under the ``action`` schema with one action per turn; a malformed reply becomes an error
observation and the loop goes on. What keeps a small model productive lives here: reads of what the prompt
already holds are answered from it, each edit runs the task's tests by itself, the worker finishes by itself when
its failing tests pass, an edit that fails without progress is drawn again from the same prompt (resample.py),
and a looping worker starts over (restart.py). Step and token limits, or the same action four times in a row
once fresh starts are spent, end a runaway worker with :class:`WorkerLimit`.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import TYPE_CHECKING, Any

import anyio

from ..model.errors import ReplyFormatError
from ..status import Role
from ..tools.actions import (
    EDIT_ACTIONS,
    SCHEMA_NAME,
    ActionContext,
    FormatError,
    action_target,
    execute,
    parse_action,
    reply_schema,
)
from ..tools.incomplete import finish_refused, tests_missing, unwritten
from ..tools.parse_gate import parse_problems, parseable
from ..tools.targeted import CheckRun, check_after_edit, related_tests
from . import resample
from .answers import WrongValues, learn_from, undo_patch
from .ask import ask_once
from .briefing import (
    PASSED_HINT,
    PAST_END,
    REPEAT_NUDGE,
    SAME_GOOD_EDIT,
    Briefing,
    Seen,
    already_shown_nudge,
    conflict_message,
    done_before_nudge,
    fit_context,
    line_count,
    past_end_nudge,
    prepare,
    read_text,
    regex_hint,
    test_edit_refusal,
)
from .context import Agent, Task, check_command
from .progress import failing_before, no_new_failure, only_old_failures
from .render import render
from .restart import Attempts

if TYPE_CHECKING:
    from ..git.gate import Refusal
    from ..git.integration import Conflict
    from ..git.workspace import Worktree
    from .context import RoleContext

CHARS_PER_TOKEN = 3.5
MAP_MAX_AGE = 5.0  # seconds the repository map a worker starts with may lag the shared tip (Engine.repo_map)
REPEAT_HEAT = 0.3  # temperature added per identical action in a row
# Identical actions in a row past the first that end the worker (after its fresh starts, the 1.5B model sent one
# write_file 12 times in a row, ~45 s a call, holding a slot until its step limit).
STUCK_REPEATS = 3
# Finishes refused for a function its task names still a stub (the next one fails the task) or for its test not
# written (the next one is taken).
FINISH_REFUSALS = 2
CHECK_TIMEOUT = 120.0
REPEATABLE = frozenset({"read_file", "list_files", "search", "replace"})
"""Actions whose result cannot change while nothing is edited (a failed replace included)."""
REGEX_ESCAPE = re.compile(r"\\[()\[\].*+?|{}]")
PROSE = (".md", ".txt", ".rst")


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
        self.brief = Briefing()
        self.python = True  # the task may touch Python files (set in start): write_function is offered
        self.seen = Seen()
        self.check = (check_command(ctx) or task.check or "").strip()  # the gate's, not the planner's guess
        self.last_check: CheckRun | None = None
        self.broke_nothing = False  # the last check failed only on old tests that are not the task's
        self.first_check: CheckRun | None = None
        self.attempts = Attempts()
        self.wrong = WrongValues()  # what its failing tests showed its code returning (answers.py)
        self.first_prompt = ""
        self.edits = 0
        self.edit_failed = False  # the last edit was refused for its code or failed the task's tests
        self.redraws_left = self.limits.redraws_per_worker
        self.unwritten: list[str] = []  # functions its task names, still stubs in its files (incomplete.py)
        self.finish_refusals = 0
        # action -> (step, observation, edits)
        self._history: dict[tuple[str, str], tuple[int, str, int]] = {}

    async def start(self) -> None:
        root = self.ctx.real_root
        task = self.task
        self.brief = await anyio.to_thread.run_sync(
            lambda: prepare(root, task.title, task.instructions, list(task.files))
        )
        self.first_check = await self._starting_check()
        self.python = not task.files or any(f.endswith((".py", ".pyi")) for f in task.files)
        self.messages = render(
            "worker",
            self.context.settings.prompt_override("worker"),
            title=task.title,
            instructions=task.instructions,
            files=task.files,
            check=self.check,
            names=sorted(self.brief.names),
            file_contents=[{"path": f.path, "text": f.text, "whole": f.whole} for f in self.brief.files],
            test_contents=[{"path": f.path, "text": f.text, "whole": f.whole} for f in self.brief.tests],
            helpers=self.brief.helpers,
            test_paths=self.brief.test_paths,
            first_check=self.first_check.summary() if self.first_check is not None else "",
            repo_map=await self.context.repo_map(max_age=MAP_MAX_AGE),
            max_steps=self.limits.steps_per_worker,
            python=self.python,
        )
        self.first_prompt = self.messages[1]["content"]
        self._remember_shown()

    def _remember_shown(self) -> None:
        for shown in [*self.brief.files, *self.brief.tests]:
            if shown.whole:
                self.seen.remember(shown.path, shown.file_text or shown.text, self.messages[1])

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

    def _sampling(self) -> Any:
        settings = self.settings
        heat = self._repeats + self.attempts.restarts
        if heat:  # shake a looping model loose: a little more randomness per repeat and per fresh start
            settings = settings.model_copy(
                update={"temperature": min(1.0, settings.temperature + REPEAT_HEAT * heat)}
            )
        return settings

    async def step(self) -> dict[str, Any] | None:
        self.agent.steps += 1
        step = self.agent.steps
        fit_context(
            self.messages, (self.settings.context_length - self.settings.max_tokens) * CHARS_PER_TOKEN
        )
        settings = self._sampling()
        try:
            reply = await ask_once(
                self.context,
                self.agent,
                Role.WORKER,
                self.messages,
                SCHEMA_NAME,
                reply_schema(self.python),
                settings,
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
        if resample.wanted(self, action):
            return await resample.edit(self, settings, content, action, step)
        return await self.act(content, action, step)

    async def act(self, content: str, action: Any, step: int) -> dict[str, Any] | None:
        """Do one parsed action and observe it; the finish arguments when it is ``finish``."""
        self.edit_failed = False
        if action.name == "finish":
            self.unwritten = await self.stubs_left()
            untested = tests_missing(self.task.files, list(self.attempts.originals), self.brief.adds)
            if (self.unwritten or untested) and self.finish_refusals < FINISH_REFUSALS:
                self.finish_refusals += 1
                why = finish_refused(self.unwritten) if self.unwritten else untested
                self._observe(content, why, step, "finish", action.arguments(), None, 0.0, error=True)
                return None
            if self.unwritten:
                raise WorkerLimit(f"finished with {', '.join(self.unwritten[:3])} still without code")
            self.finish_args = action.arguments()
            self._record(step, "finish", self.finish_args, "finished", None, 0.0, error=False)
            self.messages.append({"role": "assistant", "content": content})
            return self.finish_args
        signature = (action.name, json.dumps(action.arguments(), sort_keys=True))
        if action.name in EDIT_ACTIONS and signature == self._previous and not self.attempts.failed:
            self._observe(
                content, SAME_GOOD_EDIT, step, action.name, action.arguments(), None, 0.0, error=True
            )
            return None  # nothing failed yet: starting over would only undo good edits
        if action.name in EDIT_ACTIONS and signature == self._previous and self.attempts.can_restart():
            self._record(step, action.name, action.arguments(), "the same edit again: starting over", None, 0.0,
                         error=True)  # fmt: skip
            await self.restart()
            return None
        reads = action.name == "read_file"  # only a read can be answered from the conversation
        free = await anyio.to_thread.run_sync(self._from_context, action) if reads else None
        free = free or self._done_before(action)
        if free is not None:  # answered from the conversation: no step spent
            self.agent.steps -= 1
            self._observe(content, free, step, action.name, action.arguments(), None, 0.0, error=False)
            return None
        if action.name in EDIT_ACTIONS and (
            refusal := test_edit_refusal(self.ctx.real_root, action.path, list(self.task.files))
        ):
            self.edit_failed = True  # drawn again when redraws are left, like an edit refused for its code
            self._observe(content, refusal, step, action.name, action.arguments(), None, 0.0, error=True)
            return None
        started = time.perf_counter()
        if action.name in EDIT_ACTIONS:
            keep = bool(self.wrong.values)  # the file as it was, to undo an edit that patches them in
            await anyio.to_thread.run_sync(self.attempts.before_edit, self.ctx.real_root, action.path, keep)
        observation = await execute(action, self.ctx)
        elapsed = (time.perf_counter() - started) * 1000
        # Redacted before it goes anywhere: the next prompt, the record, the operator's screen (`cat .env`).
        text = self.context.recorder.redact(observation.text)
        if action.name == "read_file" and observation.error and PAST_END.search(text):
            self.seen.past_end_again(action.path)
        before = self.last_check or self.first_check
        if action.name in EDIT_ACTIONS and not observation.error:
            text += await self.after_edit(action)
            fixed = self.last_check is not None and self.last_check.fixed_since(self.first_check)
            if fixed and not self.unwritten:
                self._observe(content, text, step, action.name, action.arguments(),
                              observation.exit_code, elapsed, error=False)  # fmt: skip
                return self.auto_finish(step)
        if action.name == "replace" and observation.error and REGEX_ESCAPE.search(action.search):
            text += regex_hint(str(action.path))
        looping = action.name in EDIT_ACTIONS and _unchanged(observation)
        self.edit_failed = action.name in EDIT_ACTIONS and (
            (observation.error and action.name != "replace")  # a replace's search needs feedback, not luck
            or (
                not observation.error
                and self.last_check is not None
                and not self.last_check.better_than(before)
                and not self.broke_nothing
            )
        )
        if action.name in EDIT_ACTIONS and observation.error:
            self.attempts.failed_try(action, text.strip().split("\n")[0][:200])
        if looping and self.attempts.failed and self.attempts.can_restart():  # else its edits are good
            self._record(step, action.name, action.arguments(), text, observation.exit_code, elapsed,
                         error=observation.error)  # fmt: skip
            await self.restart()
            return None
        if signature == self._previous:  # small models loop; say so instead of letting it spin
            text += REPEAT_NUDGE
            self._repeats += 1
            if self._repeats >= STUCK_REPEATS:
                self._observe(content, text, step, action.name, action.arguments(), None, elapsed, error=True)
                raise WorkerLimit(f"stuck: the same {action.name} {self._repeats + 1} times in a row")
        else:
            self._repeats = 0
        self._previous = signature
        if action.name in REPEATABLE:
            self._history.setdefault(signature, (step, text, self.edits))
        self._observe(content, text, step, action.name, action.arguments(), observation.exit_code, elapsed,
                      error=observation.error)  # fmt: skip
        if action.name == "write_file" and not observation.error:
            self.seen.remember(action.path, action.content, self.messages[-2])
        elif action.name == "read_file" and _whole_read(action, observation.error, text):
            current = await anyio.to_thread.run_sync(read_text, self.ctx.real_root, action.path)
            if current is not None:
                self.seen.remember(action.path, current, self.messages[-1])
        return None

    async def _starting_check(self) -> CheckRun | None:
        """The task's own tests before any edit (targeted to its functions), when it has them: shown in the
        first prompt, and what lets the worker finish by itself once they pass."""
        if not self.check or not self.brief.test_paths or not self.brief.names:
            return None
        return await self._task_check()

    async def _task_check(self) -> CheckRun | None:
        """The check narrowed to the task's tests and functions (targeted.py); a failing run's wrong values
        are learnt."""
        root, tests, ctx = self.ctx.real_root, self.brief.test_paths, self.ctx
        run = await check_after_edit(self.check, root, tests, self.brief.names, ctx.options, CHECK_TIMEOUT,
                                     ctx.secret_env_names)  # fmt: skip
        if run is not None and not run.passed:
            await anyio.to_thread.run_sync(learn_from, run.output, self.wrong, root, tests)
        return run

    def _baseline(self) -> str | None:
        """The check's output before any edit: the task's own tests, else the whole check on the task's base."""
        if self.first_check is not None:
            return self.first_check.output
        known = self.context.checked(self.wt.base) if self.wt.base else None
        return known[1] if known is not None else None

    def _broke_nothing(self, run: CheckRun) -> bool:
        """Only old failures not about its functions; never with failing tests of its own (they are its task)."""
        return self.first_check is None and only_old_failures(run.output, self._baseline(), self.brief.names)

    def auto_finish(self, step: int) -> dict[str, Any]:
        """Finish without a model call: the task's tests went from failing to passing (the landing gate still
        runs the whole check). Measured: the finish call was a third of a one-function task's model calls."""
        self.finish_args = {
            "summary": f"the task's tests went from failing to passing (`{self.last_check.command}`)",
            "notes": "",
        }
        self._record(step, "finish", {**self.finish_args, "auto": True}, "finished by itself", None, 0.0,
                     error=False)  # fmt: skip
        return self.finish_args

    def _done_before(self, action: Any) -> str | None:
        """The answer to an action already taken with nothing edited since (None: do it). Measured: a worker
        alternated a failing ``replace`` and the same ``read_file`` until its step limit, nothing changed."""
        if action.name not in REPEATABLE or self.seen.free_left <= 0:
            return None
        signature = (action.name, json.dumps(action.arguments(), sort_keys=True))
        before = self._history.get(signature)
        if before is None or before[2] != self.edits:
            return None
        self.seen.free_left -= 1
        step, text, _ = before
        return done_before_nudge(step, text)

    def _from_context(self, action: Any) -> str | None:
        """The nudge for a read of what the conversation already holds (None: do the read)."""
        if action.name != "read_file" or self.seen.free_left <= 0:
            return None
        root = self.ctx.real_root
        if self.seen.in_context(root, action.path, self.messages):
            where = "shown in your task" if self.messages[1] is self._holder(action.path) else "above"
            self.seen.free_left -= 1
            return already_shown_nudge(action.path, where)
        lines = line_count(root, action.path) if action.start > 1 else None  # from the top: not past the end
        if lines is not None and action.start > lines and self.seen.past_end_again(action.path):
            self.seen.free_left -= 1
            return past_end_nudge(action.path)
        return None

    def _holder(self, path: str) -> dict[str, str] | None:
        held = self.seen._whole.get(os.path.normpath(path))
        return held[1] if held else None

    async def after_edit(self, action: Any) -> str:
        """Run the check after an edit (targeted to the task's tests); the text added to the observation."""
        self.edits += 1
        root = self.ctx.real_root
        if action.name != "write_file":
            self.seen.forget(action.path)
        if action.name != "write_function" and parseable(action.path):  # write_function parses what it writes
            path = action.path
            text = await anyio.to_thread.run_sync(read_text, root, path)
            broken = (await parse_problems({path: text})).get(path) if text is not None else None
            if broken:  # measured: a new test file that did not parse was followed by "the tests pass now"
                self.last_check = None
                self.attempts.failed_try(action, broken)
                return (
                    f"\n\nERROR: {path} does not parse now ({broken}); the landing gate refuses it. Fix it."
                )
        last, path = self.attempts.last, action.path  # last: only when there are wrong values to look for
        if last and (undone := await anyio.to_thread.run_sync(undo_patch, root, path, last, self.wrong)):
            self.last_check = None
            self.attempts.failed_try(action, "wrote the tests' wrong values into the code")
            return undone
        if not self.check:
            return ""
        if not self.brief.test_paths and action.path.lower().endswith(PROSE):
            return ""  # no test reads prose: the whole check would only cost time
        if action.name == "write_function":  # what it writes is what its task is about
            self.brief.names.add(action.function.rsplit(".", 1)[-1])
        if not self.brief.test_paths:  # the planner named no files: find the tests of what was edited
            names = set(self.brief.names)
            self.brief.test_paths = await anyio.to_thread.run_sync(
                lambda: related_tests(root, [action.path], names)
            )
        came = await self.context.git.catch_up(self.wt, self.attempts.originals)
        run = await self._task_check()
        if run is None:
            return ""
        self.last_check = run
        clean = self.broke_nothing = not run.passed and self._broke_nothing(run)
        if not run.passed and not clean:
            self.attempts.failed_try(action, run.summary())
        more = f" and {len(came) - 4} more" if len(came) > 4 else ""
        note = f"\n(Your copy now has what other workers landed meanwhile: {', '.join(came[:4])}{more}.)"
        if clean:  # the old failures' tracebacks only pull a small model towards them
            return "\n\n" + no_new_failure(run.command, run.output) + (note if came else "")
        old = "" if run.passed else failing_before(run.output, self._baseline())
        self.unwritten = await self.stubs_left() if run.passed else []
        hint = (finish_refused(self.unwritten) if self.unwritten else PASSED_HINT) if run.passed else ""
        return "\n\n" + run.observation() + old + hint + (note if came else "")

    async def stubs_left(self) -> list[str]:
        paths = [p for p in (*self.task.files, *self.attempts.originals) if p.endswith(".py")]
        names = self.brief.names | self.brief.adds
        if not paths or not names:
            return []
        return await anyio.to_thread.run_sync(unwritten, self.ctx.real_root, paths, names)

    async def restart(self) -> None:
        """Start the task over: edits undone, the first prompt plus what failed (see restart.py)."""
        await anyio.to_thread.run_sync(self.attempts.undo, self.ctx.real_root)
        self.attempts.restarts += 1
        self.messages = [
            self.messages[0],
            {"role": "user", "content": self.first_prompt + self.attempts.note()},
        ]
        self.seen = Seen()
        self._remember_shown()
        self._history.clear()
        self._previous, self._repeats = None, 0
        self.last_check = None
        self.edits += 1  # what was read before the restart may have changed
        self.context.recorder.status(
            f"{self.agent.name} started its task again after repeating itself"
            f" ({len(self.attempts.failed)} failed tries)"
        )

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

    def _observe(self, content: str, text: str, step: int, name: str, args: dict[str, Any], exit_code: int | None,
                 duration_ms: float, *, error: bool) -> None:  # fmt: skip
        self._record(step, name, args, text, exit_code, duration_ms, error=error)
        self.messages.append({"role": "assistant", "content": content})
        self.messages.append({"role": "user", "content": f"OBSERVATION (step {step}, {name}):\n{text}"})

    def _record(self, step: int, name: str, args: dict[str, Any], text: str, exit_code: int | None,
                duration_ms: float, *, error: bool) -> None:  # fmt: skip
        target = action_target(args)
        self.agent.last_action = f"{name} {target[:60]}".strip()
        self.context.recorder.action(self.agent, self.task.id, step, name, args, text, exit_code, duration_ms,
                                     target=target, error=error)  # fmt: skip


def _unchanged(observation: Any) -> bool:
    return observation.error and "has the same code as the one in the file" in observation.text


def _whole_read(action: Any, error: bool, text: str) -> bool:
    return not error and action.start <= 1 and action.end <= 0 and "[... cut at" not in text
