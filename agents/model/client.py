"""One async model call for every role: chat messages in, a reply under a named JSON schema out.

OpenAI-compatible endpoints (llama-server, Ollama, vLLM, LM Studio) are posted to over aiohttp
(:mod:`.http`: ~0.45 ms CPU per call, where the openai SDK's request path cost ~2.9 ms at hundreds in flight). Other providers go through litellm, imported only when a role
is configured with ``api = "litellm"``. Every endpoint has one concurrency cap shared by all agents, lowered
adaptively when the endpoint answers 429; failures are retried with exponential backoff and full jitter that honour
``Retry-After``; every attempt is recorded in the store.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ValidationError

from ...store.db import new_id, now
from ...store.packing import Zipped
from ..jsontext import extract_json
from .errors import EndpointError, Kind, ModelError, ReplyFormatError, classify
from .http import ChatEndpoint

__all__ = ["EndpointError", "ModelClient", "ModelError", "Reply", "ReplyFormatError"]

if TYPE_CHECKING:
    from ...store.writer import Writer
    from ..settings import ModelSettings

MAX_BACKOFF = 30.0
CONVERSATIONS_KEPT = 4096
"""Agents whose last recorded conversation the client remembers, to record only what is new at their next call;
the least recently used are forgotten (an agent that calls again after that records its whole conversation)."""
NO_ENDPOINT = "no endpoint: set model.base_url, or run `formicary model setup` for the local model"


@dataclass
class Reply:
    data: BaseModel
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int


class AdaptiveLimiter:
    """A per-endpoint cap that halves on a 429 storm and creeps back up after successes (AIMD)."""

    def __init__(self, limit: int) -> None:
        self.ceiling = limit
        self._limiter = anyio.CapacityLimiter(limit)
        self._successes = 0
        self._last_cut = 0.0

    @property
    def limit(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def in_flight(self) -> int:
        return self._limiter.borrowed_tokens

    async def __aenter__(self) -> None:
        await self._limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._limiter.release()

    def throttled(self) -> None:
        now_ = time.monotonic()
        if now_ - self._last_cut > 1.0 and self.limit > 1:  # one cut per burst, not per rejected call
            self._limiter.total_tokens = max(1, self.limit // 2)
            self._last_cut = now_
        self._successes = 0

    def succeeded(self) -> None:
        self._successes += 1
        if self.limit < self.ceiling and self._successes >= self.limit * 4:
            self._limiter.total_tokens = self.limit + 1
            self._successes = 0


@lru_cache(maxsize=64)
def response_format(name: str, schema: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` for ``schema``, built once (``model_json_schema`` is costly per call)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema.model_json_schema(), "strict": True},
    }


class ModelClient:
    """Shared by every agent of a session; owns endpoint clients, caps and the pause gate."""

    def __init__(
        self,
        writer: Writer | None = None,
        session_id: str | None = None,
        *,
        embedded_base_url: str | None = None,
    ) -> None:
        self.writer = writer
        self.session_id = session_id
        self.embedded_base_url = embedded_base_url
        # (endpoint, key) -> its HTTP session
        self._clients: dict[tuple[str, str], ChatEndpoint] = {}
        self._limiters: dict[str, AdaptiveLimiter] = {}
        self._paused = False
        self._resumed: anyio.Event | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.calls = 0
        self.in_flight = 0
        # agent id -> (its last recorded call, the messages that call sent): the lean record's base
        self._conversations: OrderedDict[str, tuple[str, list[dict[str, str]]]] = OrderedDict()

    # -- control -----------------------------------------------------------------------------------

    def pause(self) -> None:
        """No new call starts until :meth:`resume`; calls in flight finish."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    @property
    def paused(self) -> bool:
        return self._paused

    async def wait_running(self) -> None:
        """Return at once unless paused; otherwise when resumed."""
        while self._paused:
            if self._resumed is None:
                self._resumed = anyio.Event()
            await self._resumed.wait()

    def limiter(self, settings: ModelSettings) -> AdaptiveLimiter:
        key = self._base_url(settings) or settings.endpoint
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = AdaptiveLimiter(settings.max_concurrency)
        return limiter

    # -- the call ----------------------------------------------------------------------------------

    async def complete(
        self,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        schema_name: str,
        schema: type[BaseModel],
        *,
        role: str,
        agent_id: str | None = None,
    ) -> Reply:
        """Ask ``settings``' endpoint for one reply under ``schema``; retry transient failures.

        Raises:
            ReplyFormatError: the reply was not JSON under the schema (not retried: the caller decides).
            EndpointError: the endpoint refused the request in a way retrying cannot fix (the session ends).
            ModelError: the endpoint kept failing past ``settings.retries``.
        """
        if settings.api == "openai" and not self._base_url(settings):
            raise EndpointError(NO_ENDPOINT, role=role, endpoint="embedded")
        limiter = self.limiter(settings)
        fmt = response_format(schema_name, schema)
        attempt = 0
        while True:
            attempt += 1
            await self.wait_running()
            started = time.perf_counter()
            content, usage, failure = "", (0, 0), None
            async with limiter:
                self.in_flight += 1
                try:
                    content, usage = await self._call(settings, messages, fmt)
                except EndpointError:
                    raise
                except Exception as exc:  # classified below; every failure is recorded
                    failure = classify(exc, settings.model)
                    if failure.kind is Kind.BUSY:
                        limiter.throttled()
                finally:
                    self.in_flight -= 1
            latency = (time.perf_counter() - started) * 1000
            self.calls += 1
            if failure is None:
                limiter.succeeded()
                try:
                    data = schema.model_validate_json(extract_json(content))
                except ValidationError as exc:
                    reason = _format_reason(exc, content)
                    self._record(
                        settings,
                        role,
                        agent_id,
                        schema_name,
                        messages,
                        content,
                        usage,
                        latency,
                        attempt,
                        reason,
                    )
                    raise ReplyFormatError(reason, content) from None
                self._record(
                    settings, role, agent_id, schema_name, messages, content, usage, latency, attempt, None
                )
                return Reply(data, content, usage[0], usage[1], latency, attempt)
            self._record(
                settings, role, agent_id, schema_name, messages, None, usage, latency, attempt, failure.reason
            )
            endpoint = self._base_url(settings) or settings.endpoint
            if failure.kind is Kind.FATAL:
                raise EndpointError(failure.reason, role=role, endpoint=endpoint)
            if attempt > settings.retries:
                raise ModelError(f"{endpoint}: {failure.reason} (after {attempt} attempts)")
            if failure.retry_after is not None:  # the server said when: wait that long, spread a little
                delay = failure.retry_after * random.uniform(1.0, 1.2)
            else:  # exponential backoff with full jitter
                delay = random.uniform(0, min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)))
            await anyio.sleep(delay)

    async def _call(
        self, settings: ModelSettings, messages: list[dict[str, str]], fmt: dict[str, Any]
    ) -> tuple[str, tuple[int, int]]:
        if settings.api == "litellm":
            return await self._call_litellm(settings, messages, fmt)
        endpoint = self._endpoint(settings)
        body = {
            "model": settings.model,
            "messages": messages,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "response_format": fmt,
        }
        data = await endpoint.post(body, settings.timeout)
        choices = data.get("choices")
        if not choices or not isinstance(choices[0], dict):
            raise ValueError("reply has no choices")
        content = (choices[0].get("message") or {}).get("content") or ""
        usage = data.get("usage") or {}
        return content, (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)

    async def _call_litellm(
        self, settings: ModelSettings, messages: list[dict[str, str]], fmt: dict[str, Any]
    ) -> tuple[str, tuple[int, int]]:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
        import litellm  # 3 s and 200 MB: only when a role asks for it

        litellm.suppress_debug_info = True

        kwargs: dict[str, Any] = {}
        if settings.base_url:
            kwargs["api_base"] = settings.base_url
            if litellm_needs_provider(settings.model, litellm.provider_list):
                # a bare name, as one writes for llama.cpp, Ollama or vLLM: the server speaks OpenAI's API
                kwargs["custom_llm_provider"] = "openai"
        if settings.api_key_env:
            kwargs["api_key"] = os.environ.get(settings.api_key_env, "")
        elif settings.base_url:
            kwargs["api_key"] = "not-needed"  # local OpenAI-compatible servers take any key
        response = await litellm.acompletion(
            model=settings.model,
            messages=messages,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            response_format=fmt,
            timeout=settings.timeout,
            num_retries=0,
            **kwargs,
        )
        content = response.choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        return content, ((usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0))

    def _base_url(self, settings: ModelSettings) -> str:
        return settings.base_url or (self.embedded_base_url or "")

    def _endpoint(self, settings: ModelSettings) -> ChatEndpoint:
        base_url = self._base_url(settings)
        if not base_url:
            raise EndpointError(NO_ENDPOINT, role="model", endpoint="embedded")
        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        endpoint = self._clients.get((base_url, key))
        if endpoint is None:
            endpoint = self._clients[(base_url, key)] = ChatEndpoint(base_url, key)
        return endpoint

    async def aclose(self) -> None:
        for endpoint in self._clients.values():
            await endpoint.close()
        self._clients.clear()

    def _record(
        self,
        settings: ModelSettings,
        role: str,
        agent_id: str | None,
        schema_name: str,
        messages: list[dict[str, str]],
        content: str | None,
        usage: tuple[int, int],
        latency: float,
        attempt: int,
        error: str | None,
    ) -> None:
        call_id = new_id()
        parent_id, kept = self._lean(agent_id, call_id, messages)
        row = {
            "id": call_id,
            "session_id": self.session_id,
            "agent_id": agent_id,
            "role": role,
            "model": settings.model,
            "endpoint": self._base_url(settings) or settings.endpoint,
            "schema_name": schema_name,
            "parent_id": parent_id,
            "kept": kept,
            "request": Zipped(json.dumps(messages[kept:], ensure_ascii=False)),
            "response": Zipped(content) if content else content,
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "latency_ms": round(latency, 2),
            "attempts": attempt,
            "error": error,
            "created_at": now(),
        }
        if self.writer is not None:
            self.writer.insert("llm_calls", row)
        for listener in self.listeners:
            listener(row)

    def _lean(
        self, agent_id: str | None, call_id: str, messages: list[dict[str, str]]
    ) -> tuple[str | None, int]:
        """(the agent's previous call, how many of its messages this call's conversation starts with).

        Only the rest is recorded: a worker's conversation grows by two messages a step, so a call stores those
        two instead of all twenty. A trimmed conversation shares a shorter prefix and records more; the first
        call of an agent, or one the client has forgotten, records everything (``kept`` 0, no parent).
        """
        if self.writer is None or agent_id is None:
            return None, 0
        conversations = self._conversations
        previous = conversations.pop(agent_id, None)
        conversations[agent_id] = (call_id, list(messages))
        if len(conversations) > CONVERSATIONS_KEPT:
            conversations.popitem(last=False)
        if previous is None:
            return None, 0
        parent_id, sent = previous
        kept, n = 0, min(len(sent), len(messages))
        while kept < n and (sent[kept] is messages[kept] or sent[kept] == messages[kept]):
            kept += 1
        return parent_id, kept


def litellm_needs_provider(model: str, providers: Any) -> bool:
    """Whether litellm must be told the provider: with a ``base_url``, a name without a known ``provider/``
    prefix (``qwen2.5-coder``, ``Qwen/Qwen2.5-Coder``) names a model on an OpenAI-compatible server."""
    prefix, slash, _ = model.partition("/")
    known = {str(getattr(p, "value", p)) for p in providers}
    return not slash or prefix not in known


def _format_reason(exc: ValidationError, content: str) -> str:
    if not content.strip():
        return "empty reply"
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return "reply is not valid JSON"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in errors[:3]]
    return "reply breaks the schema: " + "; ".join(parts)
