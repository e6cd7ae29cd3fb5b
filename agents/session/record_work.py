"""The rows and events of the agents' work: steps, model calls, plans, landings, gate decisions, verdicts.

Half of :class:`~.record.Record` (the other half records the session's structure: sessions, cycles, tasks,
agents). A worker's ``actions`` row and a model call's ``llm_calls`` row are their own events in the timeline
(the ``events`` view): those are announced to the in-process listeners only (``emit(..., stored=True)``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ...store.db import new_id, now, now_ms
from ...store.packing import OBSERVATION, Zipped
from . import events as ev

if TYPE_CHECKING:
    from ...store.writer import Writer
    from ..roles.context import Agent


class WorkRecord(ABC):
    """Records what agents do; :class:`~.record.Record` provides the writer, the session and ``emit``."""

    writer: Writer
    session_id: str

    @abstractmethod
    def emit(self, event: ev.Event, *, stored: bool = False) -> None:
        """Put ``event`` on the timeline (``stored``: its row is already written)."""

    def action(
        self,
        agent: Agent,
        task_id: str,
        step: int,
        name: str,
        args: dict[str, Any],
        text: str,
        exit_code: int | None,
        duration_ms: float,
        *,
        target: str,
        error: bool,
    ) -> None:
        """One worker step: the ``actions`` row, which is also its ``agent_step`` event in the timeline."""
        self.writer.insert(
            "actions",
            {
                "session_id": self.session_id,
                "agent_id": agent.id,
                "task_id": task_id,
                "step": step,
                "name": name,
                # compressed against the reply that chose it; the observation is what the next request repeats
                "arguments": Zipped(json.dumps(args, ensure_ascii=False), against=agent.id),
                # against the first observation of its action (a file read's line-number gutter, a listing's
                # layout): the shared dictionary needs no context, so the context is rebuilt from rows alone
                # (the step and action: the next request's message names them, and is rebuilt from this row)
                "observation": Zipped(
                    text, remember=(agent.id, OBSERVATION), shared=f"observation:{name}", step=(step, name)
                ),
                "exit_code": exit_code,
                "duration_ms": round(duration_ms, 2),
                "created_at": now_ms(),
                "target": target[:200] or None,
                "error": 1 if error else None,
            },
        )
        self.emit(
            ev.AgentStep(
                agent_id=agent.id,
                task_id=task_id,
                step=step,
                action=name,
                target=target[:200],
                observation=text[:300],
                exit_code=exit_code,
                error=error,
            ),
            stored=True,
        )

    def llm_call(self, row: dict[str, Any], prompt_tokens: int, completion_tokens: int) -> None:
        """The event for a model call whose row the client wrote."""
        self.emit(
            ev.LlmCall(
                agent_id=row.get("agent_id"),
                role=row["role"],
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=row.get("latency_ms"),
                error=row.get("error"),
                endpoint=row.get("endpoint"),
            ),
            stored=True,
        )

    def plan(
        self, agent_id: str, task_id: str, *, tasks: list[str], subplanners: list[str], scratchpad: str
    ) -> None:
        self.emit(
            ev.PlanMade(
                agent_id=agent_id,
                task_id=task_id,
                tasks=tasks,
                subplanners=subplanners,
                scratchpad=scratchpad[:500],
            )
        )

    def conflict(self, agent_id: str, task_id: str, paths: list[str], round: int | None) -> None:
        self.emit(ev.ConflictFound(agent_id=agent_id, task_id=task_id, paths=paths, round=round))

    def commit_landed(
        self,
        agent_id: str,
        task_id: str,
        *,
        sha: str,
        integrated_sha: str | None,
        retries: int,
        conflicts: int,
        title: str,
        refusals: int = 0,
        gate_ms: float = 0.0,
    ) -> None:
        """The event for a commit on the shared branch (integration wrote its ``commits`` row)."""
        self.emit(
            ev.CommitLanded(
                agent_id=agent_id,
                task_id=task_id,
                sha=sha,
                integrated_sha=integrated_sha,
                retries=retries,
                conflicts=conflicts,
                refusals=refusals,
                gate_ms=gate_ms,
                title=title,
            )
        )

    def gate(self, verdict: Any, agent_id: str, task_id: str) -> None:
        """One landing-gate decision (a :class:`~formicary.agents.git.gate.GateVerdict`): its row and event."""
        kind = "passed" if verdict.ok else "refused"
        check, tip_check = verdict.check, verdict.tip_check
        self.writer.insert(
            "gates",
            {
                "id": new_id(),
                "session_id": self.session_id,
                "task_id": task_id,
                "agent_id": agent_id,
                "verdict": kind,
                "reason": verdict.reason,
                "tip": verdict.tip,
                "tree": verdict.tree,
                "new_failures": verdict.new_failures or None,
                "parse_errors": verdict.parse_errors or None,
                "check_exit": check.exit_code if check else None,
                "tip_exit": tip_check.exit_code if tip_check else None,
                "check_ms": round(check.duration_ms, 1) if check else None,
                "tip_check_ms": round(tip_check.duration_ms, 1)
                if verdict.tip_check_ran and tip_check
                else None,
                "duration_ms": round(verdict.duration_ms, 1),
                "output": check.output[-2000:] if check and not check.ok else None,
                "created_at": now(),
            },
        )
        self.emit(
            ev.GateDecided(
                agent_id=agent_id,
                task_id=task_id,
                verdict=kind,
                reason=verdict.reason[:300],
                new_failures=verdict.new_failures[:20],
                parse_errors=dict(list(verdict.parse_errors.items())[:10]),
                check_ms=round(check.duration_ms, 1) if check else None,
                duration_ms=round(verdict.duration_ms, 1),
            )
        )

    def verdict(
        self,
        agent_id: str,
        cycle_id: str,
        number: int,
        *,
        decision: str,
        reason: str,
        notes: str,
        check_output: str,
        check_exit: int | None,
        start_exit: int | None = None,
    ) -> None:
        self.writer.insert(
            "verdicts",
            {
                "id": new_id(),
                "session_id": self.session_id,
                "cycle_id": cycle_id,
                "decision": decision,
                "reason": reason,
                "notes": notes,
                "check_output": check_output or None,
                "created_at": now(),
            },
        )
        self.emit(
            ev.VerdictGiven(
                agent_id=agent_id,
                cycle_id=cycle_id,
                number=number,
                decision=decision,
                reason=reason,
                notes=notes[:1000],
                check_exit=check_exit,
                start_exit=start_exit,
            )
        )
