"""One async model call for every role: chat messages in, a reply under a named JSON schema out.

OpenAI-compatible endpoints (llama-server, Ollama, vLLM, LM Studio) are posted to over aiohttp (:mod:`.http`:
~0.8 ms CPU per call with recording, where the openai SDK's request path cost ~3.1 ms at hundreds in flight). Other providers go through litellm, imported only when a role
is configured with ``api = "litellm"``. Each role's calls go to its :class:`~.pool.Pool` of endpoints (one, or
several with ``[[model.endpoints]]``): the least-loaded healthy one within its cap, each cap shared by all agents
and lowered adaptively on 429s. Failures are sorted (:mod:`.errors`): refusals end the session, an endpoint that
is down is waited for, the rest retried with exponential backoff and full jitter that honour ``Retry-After``;
every attempt is recorded in the store.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ValidationError

from ...store.db import new_id, now_ms
from ...store.packing import REPLY, Zipped
from ..jsontext import extract_json
from .errors import EndpointError, Failure, Kind, ModelError, ReplyFormatError, classify, one_line
from .http import ChatEndpoint
from .pool import PROBE_TIMEOUT, AdaptiveLimiter, Endpoint, Pool
from .slots import SlotLease, SlotPool

__all__ = ["AdaptiveLimiter", "EndpointError", "ModelClient", "ModelError", "Reply", "ReplyFormatError"]

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
        self._endpoints: dict[tuple[str, str], Endpoint] = {}  # (url, key): shared by every pool naming it
        self._pools: dict[tuple[Any, ...], Pool] = {}
        self._turn = 0
        self._http: Any = None  # the probes' httpx client
        self._transports: dict[tuple[str, str], ChatEndpoint] = {}  # (url, key): the calls' HTTP session
        # agent id -> (its last recorded call, the messages that call sent): the lean record's base
        self._conversations: OrderedDict[str, tuple[str, list[dict[str, str]]]] = OrderedDict()
        self.notices: list[Callable[[str], None]] = []
        """Told what the operator should know: an endpoint taken out, calls waiting for one, one back."""
        self.revivers: dict[str, Callable[[], Awaitable[object]]] = {}
        """base URL -> restarts that server if its process died (the embedded llama-server)."""
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

    def pool(self, settings: ModelSettings, role: str = "model") -> Pool:
        """The pool of ``settings``' endpoints (made once; endpoints are shared with other pools naming them)."""
        key = (
            role,
            settings.api,
            settings.base_url,
            settings.model,
            settings.max_concurrency,
            settings.api_key_env,
            settings.outage_limit,
            tuple((e.base_url, e.max_concurrency, e.model, e.api_key_env) for e in settings.endpoints),
        )
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._make_pool(settings, role)
        return pool

    def _make_pool(self, settings: ModelSettings, role: str) -> Pool:
        servers = [(e.base_url, e.max_concurrency, e.model, e.api_key_env) for e in settings.servers()]
        if not servers:  # the embedded server, or (litellm) the provider's own endpoint
            url = "" if settings.api == "litellm" else (self.embedded_base_url or "")
            if not url and settings.api == "openai":
                raise EndpointError(NO_ENDPOINT, role=role, endpoint="embedded")
            servers = [(url, settings.max_concurrency, settings.model, settings.api_key_env)]
        members = []
        for url, limit, model, key_env in servers:
            key = os.environ.get(key_env, "") if key_env else ""
            endpoint = self._endpoints.get((url, key))
            if endpoint is None:
                endpoint = self._endpoints[(url, key)] = Endpoint(url, key, limit or settings.max_concurrency)
                endpoint.revive = self.revivers.get(url)
            members.append((endpoint, model or settings.model))
        return Pool(role, members, outage_limit=settings.outage_limit, probe=self._probe, notify=self._notice)

    def _slots_of(self, url: str, limit: int) -> SlotPool:
        """The slot pool of the llama.cpp server at ``url`` (its cap, or the embedded server's ``-np`` if fewer)."""
        pool = self._slot_pools.get(url)
        if pool is None:
            n = limit
            if url and url == self.embedded_base_url and self.embedded_slots:
                n = min(n, self.embedded_slots)
            pool = self._slot_pools[url] = SlotPool(n)
        return pool

    def slots(self, settings: ModelSettings) -> SlotPool | None:
        """The slot pool of ``settings``' first llama.cpp endpoint (None for other endpoints)."""
        if not settings.is_llama_cpp:
            return None
        url = settings.base_url or (self.embedded_base_url or "")
        return self._slots_of(url, settings.max_concurrency)

    def idle_slots(self, settings: ModelSettings) -> int:
        """Slots of ``settings``' endpoint nobody is calling on now (0 where slots are not known)."""
        pool = self.slots(settings)
        return pool.idle if pool is not None else 0

    def forget_agent(self, agent_id: str) -> None:
        """An agent ended: it no longer claims a slot."""
        for pool in self._slot_pools.values():
            pool.forget(agent_id)

    def limiter(self, settings: ModelSettings) -> AdaptiveLimiter:
        """The cap of ``settings``' first endpoint."""
        return self.pool(settings).members[0].cap

    def calls_per_endpoint(self) -> dict[str, int]:
        """Calls made to each endpoint so far (failed ones included)."""
        return {e.label: e.calls for e in self._endpoints.values()}

    def _notice(self, message: str) -> None:
        for listener in self.notices:
            listener(message)

    async def _probe(self, endpoint: Endpoint, model: str) -> bool:
        """Does a taken-out endpoint answer again? ``GET /models`` if nothing listened there (restarted first if
        it is ours and died), else a one-token chat request: its calls failed though it listened."""
        import httpx

        if endpoint.revive is not None:
            try:
                await endpoint.revive()
            except Exception as exc:  # a failed restart is one more failed probe
                endpoint.last_error = f"restart failed: {one_line(str(exc))}"
                return False
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT)
        headers = {"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {}
        try:
            if endpoint.probe_listing:
                response = await self._http.get(f"{endpoint.url}/models", headers=headers)
                return response.status_code < 500
            ping = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            response = await self._http.post(f"{endpoint.url}/chat/completions", json=ping, headers=headers)
            return response.status_code == 200
        except httpx.HTTPError as exc:
            endpoint.last_error = f"probe: {type(exc).__name__}"
            return False

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
        temperature: float | None = None,
    ) -> Reply:
        """Ask ``settings``' endpoint for one reply under ``schema``; retry transient failures.

        Raises:
            ReplyFormatError: the reply was not JSON under the schema (not retried: the caller decides).
            EndpointError: the endpoint refused the request in a way retrying cannot fix (the session ends).
            ModelError: the endpoint kept failing past ``settings.retries``.
        """
        if temperature is not None:
            settings = settings.model_copy(update={"temperature": temperature})
        pool = self.pool(settings, role)
        fmt = response_format(schema_name, schema)
        attempt = 0
        outage_started: float | None = None
        while True:
            attempt += 1
            await self.wait_running()
            queued = time.perf_counter()
            endpoint = await pool.acquire()
            model = pool.model(endpoint)
            slots = self._slots_of(endpoint.url, endpoint.cap.ceiling) if settings.is_llama_cpp else None
            lease = await slots.acquire(agent_id) if slots is not None else None
            timings = CallTimings(queue_ms=(time.perf_counter() - queued) * 1000)
            started = time.perf_counter()
            content, usage, failure = "", (0, 0), None
            self.in_flight += 1
            try:
                content, usage = await self._call(settings, endpoint, model, messages, fmt, lease, timings)
            except Exception as exc:  # classified below; every failure is recorded
                failure = classify(exc, model)
                if failure.kind is Kind.DOWN and not endpoint.url:
                    failure = Failure(Kind.TRANSIENT, failure.reason)  # litellm's provider: nothing to probe
            except BaseException:  # cancelled: the slot goes back, the call counts neither way
                endpoint.abandoned()
                raise
            finally:
                self.in_flight -= 1
                if lease is not None:
                    with anyio.CancelScope(shield=True):
                        await slots.release(lease)
            endpoint.finished(failure.kind if failure else None, failure.reason if failure else "")
            latency = (time.perf_counter() - started) * 1000
            self.calls += 1
            where = (endpoint.label if endpoint.url else settings.endpoint, model)
            if failure is None:
                data, reason = None, None
                try:
                    data = schema.model_validate_json(extract_json(content))
                except ValidationError as exc:
                    reason = _format_reason(exc, content)
                self._record(
                    where,
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
                if data is None:
                    raise ReplyFormatError(reason, content)
                return Reply(data, content, usage[0], usage[1], latency, attempt)
            self._record(
                where,
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
            if failure.kind is Kind.FATAL:
                raise EndpointError(failure.reason, role=role, endpoint=where[0])
            if (
                failure.kind is Kind.DOWN
            ):  # not a retry: wait for a server of the pool (bounded by outage_limit)
                attempt -= 1
                outage_started = outage_started or time.monotonic()
                if time.monotonic() - outage_started > settings.outage_limit:
                    raise EndpointError(
                        f"no answer for {settings.outage_limit:.0f}s (outage_limit), last error: {failure.reason}",
                        role=role,
                        endpoint=pool.label,
                    )
                continue
            if attempt > settings.retries:
                raise ModelError(f"{where[0]}: {failure.reason} (after {attempt} attempts)")
            if failure.retry_after is not None:  # the server said when: wait that long, spread a little
                delay = failure.retry_after * random.uniform(1.0, 1.2)
            else:  # exponential backoff with full jitter
                delay = random.uniform(0, min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1)))
            await anyio.sleep(delay)

    async def _call(
        self,
        settings: ModelSettings,
        endpoint: Endpoint,
        model: str,
        messages: list[dict[str, str]],
        fmt: dict[str, Any],
        lease: SlotLease | None = None,
        timings: CallTimings | None = None,
    ) -> tuple[str, tuple[int, int]]:
        if settings.api == "litellm":
            return await self._call_litellm(settings, endpoint, model, messages, fmt)
        body = {
            "model": model,
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
        data = await self._transport(endpoint).post(body, settings.timeout)
        choices = data.get("choices")
        if not choices or not isinstance(choices[0], dict):
            raise ValueError("reply has no choices")
        if timings is not None:
            timings.read(data)
        content = (choices[0].get("message") or {}).get("content") or ""
        usage = data.get("usage") or {}
        return content, (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)

    async def _call_litellm(
        self,
        settings: ModelSettings,
        endpoint: Endpoint,
        model: str,
        messages: list[dict[str, str]],
        fmt: dict[str, Any],
    ) -> tuple[str, tuple[int, int]]:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
        import litellm  # 3 s and 200 MB: only when a role asks for it

        litellm.suppress_debug_info = True

        kwargs: dict[str, Any] = {}
        if endpoint.url:
            kwargs["api_base"] = endpoint.url
            kwargs["api_key"] = endpoint.key or "not-needed"  # local OpenAI-compatible servers take any key
            if litellm_needs_provider(model, litellm.provider_list):
                # a bare name, as one writes for llama.cpp, Ollama or vLLM: the server speaks OpenAI's API
                kwargs["custom_llm_provider"] = "openai"
        elif endpoint.key:
            kwargs["api_key"] = endpoint.key
        response = await litellm.acompletion(
            model=model,
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

    def _transport(self, endpoint: Endpoint) -> ChatEndpoint:
        """``endpoint``'s HTTP session (one connection pool per server)."""
        key = (endpoint.url, endpoint.key)
        transport = self._transports.get(key)
        if transport is None:
            transport = self._transports[key] = ChatEndpoint(endpoint.url, endpoint.key)
        return transport

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _record(
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
