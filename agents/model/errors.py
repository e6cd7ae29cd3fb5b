"""What a failed model call means: retry it, wait for the endpoint, or end the session with one line.

The client sorts every failure into a :class:`Failure` kind. Retrying cannot fix a request the endpoint refuses
(400/401/403/404/413/422, a context too small for the prompts): that is an :class:`EndpointError`, raised at once,
which ends the session with one line naming the role, the endpoint and the reason. An endpoint that cannot be
reached is waited for (up to the role's ``outage_limit``); anything else is retried with backoff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

FATAL_STATUSES = frozenset({400, 401, 403, 404, 413, 422})
"""HTTP statuses that say the request or its credentials are wrong: the same request fails again."""
BUSY_STATUSES = frozenset({429, 503})
"""The endpoint is up but asks us to slow down (llama-server answers 503 while it loads the model)."""
_CONTEXT_WORDS = re.compile(
    r"context (length|size|window)|exceeds? the (available )?context|too many tokens", re.I
)
_REFUSED_NAMES = frozenset({"ConnectError", "ConnectionRefusedError"})
"""Nothing listens there (a connection broken mid-reply is transient instead: the next one may work)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class ModelError(Exception):
    """A model call that failed after its retries; ``reason`` is one line for the log and the task record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplyFormatError(ModelError):
    """The endpoint answered, but not with JSON under the schema; ``content`` is what it said."""

    def __init__(self, reason: str, content: str) -> None:
        super().__init__(reason)
        self.content = content


class EndpointError(ModelError):
    """A failure that retrying cannot fix: the session ends, and :attr:`line` says why in one line."""

    def __init__(self, reason: str, *, role: str, endpoint: str) -> None:
        super().__init__(reason)
        self.role = role
        self.endpoint = endpoint

    @property
    def line(self) -> str:
        return f"the {self.role} model endpoint {self.endpoint} failed: {self.reason}"


class Kind(StrEnum):
    FATAL = "fatal"
    """Retrying cannot help (see :data:`FATAL_STATUSES`)."""
    DOWN = "down"
    """Nothing answered (connection refused or reset): wait for the endpoint to come back."""
    BUSY = "busy"
    """429/503: back off, lower the endpoint's concurrency."""
    TRANSIENT = "transient"
    """5xx, timeouts, broken replies: retry with backoff."""


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    reason: str
    """One line, for the record and the operator."""
    retry_after: float | None = None
    """Seconds the server asked us to wait (``Retry-After``), at most 120."""


def one_line(text: str, limit: int = 200) -> str:
    """``text`` without control characters or line breaks, cut at ``limit`` characters."""
    text = _CONTROL.sub(" ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(exc: BaseException) -> str:
    """What the server said about the error: the ``error.message`` of its JSON body, or the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(body.get("error"), dict):
            message = message or body["error"].get("message")
        if isinstance(message, str) and message:
            return one_line(message)
    text = str(exc)
    for prefix in ("litellm.", "Error code: "):  # litellm and the SDK prefix their own words
        if text.startswith(prefix):
            text = text.split(" - ", 1)[-1] if prefix == "Error code: " else text.split(": ", 1)[-1]
    return one_line(text)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    header = headers.get("retry-after") if headers is not None else None
    if not header:
        return None
    try:
        return min(max(float(header), 0.0), 120.0)
    except ValueError:
        return None


def _refused(exc: BaseException) -> BaseException | None:
    """The connection-refused error in ``exc``'s chain of causes (SDKs wrap it), if any."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        if type(current).__name__ in _REFUSED_NAMES:
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def classify(exc: BaseException, model: str = "") -> Failure:
    """Sort one failed call: what kind it is and a one-line reason naming the status and the server's words."""
    name = type(exc).__name__
    if "Timeout" in name:
        return Failure(Kind.TRANSIENT, f"timed out ({name})")
    refused = _refused(exc)
    if refused is not None:
        return Failure(Kind.DOWN, f"cannot connect ({type(refused).__name__}: {one_line(str(refused), 120)})")
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        message = one_line(str(exc))
        return Failure(Kind.TRANSIENT, f"{name}: {message}" if message else name)
    said = _server_message(exc)
    if status in FATAL_STATUSES:
        return Failure(Kind.FATAL, _fatal_reason(status, said, model))
    if status in BUSY_STATUSES:
        return Failure(Kind.BUSY, f"HTTP {status}: {said}", _retry_after(exc))
    return Failure(Kind.TRANSIENT, f"HTTP {status}: {said}", _retry_after(exc))


def _fatal_reason(status: int, said: str, model: str) -> str:
    if _CONTEXT_WORDS.search(said):
        return (
            f"HTTP {status}, the context is too small for the prompts ({said}); lower context_length or start "
            "the server with a larger context"
        )
    if status in (401, 403):
        return f"HTTP {status}, the endpoint refused the key ({said}); check api_key_env"
    if status == 404:
        return f"HTTP 404, model {model!r} or the URL is not served there ({said}); check model and base_url"
    return f"HTTP {status}, the endpoint refused the request ({said})"


def find_endpoint_error(exc: BaseException | None) -> EndpointError | None:
    """The first :class:`EndpointError` in ``exc``, looking inside (nested) exception groups."""
    if exc is None:
        return None
    if isinstance(exc, EndpointError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_endpoint_error(inner)
            if found is not None:
                return found
    return None
