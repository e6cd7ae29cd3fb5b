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

import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ValidationError

from ..jsontext import extract_json
from .bodies import (
    COMPLETION_PATH,
    INFILL_STOPS,
    INFILL_TIMEOUT,
    INFILL_TOKENS,
    chat_body,
    chat_text,
    format_reason,
    infill_text,
    response_format,
)
from .call_log import CallLog, CallTimings
from .errors import EndpointError, Failure, Kind, ModelError, ReplyFormatError, classify, one_line
from .fim import FimTokens, NoFim, build_prompt, completion_body, find_tokens
from .http import ChatEndpoint, HTTPStatusError
from .pool import PROBE_TIMEOUT, AdaptiveLimiter, Endpoint, Pool
from .slots import SlotLease, SlotPool
from .via_litellm import call_litellm

__all__ = [
    "AdaptiveLimiter",
    "EndpointError",
    "InfillUnsupported",
    "ModelClient",
    "ModelError",
    "Reply",
    "ReplyFormatError",
]

if TYPE_CHECKING:
    from ...store.writer import Writer
    from ..settings import ModelSettings

MAX_BACKOFF = 30.0
NO_ENDPOINT = "no endpoint: set model.base_url, or run `formicary model setup` for the local model"


class InfillUnsupported(Exception):
    """The endpoint cannot fill in the middle (not llama-server, or its model has no FIM tokens)."""


class NoSpareSlot(Exception):
    """An extra draw found no free slot that no other agent claims (nothing was sent)."""


@dataclass
class Reply:
    data: BaseModel | None
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int


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
        self.log = CallLog(writer, session_id)
        self.listeners = self.log.listeners
        """Told of every recorded call (its row): the ledger's token counts, the budget, the TUI."""
        self.embedded_base_url = embedded_base_url
        self.embedded_slots = embedded_slots
        self._slot_pools: dict[str, SlotPool] = {}
        self._endpoints: dict[tuple[str, str], Endpoint] = {}  # (url, key): shared by every pool naming it
        self._pools: dict[tuple[Any, ...], Pool] = {}
        self._turn = 0
        self._http: Any = None  # the probes' httpx client
        self._transports: dict[tuple[str, str], ChatEndpoint] = {}  # (url, key): the calls' HTTP session
        self._no_infill: dict[str, str] = {}  # base URL -> why it cannot fill in the middle
        self._fim: dict[str, FimTokens] = {}  # base URL -> its model's FIM tokens
        self.notices: list[Callable[[str], None]] = []
        """Told what the operator should know: an endpoint taken out, calls waiting for one, one back."""
        self.revivers: dict[str, Callable[[], Awaitable[object]]] = {}
        """base URL -> restarts that server if its process died (the embedded llama-server)."""
        self._paused = False
        self._resumed: anyio.Event | None = None
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

    def spare_slots(self, settings: ModelSettings, agent_id: str, callers: int) -> int:
        """Slots of ``settings``' llama.cpp endpoint that an extra draw of ``agent_id`` may use now: free ones
        no other agent claims (:meth:`.SlotPool.spare`), and no more than the ``callers`` (agents that may call
        at any moment, this one included) leave over; 0 for other endpoints. Why both: at a session's start no
        agent has claimed a slot yet, though every worker is about to ask for one."""
        pool = self.slots(settings)
        if pool is None:
            return 0
        return max(0, min(pool.spares(agent_id + "/"), pool.size - callers))

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
        fmt = response_format(schema_name, schema)

        async def send(endpoint: Endpoint, model: str, lease: SlotLease | None, timings: CallTimings) -> Any:
            return await self._call(settings, endpoint, model, messages, fmt, lease, timings)

        def validate(content: str) -> tuple[BaseModel | None, str | None]:
            try:
                return schema.model_validate_json(extract_json(content)), None
            except ValidationError as exc:
                return None, format_reason(exc, content)

        reply = await self._exchange(settings, role, agent_id, schema_name, messages, send, validate)
        if isinstance(reply, ReplyFormatError):
            raise reply
        return reply

    def can_infill(self, settings: ModelSettings, role: str) -> bool:
        """Whether :meth:`infill` may work for ``settings``: a llama-server endpoint not known to lack it."""
        if not settings.is_llama_cpp or settings.api == "litellm":
            return False
        return not all(m.url in self._no_infill for m in self.pool(settings, role).members)

    async def infill(
        self,
        settings: ModelSettings,
        prefix: str,
        suffix: str,
        *,
        near: str = "",
        tail: str = "",
        role: str,
        agent_id: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = INFILL_TOKENS,
        stop: list[str] | None = None,
        spare: str | None = None,
    ) -> Reply:
        """The code a fill-in-the-middle model writes between ``prefix`` and ``suffix`` (a completion of its
        FIM prompt, see :mod:`.fim`), recorded like any call (its request as a ``prefix`` and a ``suffix``
        message: the code the model was shown). ``near`` follows ``prefix`` right before the gap, ``tail``
        follows ``suffix``; neither is cut, so what they say does not move the cuts (see :mod:`.fim`).
        ``spare``: an extra draw, alongside the agent's own, under this key (``agent_id/k``) on a slot no other
        agent claims (:meth:`.SlotPool.spare`), or not at all.

        Raises:
            NoSpareSlot: ``spare`` was given and no such slot was free (nothing sent, nothing recorded).
            InfillUnsupported: the endpoint or its model has no fill-in-the-middle (not llama-server, or a
                model without FIM tokens); remembered, so later calls fail at once.
            EndpointError, ModelError: as for :meth:`complete`.
        """
        if not self.can_infill(settings, role):
            raise InfillUnsupported("fill-in-the-middle needs a llama-server endpoint that has it")
        # no retry: a failed draft costs one draft, and the chat loop can take over (see INFILL_TIMEOUT)
        settings = settings.model_copy(update={"temperature": temperature, "retries": 0})
        messages = [
            {"role": "prefix", "content": prefix + near},
            {"role": "suffix", "content": suffix + tail},
        ]

        async def send(endpoint: Endpoint, model: str, lease: SlotLease | None, timings: CallTimings) -> Any:
            if endpoint.url in self._no_infill:
                raise InfillUnsupported(self._no_infill[endpoint.url])
            transport = self._transport(endpoint)
            try:
                fim = self._fim.get(endpoint.url)
                if fim is None:
                    fim = self._fim[endpoint.url] = await find_tokens(transport)
                prompt = await build_prompt(transport, fim, prefix, suffix, near, tail)
            except (NoFim, HTTPStatusError) as exc:
                if isinstance(exc, HTTPStatusError) and exc.status_code not in (400, 404, 405, 501):
                    raise
                self._no_infill[endpoint.url] = f"{endpoint.label}: no fill-in-the-middle ({exc})"
                raise InfillUnsupported(self._no_infill[endpoint.url]) from exc
            messages[0]["content"], messages[1]["content"] = prompt.prefix, prompt.suffix
            slot = timings.slot = lease.slot if lease is not None else None
            stops = [*INFILL_STOPS, *(stop or [])]
            body = completion_body(prompt, temperature, settings.repeat_penalty, max_tokens, stops, slot)
            timeout = min(settings.timeout, INFILL_TIMEOUT)
            text, draft = infill_text(await transport.post(body, timeout, path=COMPLETION_PATH))
            timings.read(draft)
            return text

        reply = await self._exchange(
            settings, role, agent_id, "infill", messages, send, lambda c: (None, None), spare=spare
        )
        assert isinstance(reply, Reply)  # nothing to validate: plain code
        return reply

    async def _exchange(
        self,
        settings: ModelSettings,
        role: str,
        agent_id: str | None,
        schema_name: str,
        messages: list[dict[str, str]],
        send: Callable[
            [Endpoint, str, SlotLease | None, CallTimings], Awaitable[tuple[str, tuple[int, int]]]
        ],
        validate: Callable[[str], tuple[Any, str | None]],
        spare: str | None = None,
    ) -> Reply | ReplyFormatError:
        """One request through ``settings``' pool, slots and retries, every attempt recorded; ``validate``
        turns a reply's text into (data, None) or (None, why it is malformed). ``spare``: see :meth:`infill`."""
        pool = self.pool(settings, role)
        attempt = 0
        outage_started: float | None = None
        while True:
            attempt += 1
            await self.wait_running()
            queued = time.perf_counter()
            endpoint = await pool.acquire()
            model = pool.model(endpoint)
            slots = self._slots_of(endpoint.url, endpoint.cap.ceiling) if settings.is_llama_cpp else None
            if spare is not None:
                lease = slots.spare(spare) if slots is not None else None
                if lease is None:
                    endpoint.abandoned()
                    raise NoSpareSlot(spare)
            else:
                lease = await slots.acquire(agent_id) if slots is not None else None
            timings = CallTimings(queue_ms=(time.perf_counter() - queued) * 1000)
            started = time.perf_counter()
            content, usage, failure = "", (0, 0), None
            self.in_flight += 1
            try:
                content, usage = await send(endpoint, model, lease, timings)
            except InfillUnsupported:
                endpoint.finished(None, "")
                raise
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
                data, reason = validate(content)
                self.log.record(
                    where, role, agent_id, schema_name, messages, content, usage, latency, attempt, reason, timings
                )  # fmt: skip
                if reason is not None:
                    return ReplyFormatError(reason, content)
                return Reply(data, content, usage[0], usage[1], latency, attempt)
            self.log.record(
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
            return await call_litellm(settings, endpoint, model, messages, fmt)
        slot = lease.slot if lease is not None else None
        if timings is not None and slot is not None and settings.is_llama_cpp:
            timings.slot = slot
        body = chat_body(settings, model, messages, fmt, slot if settings.is_llama_cpp else None)
        data = await self._transport(endpoint).post(body, settings.timeout)
        text = chat_text(data)
        if timings is not None:
            timings.read(data)
        return text

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
