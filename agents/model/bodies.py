"""What a chat or fill-in-the-middle request sends, and how its reply is read: one place per wire format.

Why apart from the client: the client's job is the call's life (pool, slots, retries, record); the fields of
OpenAI's chat body and llama-server's own (``id_slot``, ``cache_prompt``) are read and tested here without a
server.

One reply per request, always. llama-server can sample one prompt several times on free slots (``n`` /
``n_cmpl``), and formicary used that for candidate edits and drafts; in 3 of 12 effectiveness runs such a request
never answered: the asking slot and its child slot both sat without a token until the server stopped (3-5 min of
an 8-minute budget, a worker gone, two of four slots held). Extra samples are now drawn one request at a time on
the agent's own slot, whose cached prompt makes each cost generation only.

A draft sent to llama-server's ``/infill`` could wait minutes before it started: the server batches only tasks of
one type together, and ``/infill`` is not the type of the chat calls around it. Drafts are therefore plain
completions of a fill-in-the-middle prompt (:mod:`.fim`); a draft still has its own timeout
(:data:`INFILL_TIMEOUT`) and no retry.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from ..settings import ModelSettings

COMPLETION_PATH = "/completion"  # llama-server's own completion route, at the server's root (not under /v1)
INFILL_TOKENS = 300  # a stub's body; the stops below end it sooner
INFILL_TIMEOUT = 240.0
"""Seconds a draft may take, whatever the role's timeout: a cold 2,000-token draft took up to ~120 s on a busy
2-core machine; a draft given up costs one draft, not the rest of the run."""
INFILL_STOPS = [
    "\ndef ",
    "\nclass ",
    "\n@",
    "\nif __name__",
]  # the body ended: the next top-level thing began

Text = tuple[str, tuple[int, int]]
"""A reply's text, and (prompt tokens, generated tokens)."""


@lru_cache(maxsize=64)
def response_format(name: str, schema: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` for ``schema``, built once (``model_json_schema`` is costly per call)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema.model_json_schema(), "strict": True},
    }


def chat_body(
    settings: ModelSettings,
    model: str,
    messages: list[dict[str, str]],
    fmt: dict[str, Any],
    slot: int | None,
) -> dict[str, Any]:
    """An OpenAI chat request; llama-server's own fields only for llama-server (others may reject them)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "response_format": fmt,
    }
    if settings.is_llama_cpp:
        body["repeat_penalty"] = settings.repeat_penalty
        body["cache_prompt"] = True
        if slot is not None:
            body["id_slot"] = slot
    return body


def chat_text(data: Any) -> Text:
    """The first choice's text and the usage of a chat reply."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ValueError("reply has no choices")
    usage = data.get("usage") or {}
    content = (choices[0].get("message") or {}).get("content") or ""
    return content, (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def infill_text(data: Any) -> tuple[Text, dict[str, Any]]:
    """The draft's text and usage of a ``/completion`` reply (an object; a list's first), and the object
    itself (its ``timings``)."""
    draft = data[0] if isinstance(data, list) and data else data
    if not isinstance(draft, dict):
        raise ValueError("reply has no content")
    usage = (int(draft.get("tokens_evaluated") or 0), int(draft.get("tokens_predicted") or 0))
    return (str(draft.get("content") or ""), usage), draft


def format_reason(exc: ValidationError, content: str) -> str:
    """Why a reply is not JSON under its schema, in one line."""
    if not content.strip():
        return "empty reply"
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return "reply is not valid JSON"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in errors[:3]]
    return "reply breaks the schema: " + "; ".join(parts)
