"""Plain-text lines for the log pane, rendered the same way from timeline events and from table rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
    """The path or command an action was about, from its JSON arguments."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return _clip(arguments, 80)
    if not isinstance(arguments, dict):
        return ""
    for key in ("path", "command", "cmd", "file", "pattern", "query"):
        value = arguments.get(key)
        if isinstance(value, str) and value:
            return value
    for value in arguments.values():
        if isinstance(value, str) and value:
            return value
    return ""


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


def _fmt_tokens(n: int) -> str:
    return f"{n / 1_000_000:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def ended_line(status: str, steps: Any, prompt: Any, completion: Any) -> str:
    return (
        f"── ended {status} after {steps or 0} steps, "
        f"{_fmt_tokens(int(prompt or 0))} in / {_fmt_tokens(int(completion or 0))} out"
    )


def event_chunk(event: dict[str, Any], role: str | None) -> LogChunk | None:
    """An event with an ``agent_id`` as log lines, or None when it adds nothing readable (a worker's model calls)."""
    kind, d, seq = event["kind"], event["data"] or {}, int(event["seq"])
    if kind == "agent_step":
        step = int(d.get("step") or 0)
        lines = step_lines(
            step, str(d.get("action") or "?"), str(d.get("target") or ""), d.get("observation"),
            d.get("exit_code"), d.get("error"),
        )  # fmt: skip
        return LogChunk(seq, step, lines)
    if kind == "agent_started":
        return LogChunk(seq, None, ("── started",))
    if kind == "agent_ended":
        line = ended_line(
            str(d.get("status")), d.get("steps"), d.get("prompt_tokens"), d.get("completion_tokens")
        )
        return LogChunk(seq, None, (line,))
    if kind == "llm_call":
        if d.get("error"):
            return LogChunk(seq, None, (_clip(f"    ! model call failed: {d['error']}"),))
        if role == "worker":
            return None
        return LogChunk(
            seq,
            None,
            (
                f"    model: {d.get('prompt_tokens') or 0} in / {d.get('completion_tokens') or 0} out, "
                f"{(d.get('latency_ms') or 0) / 1000:.1f}s",
            ),
        )
    if kind == "plan":
        tasks, subs = list(d.get("tasks") or []), list(d.get("subplanners") or [])
        lines = [f"plan: {len(tasks)} tasks, {len(subs)} sub-planners"]
        lines += [_clip(f"    task  {t}") for t in tasks]
        lines += [_clip(f"    sub   {s}") for s in subs]
        pad = [ln for ln in str(d.get("scratchpad") or "").splitlines() if ln.strip()]
        lines += [_clip(f"    notes {ln}") for ln in pad[:OBSERVATION_LINES]]
        return LogChunk(seq, None, tuple(lines))
    if kind == "commit_landed":
        sha = str(d.get("integrated_sha") or d.get("sha") or "")[:10]
        retries = f", {d['retries']} retries" if d.get("retries") else ""
        return LogChunk(seq, None, (f"✔ landed {sha}{retries}",))
    if kind == "conflict":
        paths = ", ".join(d.get("paths") or [])
        return LogChunk(seq, None, (_clip(f"✘ conflict (round {d.get('round', '?')}): {paths}"),))
    if kind == "verdict":
        return LogChunk(seq, None, (_clip(f"verdict: {d.get('decision')} — {d.get('reason', '')}"),))
    if kind == "warning":
        return LogChunk(seq, None, (_clip(f"! {d.get('message', '')}"),))
    if kind in ("task_started", "task_ended", "task_created"):
        return None
    return LogChunk(seq, None, (_clip(f"{kind}: {json.dumps(d, default=str)}"),))
