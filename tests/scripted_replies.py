"""What the scripted model server answers with: replies from a responder or a script, the failures it can be told
to inject, and the helpers responders use to read a request (its schema name, its messages).

Why a module of its own: tests and benchmarks write responders against these without caring how the server
speaks HTTP (:mod:`tests.scripted_server`, which re-exports every name here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Body = dict[str, Any]
Reply = str | dict[str, Any]
Responder = Callable[[Body], Reply | Awaitable[Reply]]
FailurePolicy = Callable[[Body, int], "str | Failure | None"]

FAIL_MODES = frozenset(
    {"500", "429", "hang", "malformed_json", "truncated_stream", "400", "401", "404", "context"}
)
"""Injectable failures: transient ones (500, 429, hang, malformed_json, truncated_stream) and refusals that
retrying cannot fix, worded as llama-server words them (400, 401 a bad key, 404 an unknown model, ``context``:
a prompt longer than the server's context)."""
CONTEXT_MESSAGE = "the request exceeds the available context size, try increasing it"
DEFAULT_MODEL = "scripted-model"
REPO_ROOT = Path(__file__).resolve().parent.parent
_PARTIAL = "this reply is cut off before it ends"


class ScriptExhausted(RuntimeError):
    """A script ran out of replies; the server answers HTTP 500 and records the message in ``errors``."""


@dataclass(frozen=True)
class Failure:
    """One injected failure in ``mode`` (one of :data:`FAIL_MODES`).

    ``retry_after``: the 429 ``Retry-After`` seconds (None: the server's default). ``chunks``: content chunks a
    truncated stream sends before the connection is closed.
    """

    mode: str
    retry_after: float | None = None
    chunks: int = 2
    message: str = "injected failure"

    def __post_init__(self) -> None:
        if self.mode not in FAIL_MODES:
            raise ValueError(f"unknown failure mode {self.mode!r}; expected one of {sorted(FAIL_MODES)}")


def _as_failure(value: str | Failure | Mapping[str, Any] | None) -> Failure | None:
    if value is None or isinstance(value, Failure):
        return value
    return Failure(value) if isinstance(value, str) else Failure(**value)


class _Script:
    """Replies handed out in order; when exhausted, raise ScriptExhausted or repeat the last one."""

    def __init__(self, replies: Sequence[Reply], on_exhausted: str = "error", label: str = "script") -> None:
        if on_exhausted not in ("error", "repeat"):
            raise ValueError("on_exhausted must be 'error' or 'repeat'")
        if not replies:
            raise ValueError(f"{label} is empty")
        self.replies, self.on_exhausted, self.label, self.used = list(replies), on_exhausted, label, 0

    def __call__(self, body: Body) -> Reply:
        if self.used < len(self.replies):
            self.used += 1
            return self.replies[self.used - 1]
        if self.on_exhausted == "repeat":
            return self.replies[-1]
        raise ScriptExhausted(f"{self.label} exhausted: all {len(self.replies)} replies were already used")


# ---- helpers for responders ------------------------------------------------------------------------------------


def schema_name(body: Body) -> str | None:
    """The ``response_format.json_schema.name`` of a request (``plan``, ``action``, ``verdict``...), if any;
    ``infill`` for a fill-in-the-middle request."""
    if "input_prefix" in body:
        return "infill"
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("name")


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text, whether ``content`` is a string or a list of parts."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def last_user_text(body: Body) -> str:
    """The text of the last user message ('' if none)."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return message_text(users[-1]) if users else ""


def echo_responder(body: Body) -> str:
    """The default responder: echoes the last user message (or 'ok'), handy for smoke tests."""
    return last_user_text(body) or "ok"


def by_schema(
    routes: Mapping[str, Responder | Reply | Sequence[Reply]],
    default: Responder | Reply | None = None,
    on_exhausted: str = "error",
) -> Responder:
    """Route by JSON schema name; each route is a responder, a fixed reply, or a list of replies used in order.

    Requests without a known schema go to ``default``, or fail with KeyError (→ HTTP 500 and ``errors``).
    """

    def wrap(route: Any, label: str) -> Responder:
        if callable(route):
            return route
        if isinstance(route, str | dict):
            return lambda _body: route
        return _Script(route, on_exhausted, f"script for {label!r}")

    table = {name: wrap(route, name) for name, route in routes.items()}
    fallback = wrap(default, "default") if default is not None else None

    def respond(body: Body) -> Reply | Awaitable[Reply]:
        name = schema_name(body)
        handler = table.get(name or "") or fallback
        if handler is None:
            raise KeyError(f"no route for schema {name!r}; routes: {sorted(table)}")
        return handler(body)

    return respond


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


# ---- HTTP plumbing ---------------------------------------------------------------------------------------------
