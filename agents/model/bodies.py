"""What a chat or fill-in-the-middle request sends, and how its reply is read: one place per wire format.

Why apart from the client: the client's job is the call's life (pool, slots, retries, record); the fields of
OpenAI's chat body and llama-server's own (``id_slot``, ``cache_prompt``, several samples of one prompt) are
read and tested here without a server.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from ..settings import ModelSettings

INFILL_PATH = "/infill"  # llama-server's fill-in-the-middle route, at the server's root (not under /v1)
INFILL_TOKENS = 300  # a stub's body; the stops below end it sooner
INFILL_STOPS = [
    "\ndef ",
    "\nclass ",
    "\n@",
    "\nif __name__",
]  # the body ended: the next top-level thing began

Texts = tuple[list[str], tuple[int, int]]
"""The replies' texts, and (prompt tokens, generated tokens) of the whole request."""


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
    n: int,
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
        if n > 1:
            body["n"] = n  # one prompt read once, sampled on n slots
        if slot is not None:
            body["id_slot"] = slot
    return body


def chat_texts(data: Any, n: int) -> Texts:
    """The choices' texts (at most ``n``) and the usage of a chat reply."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ValueError("reply has no choices")
    texts = [(c.get("message") or {}).get("content") or "" for c in choices if isinstance(c, dict)]
    usage = data.get("usage") or {}
    return texts[: max(1, n)], (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def infill_body(
    settings: ModelSettings,
    prefix: str,
    suffix: str,
    max_tokens: int,
    stop: list[str] | None,
    slot: int | None,
    n: int,
) -> dict[str, Any]:
    """llama-server's ``/infill`` request: the code between ``prefix`` and ``suffix``, ``n`` samples of it."""
    body: dict[str, Any] = {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "temperature": settings.temperature,
        "n_predict": max_tokens,
        "repeat_penalty": settings.repeat_penalty,
        "cache_prompt": True,
        "stop": [*INFILL_STOPS, *(stop or [])],
    }
    if n > 1:
        body["n_cmpl"] = n
    if slot is not None:
        body["id_slot"] = slot
    return body


def infill_texts(data: Any) -> tuple[Texts, dict[str, Any]]:
    """The drafts' texts and usage of an ``/infill`` reply (one object, or a list of them for ``n_cmpl``), and
    the first draft's object (its ``timings``)."""
    drafts = [d for d in (data if isinstance(data, list) else [data]) if isinstance(d, dict)]
    if not drafts:
        raise ValueError("reply has no content")
    evaluated = int(drafts[0].get("tokens_evaluated") or 0)
    predicted = sum(int(d.get("tokens_predicted") or 0) for d in drafts)
    return ([str(d.get("content") or "") for d in drafts], (evaluated, predicted)), drafts[0]


def format_reason(exc: ValidationError, content: str) -> str:
    """Why a reply is not JSON under its schema, in one line."""
    if not content.strip():
        return "empty reply"
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return "reply is not valid JSON"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in errors[:3]]
    return "reply breaks the schema: " + "; ".join(parts)
