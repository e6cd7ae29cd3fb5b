"""The record of model calls: one row per attempt, each storing only what is new in its agent's conversation.

Why lean: a worker's conversation grows by two messages a step, so storing every request whole cost ~12 KB per
call at 20 messages; a call stores the messages after the ones its agent's previous call already sent
(``parent_id``, ``kept``) and the whole conversation is rebuilt on reading (``formicary calls``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...store.db import new_id, now_ms
from ...store.packing import REPLY, Zipped

if TYPE_CHECKING:
    from ...store.writer import Writer

CONVERSATIONS_KEPT = 4096
"""Agents whose last recorded conversation the client remembers, to record only what is new at their next call;
the least recently used are forgotten (an agent that calls again after that records its whole conversation)."""


@dataclass
class CallTimings:
    """Where one call's time went: waiting for a slot here, and the server's own prompt/generation split."""

    queue_ms: float = 0.0
    prompt_ms: float | None = None
    predicted_ms: float | None = None
    cached_tokens: int | None = None
    slot: int | None = None

    def read(self, data: Any) -> None:
        """llama-server's ``timings`` (``prompt_ms``, ``predicted_ms``, ``cache_n``), when it sent them."""
        timings = data.get("timings") if isinstance(data, dict) else None
        if not isinstance(timings, dict):
            return
        for name, key in (("prompt_ms", "prompt_ms"), ("predicted_ms", "predicted_ms")):
            value = timings.get(key)
            if isinstance(value, int | float):
                setattr(self, name, float(value))
        cached = timings.get("cache_n")
        if isinstance(cached, int):
            self.cached_tokens = cached


class CallLog:
    """Writes call rows and tells listeners; remembers each agent's last conversation to record only the new."""

    def __init__(self, writer: Writer | None, session_id: str | None) -> None:
        self.writer = writer
        self.session_id = session_id
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        # agent id -> (its last recorded call, the messages that call sent): the lean record's base
        self._conversations: OrderedDict[str, tuple[str, list[dict[str, str]]]] = OrderedDict()

    def record(
        self,
        where: tuple[str, str],
        role: str,
        agent_id: str | None,
        schema_name: str,
        messages: list[dict[str, str]],
        content: str | None,
        usage: tuple[int, int],
        latency: float,
        attempt: int,
        error: str | None,
        timings: CallTimings | None = None,
    ) -> None:
        timings = timings or CallTimings()
        call_id = new_id()
        parent_id, kept = self._lean(agent_id, call_id, messages, content)
        row = {
            "id": call_id,
            "session_id": self.session_id,
            "agent_id": agent_id,
            "role": role,
            "model": where[1],
            "endpoint": where[0],
            "schema_name": schema_name,
            "parent_id": parent_id,
            "kept": kept,
            # a first request is mostly its role's system prompt: compressed against the role's first request
            "request": Zipped(
                json.dumps(messages[kept:], ensure_ascii=False),
                against=agent_id,
                shared=None if kept else f"request:{role}",
            ),
            "response": Zipped(
                content, remember=(agent_id, REPLY) if agent_id else None, shared=f"reply:{role}"
            )
            if content
            else content,
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "latency_ms": round(latency, 2),
            "attempts": attempt,
            "error": error,
            "queue_ms": round(timings.queue_ms, 2),
            "prompt_ms": timings.prompt_ms,
            "predicted_ms": timings.predicted_ms,
            "cached_tokens": timings.cached_tokens,
            "slot": timings.slot,
            "created_at": now_ms(),
        }
        if self.writer is not None:
            self.writer.insert("llm_calls", row)
        for listener in self.listeners:
            listener(row)

    def _lean(
        self, agent_id: str | None, call_id: str, messages: list[dict[str, str]], content: str | None
    ) -> tuple[str | None, int]:
        """(the agent's previous call, how many of its messages this call's conversation starts with).

        Only the rest is recorded: a worker's conversation grows by two messages a step, so a call stores those
        two instead of all twenty. The previous call's reply, as the assistant message that follows its
        conversation, counts as one more message of it (``kept`` may exceed that conversation by one). A
        trimmed conversation shares a shorter prefix and records more; the first call of an agent, or one the
        client has forgotten, records everything (``kept`` 0, no parent).
        """
        if self.writer is None or agent_id is None:
            return None, 0
        conversations = self._conversations
        previous = conversations.pop(agent_id, None)
        sent = list(messages)
        if content:
            sent.append({"role": "assistant", "content": content})
        conversations[agent_id] = (call_id, sent)
        if len(conversations) > CONVERSATIONS_KEPT:
            conversations.popitem(last=False)
        if previous is None:
            return None, 0
        parent_id, sent = previous
        kept, n = 0, min(len(sent), len(messages))
        while kept < n and (sent[kept] is messages[kept] or sent[kept] == messages[kept]):
            kept += 1
        return parent_id, kept
