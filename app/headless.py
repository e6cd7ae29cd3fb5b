"""Headless progress output: a line per notable event and a status line every few seconds, then a summary.

Another subscriber of the same engine events the TUI follows; it prints, it never decides anything.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from .agents.session import events as ev
from .agents.session.engine import Engine, Outcome
from .agents.status import TaskStatus
from .store.sanitize import safe_text

STATUS_EVERY = 5.0


class ProgressPrinter:
    def __init__(self, engine: Engine, out: IO[str] | None = None, verbose: bool = False) -> None:
        self.engine = engine
        self.out = out or sys.stdout
        self.verbose = verbose
        self._last_status = 0.0

    def __call__(self, event: ev.Event) -> None:
        line = None
        match event:
            case ev.SessionStarted():
                line = f"session {event.session_id} on {event.branch} — sandbox: {event.sandbox}"
                line += f" — check: {event.check or 'none'}"
            case ev.CycleStarted():
                line = f"cycle {event.number} ({event.reason})"
            case ev.PlanMade():
                line = f"plan: {len(event.tasks)} task(s), {len(event.subplanners)} sub-planner(s)"
            case ev.CommitLanded():
                line = f"landed {str(event.integrated_sha)[:10]} {event.title[:60]}"
                if event.conflicts:
                    line += f" (resolved {event.conflicts} conflict(s))"
                if event.refusals:
                    line += f" (fixed after {event.refusals} gate refusal(s))"
            case ev.GateDecided(verdict="refused"):
                line = f"gate refused {(event.task_id or '')[-6:].lower()}: {event.reason}"[:200]
            case ev.TaskEnded(status=TaskStatus.FAILED):
                line = f"task failed: {event.error or ''}"[:160]
            case ev.VerdictGiven():
                line = f"judge: {event.decision} — {event.reason}"[:200]
            case ev.ControlApplied():
                line = f"control: {event.control} ({event.source})"
            case ev.WarningRaised() | ev.StatusChanged():
                line = event.message
            case ev.AgentStep() if self.verbose:
                line = f"  {(event.agent_id or '')[-6:].lower()} #{event.step} {event.action} {event.target[:60]}"
        if line:
            self._print(line)
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY and isinstance(
            event, ev.TaskEnded | ev.AgentStep | ev.LlmCall
        ):
            self._last_status = now
            self._print(self.status_line())

    def status_line(self) -> str:
        s = self.engine.snapshot()
        t = s.tasks
        paused = " PAUSED" if s.paused else ""
        return (
            f"[cycle {s.cycle}{paused}] tasks pending {t.get(TaskStatus.PENDING, 0)} "
            f"running {t.get(TaskStatus.RUNNING, 0)} done {t.get(TaskStatus.DONE, 0)} "
            f"failed {t.get(TaskStatus.FAILED, 0)} | commits {s.commits} | "
            f"tokens {s.prompt_tokens}/{s.completion_tokens} | {s.elapsed:.0f}s"
        )

    def summary(self, outcome: Outcome) -> None:
        """The last status line, then the end-of-session summary from the record (how every run ends)."""
        from .summary import summary_text

        self._print(self.status_line())
        gate = self.engine.gate
        if gate is not None:
            self._print(
                f"gate: {gate.passes} passed, {gate.refusals} refused, {gate.check_runs} check run(s) "
                f"({gate.check_ms / 1000:.1f} s), {gate.total_ms / 1000:.1f} s gating in all"
            )
        text = summary_text(self.engine.db_path, self.engine.session_id)
        if text:
            print(text, file=self.out, flush=True)
        else:
            reason = self.engine.writer.redact(outcome.reason) if self.engine.writer else outcome.reason
            self._print(f"session {self.engine.session_id} {outcome.status}: {reason}")

    def _print(self, line: str) -> None:
        """Every line passes here: redacted, then stripped of control characters (model, command and repository
        text is hostile: escape sequences could set the clipboard or the title, or hide what came before)."""
        if self.engine.writer is not None:
            line = self.engine.writer.redact(line)
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {safe_text(line)}", file=self.out, flush=True)
