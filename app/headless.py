"""Headless progress output: a line per notable event and a status line every few seconds, then a summary.

Another subscriber of the same engine events the TUI follows; it prints, it never decides anything.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .agents.session import events as ev
from .agents.session.engine import Engine, Outcome
from .store.sanitize import safe_text

STATUS_EVERY = 5.0


class ProgressPrinter:
    def __init__(self, engine: Engine, out: IO[str] | None = None, verbose: bool = False) -> None:
        self.engine = engine
        self.out = out or sys.stdout
        self.verbose = verbose
        self._last_status = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind, data = event["kind"], event["data"]
        line = None
        if kind == ev.SESSION_STARTED:
            line = f"session {event['session_id']} on {data['branch']} — sandbox: {data['sandbox']}"
        elif kind == ev.CYCLE_STARTED:
            line = f"cycle {data['number']} ({data['reason']})"
        elif kind == ev.PLAN:
            line = f"plan: {len(data['tasks'])} task(s), {len(data['subplanners'])} sub-planner(s)"
        elif kind == ev.COMMIT_LANDED:
            line = f"landed {str(data['integrated_sha'])[:10]} {data['title'][:60]}"
            if data.get("conflicts"):
                line += f" (resolved {data['conflicts']} conflict(s))"
        elif kind == ev.TASK_ENDED and data.get("status") == "failed":
            line = f"task failed: {data.get('error') or ''}"[:160]
        elif kind == ev.VERDICT:
            line = f"judge: {data['decision']} — {data['reason']}"[:200]
        elif kind == ev.CONTROL:
            line = f"control: {data['control']} ({data['source']})"
        elif kind in (ev.WARNING, ev.STATUS):
            line = data.get("message")
        elif kind == ev.AGENT_STEP and self.verbose:
            line = (
                f"  {event['agent_id'][-6:].lower()} #{data['step']} {data['action']} {data['target'][:60]}"
            )
        if line:
            self._print(line)
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY and kind in (ev.TASK_ENDED, ev.AGENT_STEP, ev.LLM_CALL):
            self._last_status = now
            self._print(self.status_line())

    def status_line(self) -> str:
        s = self.engine.snapshot()
        t = s["tasks"]
        paused = " PAUSED" if s["paused"] else ""
        return (
            f"[cycle {s['cycle']}{paused}] tasks pending {t.get('pending', 0)} running {t.get('running', 0)} "
            f"done {t.get('done', 0)} failed {t.get('failed', 0)} | commits {s['commits']} | "
            f"tokens {s['prompt_tokens']}/{s['completion_tokens']} | {s['elapsed']:.0f}s"
        )

    def summary(self, outcome: Outcome) -> None:
        self._print(self.status_line())
        reason = self.engine.writer.redact(outcome.reason) if self.engine.writer else outcome.reason
        self._print(f"session {self.engine.session_id} {outcome.status}: {reason}")

    def _print(self, line: str) -> None:
        """Every line passes here: redacted, then stripped of control characters (model, command and repository
        text is hostile: escape sequences could set the clipboard or the title, or hide what came before)."""
        if self.engine.writer is not None:
            line = self.engine.writer.redact(line)
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {safe_text(line)}", file=self.out, flush=True)
