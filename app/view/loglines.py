"""Plain-text lines for the log pane, rendered the same way from timeline events and from table rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..agents.session import events as ev
from ..agents.status import Role
from ..agents.tools.actions import action_target
from .formatting import tokens

OBSERVATION_LINES = 4
LINE_CHARS = 240


@dataclass(frozen=True, slots=True)
class LogChunk:
    """The lines one event adds to an agent's log; ``step`` and ``seq`` let a reload drop what it already shows."""

    seq: int
    step: int | None
    lines: tuple[str, ...]


def _clip(text: str, width: int = LINE_CHARS) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def target_of(arguments: Any) -> str:
    """The path or command an action was about, from its JSON arguments (as the worker recorded it)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return _clip(arguments, 80)
    return action_target(arguments) if isinstance(arguments, dict) else ""


def step_lines(
    step: int,
    action: str,
    target: str,
    observation: str | None,
    exit_code: int | None = None,
    error: str | None = None,
    max_lines: int = OBSERVATION_LINES,
) -> tuple[str, ...]:
    """One action as a head line and a few indented observation lines."""
    first_target = (target or "").splitlines()[0] if target else ""
    head = f"{step:>3} {action:<7} {first_target}"
    if exit_code is not None and exit_code != 0:
        head += f"  [exit {exit_code}]"
    lines = [_clip(head)]
    if error:
        lines.append(_clip(f"    ! {error}"))
    body = [ln for ln in (observation or "").splitlines() if ln.strip()]
    for ln in body[:max_lines]:
        lines.append(_clip(f"    │ {ln}"))
    if len(body) > max_lines:
        lines.append(f"    │ … {len(body) - max_lines} more lines")
    return tuple(lines)


def action_row_chunk(row: dict[str, Any]) -> LogChunk:
    """An ``actions`` row as log lines (the full observation is stored, so show a little more of it)."""
    return LogChunk(
        0,
        int(row["step"]),
        step_lines(
            int(row["step"]),
            row["name"],
            target_of(row.get("arguments")),
            row.get("observation"),
            row.get("exit_code"),
            max_lines=OBSERVATION_LINES + 2,
        ),
    )


def agent_header(agent: dict[str, Any], task_title: str | None) -> tuple[str, ...]:
    """The first line of an agent's log: who it is and what it works on."""
    who = agent["name"] if agent["name"] == agent["role"] else f"{agent['name']} · {agent['role']}"
    about = f" on “{task_title}”" if task_title else ""
    return (f"── {who} · {agent['model']}{about}",)


def ended_line(status: str, steps: Any, prompt: Any, completion: Any) -> str:
    return (
        f"── ended {status} after {steps or 0} steps, "
        f"{tokens(int(prompt or 0))} in / {tokens(int(completion or 0))} out"
    )


def event_chunk(event: ev.Event, role: str | None) -> LogChunk | None:
    """An event with an ``agent_id`` as log lines, or None when it adds nothing readable (a worker's model calls)."""
    seq = event.seq
    match event:
        case ev.AgentStep():
            lines = step_lines(
                event.step, event.action or "?", event.target, event.observation, event.exit_code,
                event.error,  # type: ignore[arg-type]
            )  # fmt: skip
            return LogChunk(seq, event.step, lines)
        case ev.AgentStarted():
            return LogChunk(seq, None, ("── started",))
        case ev.AgentEnded():
            line = ended_line(event.status, event.steps, event.prompt_tokens, event.completion_tokens)
            return LogChunk(seq, None, (line,))
        case ev.LlmCall():
            if event.error:
                return LogChunk(seq, None, (_clip(f"    ! model call failed: {event.error}"),))
            if role == Role.WORKER:
                return None
            return LogChunk(
                seq,
                None,
                (
                    f"    model: {event.prompt_tokens} in / {event.completion_tokens} out, "
                    f"{(event.latency_ms or 0) / 1000:.1f}s",
                ),
            )
        case ev.PlanMade():
            tasks, subs = len(event.tasks), len(event.subplanners)
            lines = [f"plan: {tasks} task{'s' * (tasks != 1)}, {subs} sub-planner{'s' * (subs != 1)}"]
            lines += [_clip(f"    task  {t}") for t in event.tasks]
            lines += [_clip(f"    sub   {s}") for s in event.subplanners]
            pad = [ln for ln in event.scratchpad.splitlines() if ln.strip()]
            lines += [_clip(f"    notes {ln}") for ln in pad[:OBSERVATION_LINES]]
            return LogChunk(seq, None, tuple(lines))
        case ev.CommitLanded():
            sha = str(event.integrated_sha or event.sha or "")[:10]
            retries = f", {event.retries} retries" if event.retries else ""
            return LogChunk(seq, None, (f"✔ landed {sha}{retries}",))
        case ev.GateDecided(verdict="refused"):
            lines = [_clip(f"⛔ gate refused: {event.reason}")]
            lines += [_clip(f"    {path}: {why}") for path, why in list(event.parse_errors.items())[:3]]
            lines += [_clip(f"    newly failing {name}") for name in event.new_failures[:3]]
            return LogChunk(seq, None, tuple(lines))
        case ev.GateDecided():
            spent = f" (check {event.check_ms / 1000:.1f}s)" if event.check_ms is not None else ""
            return LogChunk(seq, None, (_clip(f"✔ gate passed: {event.reason}{spent}"),))
        case ev.ConflictFound():
            paths = ", ".join(event.paths)
            shown = "?" if event.round is None else event.round
            return LogChunk(seq, None, (_clip(f"✘ conflict (round {shown}): {paths}"),))
        case ev.VerdictGiven():
            return LogChunk(seq, None, (_clip(f"verdict: {event.decision} — {event.reason}"),))
        case ev.WarningRaised():
            return LogChunk(seq, None, (_clip(f"! {event.message}"),))
        case ev.TaskStarted() | ev.TaskEnded() | ev.TaskCreated():
            return None
    return LogChunk(seq, None, (_clip(f"{ev.kind_of(event)}: {json.dumps(event.data(), default=str)}"),))
