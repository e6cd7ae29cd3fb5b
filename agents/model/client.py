"""One async model call for every role: chat messages in, a reply under a named JSON schema out.

OpenAI-compatible endpoints (llama-server, Ollama, vLLM, LM Studio) go through the openai SDK's ``AsyncOpenAI``,
the hot path (~1.4 ms CPU per call measured here). Other providers go through litellm, imported only when a role
is configured with ``api = "litellm"``. Every endpoint has one concurrency cap shared by all agents, lowered
adaptively when the endpoint answers 429; failures are retried with exponential backoff and full jitter that honour
``Retry-After``; every attempt is recorded in the store.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ValidationError

from ...store.db import new_id, now
from ..jsontext import extract_json
from .errors import EndpointError, Kind, ModelError, ReplyFormatError, classify
from .slots import SlotLease, SlotPool

__all__ = ["EndpointError", "ModelClient", "ModelError", "Reply", "ReplyFormatError"]

if TYPE_CHECKING:
    from ...store.writer import Writer
    from ..settings import ModelSettings

MAX_BACKOFF = 30.0
CONNECTIONS_PER_POOL = 32
"""Concurrent calls per SDK client: its connection pool scans all its connections whenever a request starts or
ends, so 256 calls in flight through one pool cost O(256) each; calls are spread over several pools instead."""
NO_ENDPOINT = "no endpoint: set model.base_url, or run `formicary model setup` for the local model"


@dataclass
class Reply:
    data: BaseModel
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int


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
        embedded_slots: int | None = None,
    ) -> None:
        self.writer = writer
        self.session_id = session_id
        self.embedded_base_url = embedded_base_url
        self.embedded_slots = embedded_slots
        self._slot_pools: dict[str, SlotPool] = {}
        # (endpoint, key) -> SDK clients, each its own connection pool
        self._clients: dict[tuple[str, str], list[Any]] = {}
        self._turn = 0
        self._limiters: dict[str, AdaptiveLimiter] = {}
        self._paused = False
        self._resumed: anyio.Event | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.calls = 0
        self.in_flight = 0

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

    def slots(self, settings: ModelSettings) -> SlotPool | None:
        """The slot pool of a llama.cpp endpoint (None for other endpoints): ``max_concurrency`` slots, or the
        embedded server's ``-np`` when that is fewer."""
        if not settings.is_llama_cpp:
            return None
        key = self._base_url(settings) or settings.endpoint
        pool = self._slot_pools.get(key)
        if pool is None:
            n = settings.max_concurrency
            if not settings.base_url and self.embedded_slots:
                n = min(n, self.embedded_slots)
            pool = self._slot_pools[key] = SlotPool(n)
        return pool

    def idle_slots(self, settings: ModelSettings) -> int:
        """Slots of ``settings``' endpoint nobody is calling on now (0 where slots are not known)."""
        pool = self.slots(settings)
        return pool.idle if pool is not None else 0

    def forget_agent(self, agent_id: str) -> None:
        """An agent ended: it no longer claims a slot."""
        for pool in self._slot_pools.values():
            pool.forget(agent_id)

    async def complete(
        self,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        schema_name: str,
        schema: type[BaseModel],
        *,
        role: str,
        agent_id: str | None = None,
        temperature: float | None = None,
    ) -> Reply:
        """Ask ``settings``' endpoint for one reply under ``schema``; retry transient failures.

        Raises:
            ReplyFormatError: the reply was not JSON under the schema (not retried: the caller decides).
            EndpointError: the endpoint refused the request in a way retrying cannot fix (the session ends).
            ModelError: the endpoint kept failing past ``settings.retries``.
        """
        if settings.api == "openai" and not self._base_url(settings):
            raise EndpointError(NO_ENDPOINT, role=role, endpoint="embedded")
        if temperature is not None:
            settings = settings.model_copy(update={"temperature": temperature})
        limiter = self.limiter(settings)
        pool = self.slots(settings)
        fmt = response_format(schema_name, schema)
        attempt = 0
        while True:
            attempt += 1
            await self.wait_running()
            started = time.perf_counter()
            content, usage, failure = "", (0, 0), None
            timings = CallTimings()
            async with limiter:
                lease = await pool.acquire(agent_id) if pool is not None else None
                self.in_flight += 1
                try:
                    timings.queue_ms = (time.perf_counter() - started) * 1000
                    content, usage = await self._call(settings, messages, fmt, lease, timings)
                except EndpointError:
                    raise
                except Exception as exc:  # classified below; every failure is recorded
                    failure = classify(exc, settings.model)
                    if failure.kind is Kind.BUSY:
                        limiter.throttled()
                finally:
                    self.in_flight -= 1
                    if lease is not None:
                        with anyio.CancelScope(shield=True):
                            await pool.release(lease)
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
                        timings,
                    )
                    raise ReplyFormatError(reason, content) from None
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
                    None,
                    timings,
                )
                return Reply(data, content, usage[0], usage[1], latency, attempt)
            self._record(
                settings,
                role,
                agent_id,
                schema_name,
                messages,
                None,
                usage,
                latency,
                attempt,
                failure.reason,
                timings,
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
        self,
        settings: ModelSettings,
        messages: list[dict[str, str]],
        fmt: dict[str, Any],
        lease: SlotLease | None = None,
        timings: CallTimings | None = None,
    ) -> tuple[str, tuple[int, int]]:
        if settings.api == "litellm":
            return await self._call_litellm(settings, messages, fmt)
        client = self._openai(settings)
        body = {
            "model": settings.model,
            "messages": messages,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "response_format": fmt,
        }
        if settings.is_llama_cpp:  # llama-server's own fields; other servers may reject unknown ones
            body["repeat_penalty"] = settings.repeat_penalty
            body["cache_prompt"] = True
            if lease is not None:
                body["id_slot"] = lease.slot
                if timings is not None:
                    timings.slot = lease.slot
        # The SDK's documented raw ``post``, not ``chat.completions.create``: create walks every message through
        # the SDK's typed-dict transform (~1.5 ms CPU per call once a worker's conversation has 20 messages);
        # ours are plain role/content strings, and the same request, errors and retries result.
        data = await client.post(
            "/chat/completions", cast_to=dict, body=body, options={"timeout": settings.timeout}
        )
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ValueError("reply has no choices")
        if timings is not None:
            timings.read(data)
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

    def _openai(self, settings: ModelSettings) -> Any:
        base_url = self._base_url(settings)
        if not base_url:
            raise EndpointError(NO_ENDPOINT, role="model", endpoint="embedded")
        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        cache_key = (base_url, key)
        pools = self._clients.get(cache_key)
        if pools is None:
            from openai import AsyncOpenAI

            n = -(-settings.max_concurrency // CONNECTIONS_PER_POOL)
            pools = [
                AsyncOpenAI(base_url=base_url, api_key=key or "not-needed", max_retries=0) for _ in range(n)
            ]
            self._clients[cache_key] = pools
        self._turn += 1
        return pools[self._turn % len(pools)]

    async def aclose(self) -> None:
        for pools in self._clients.values():
            for client in pools:
                await client.close()
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
        timings: CallTimings | None = None,
    ) -> None:
        timings = timings or CallTimings()
        row = {
            "id": new_id(),
            "session_id": self.session_id,
            "agent_id": agent_id,
            "role": role,
            "model": settings.model,
            "endpoint": self._base_url(settings) or settings.endpoint,
            "schema_name": schema_name,
            "request": json.dumps(messages, ensure_ascii=False),
            "response": content,
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
            "created_at": now(),
        }
        if self.writer is not None:
            self.writer.insert("llm_calls", row)
        for listener in self.listeners:
            listener(row)


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
