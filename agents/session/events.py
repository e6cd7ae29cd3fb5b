"""The events every UI follows: one dataclass per kind, stored as rows of the ``events`` table.

An event is written as ``kind`` plus a JSON ``data`` dict of its fields (the row layout the record has always
had, so old records still read) and published in-process as the same dataclass. Readers turn rows back into
events with :func:`from_row`; a kind this version does not know becomes :class:`Unknown`, a missing field its
default, an unexpected one is ignored. Consumers ``match`` on the classes instead of comparing strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

_KINDS: dict[str, type[Event]] = {}


@dataclass(slots=True, kw_only=True)
class Event:
    """The envelope every event shares; the payload fields are the subclass's own."""

    kind: ClassVar[str] = ""
    _payload: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(field name, stored key) of each payload field."""
    _optional: ClassVar[frozenset[str]] = frozenset()
    """Payload fields left out of the stored data while None (as they always were)."""

    agent_id: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    seq: int = 0
    """The row's position in the timeline (0 until it is read back from the store)."""
    created_at: str = ""

    def data(self) -> dict[str, Any]:
        """The stored ``data`` dict: the payload fields under their stored keys."""
        out = {}
        for name, key in self._payload:
            value = getattr(self, name)
            if value is None and name in self._optional:
                continue
            out[key] = value
        return out

    def redacted(self, redact: Callable[[str], str]) -> Event:
        """A copy whose text fields went through ``redact`` (what in-process listeners are shown)."""
        changes = {}
        for name, _key in self._payload:
            value = getattr(self, name)
            if isinstance(value, str):
                clean = redact(value)
                if clean is not value:
                    changes[name] = clean
        return replace(self, **changes) if changes else self


def _payload_of(cls: type[Event]) -> tuple[tuple[str, str], ...]:
    base = {f.name for f in fields(Event)}
    return tuple((f.name, f.metadata.get("key", f.name)) for f in fields(cls) if f.name not in base)


def _event(kind: str, optional: tuple[str, ...] = ()) -> Callable[[type[Event]], type[Event]]:
    """Declare an event class: its kind, and its payload fields computed once (writing is on the hot path)."""

    def wrap(cls: type[Event]) -> type[Event]:
        cls = dataclass(slots=True, kw_only=True)(cls)
        cls.kind = kind
        cls._payload = _payload_of(cls)
        cls._optional = frozenset(optional)
        _KINDS[kind] = cls
        return cls

    return wrap


@_event("session_started")
class SessionStarted(Event):
    goal: str = ""
    repo: str = ""
    branch: str = ""
    workers: int | None = None
    sandbox: str | None = None
    check: str | None = None
    """The landing gate's check, described (``CheckSpec.describe``)."""
    resumed: bool = False


@_event("session_ended")
class SessionEnded(Event):
    status: str = "done"
    """A :class:`~formicary.agents.status.SessionStatus`."""
    reason: str | None = None
    commits: int = 0
    tokens: int = 0


@_event("cycle_started")
class CycleStarted(Event):
    cycle_id: str = ""
    number: int = 0
    reason: str = ""
    """A :class:`~formicary.agents.status.CycleReason`."""


@_event("cycle_ended")
class CycleEnded(Event):
    cycle_id: str = ""
    number: int = 0
    status: str = ""
    """A :class:`~formicary.agents.status.CycleStatus`."""


@_event("task_created")
class TaskCreated(Event):
    title: str = ""
    task_kind: str = field(default="", metadata={"key": "kind"})
    """A :class:`~formicary.agents.status.TaskKind` (stored as ``kind``)."""
    parent_id: str | None = None
    depth: int = 0
    cycle_id: str = ""


@_event("task_started")
class TaskStarted(Event):
    title: str = ""
    task_kind: str = field(default="", metadata={"key": "kind"})
    """A :class:`~formicary.agents.status.TaskKind` (stored as ``kind``)."""
    attempt: int = 0


@_event("task_ended")
class TaskEnded(Event):
    status: str = ""
    """A :class:`~formicary.agents.status.TaskStatus` (``requeued`` when it goes back for another attempt)."""
    error: str | None = None
    summary: str | None = None


@_event("agent_started")
class AgentStarted(Event):
    role: str = ""
    name: str = ""
    model: str = ""


@_event("agent_step")
class AgentStep(Event):
    step: int = 0
    action: str = ""
    target: str = ""
    """The path or command the action was about (first 200 characters)."""
    observation: str = ""
    """The first 300 characters of what the action returned; the ``actions`` row keeps all of it."""
    exit_code: int | None = None
    error: bool | str | None = None


@_event("agent_ended")
class AgentEnded(Event):
    status: str = ""
    """An :class:`~formicary.agents.status.AgentStatus`."""
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@_event("llm_call", optional=("endpoint",))
class LlmCall(Event):
    role: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    error: str | None = None
    endpoint: str | None = None
    """The server of the role's pool that took the call."""


@_event("plan")
class PlanMade(Event):
    tasks: list[str] = field(default_factory=list)
    """Titles of the tasks for workers."""
    subplanners: list[str] = field(default_factory=list)
    scratchpad: str = ""
    """The first 500 characters of the rewritten scratchpad."""


@_event("commit_landed")
class CommitLanded(Event):
    sha: str = ""
    integrated_sha: str | None = None
    retries: int = 0
    conflicts: int = 0
    refusals: int = 0
    """Landing-gate refusals the worker fixed before this landed."""
    gate_ms: float = 0.0
    """Time the landing gate took for this task (all rounds)."""
    title: str = ""


@_event("conflict")
class ConflictFound(Event):
    paths: list[str] = field(default_factory=list)
    round: int | None = None


@_event("gate")
class GateDecided(Event):
    """The landing gate's decision on one landing attempt (trivial passes are not events)."""

    verdict: str = ""
    """passed | refused"""
    reason: str = ""
    new_failures: list[str] = field(default_factory=list)
    parse_errors: dict[str, str] = field(default_factory=dict)
    check_ms: float | None = None
    duration_ms: float = 0.0


@_event("verdict")
class VerdictGiven(Event):
    cycle_id: str = ""
    number: int = 0
    decision: str = ""
    """A :class:`~formicary.agents.status.Decision`."""
    reason: str = ""
    notes: str = ""
    check_exit: int | None = None
    start_exit: int | None = None
    """The check's exit status on the tip the cycle started from, when it was known."""


@_event("control", optional=("text", "replace_goal", "n"))
class ControlApplied(Event):
    control: str = ""
    """A :class:`~formicary.agents.status.Control`."""
    source: str = "api"
    text: str | None = None
    replace_goal: bool | None = None
    n: int | None = None


@_event("status", optional=("paused", "workers", "message"))
class StatusChanged(Event):
    """Engine state worth showing (a message, or a change of pause or workers)."""

    paused: bool | None = None
    workers: int | None = None
    message: str | None = None


@_event("warning")
class WarningRaised(Event):
    message: str = ""


@dataclass(slots=True, kw_only=True)
class Unknown(Event):
    """A kind this version does not know (a newer record): shown raw, never an error."""

    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return dict(self.raw)


def _keys(cls: type[Event]) -> dict[str, str]:
    """Stored key → field name, for reading rows back."""
    return {key: name for name, key in cls._payload}


_KEYS: dict[str, dict[str, str]] = {kind: _keys(cls) for kind, cls in _KINDS.items()}


def from_row(row: dict[str, Any]) -> Event:
    """An ``events`` row (``data`` as a dict or its JSON text) as its typed event."""
    data = row.get("data") or {}
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            data = {}
    if not isinstance(data, dict):
        data = {}
    envelope = {
        "agent_id": row.get("agent_id"),
        "task_id": row.get("task_id"),
        "session_id": row.get("session_id"),
        "seq": int(row.get("seq") or 0),
        "created_at": row.get("created_at") or "",
    }
    kind = row.get("kind") or ""
    cls = _KINDS.get(kind)
    if cls is None:
        return Unknown(name=kind, raw=data, **envelope)
    keys = _KEYS[kind]
    values = {keys[k]: v for k, v in data.items() if k in keys and v is not None}
    return cls(**values, **envelope)


def kind_of(event: Event) -> str:
    return event.name if isinstance(event, Unknown) else event.kind
