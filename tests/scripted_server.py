"""A scripted OpenAI-compatible model server for tests and benchmarks (product code never uses it).

It speaks real HTTP/1.1 with keep-alive on 127.0.0.1, on stdlib asyncio streams, so the code under test goes
through its real client stack — connection pools, timeouts, retries, SSE parsing — without a model. Replies come
from a ``responder`` callable or a ``script`` list; failures are injected with :meth:`ScriptedServer.fail_next`,
a ``failures`` callable, or a reply ``{"fail": mode}``. It runs in a background thread with its own event loop
(``with ScriptedServer(...) as srv``), or as a separate process (``python -m tests.scripted_server`` or
:func:`spawn_server_process`) when its CPU must not be counted with the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from tests.scripted_fim import fim_as_infill, toy_tokens
from tests.scripted_replies import (  # noqa: F401 (every name stays importable from here, as tests do)
    _PARTIAL,
    CONTEXT_MESSAGE,
    DEFAULT_MODEL,
    FAIL_MODES,
    REPO_ROOT,
    Body,
    Failure,
    FailurePolicy,
    Reply,
    Responder,
    ScriptExhausted,
    _as_failure,
    _Script,
    _tokens,
    by_schema,
    echo_responder,
    last_user_text,
    message_text,
    schema_name,
)


class _Conn:
    """One client connection: its streams, and whether it stays open after the current reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.keep_alive = reader, writer, True
        self.authorized = True

    def head(self, status: int, content_type: str, length: int | None, **extra: str) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
            "Connection: " + ("keep-alive" if self.keep_alive else "close"),
        ]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, status: int, payload: Body | list[Body] | bytes, **extra: str) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.write(self.head(status, "application/json", len(data), **extra) + data)

    async def error(self, status: int, message: str, kind: str = "server_error", **extra: str) -> None:
        await self.send(status, {"error": {"message": message, "type": kind, "code": status}}, **extra)


def _chunk(data: bytes) -> bytes:
    """One frame of a chunked response body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---- the server ------------------------------------------------------------------------------------------------


class ScriptedServer:
    """An OpenAI-compatible chat server on 127.0.0.1 whose replies come from Python.

    Args:
        responder: ``(body) -> str | dict``, sync or async (it runs on the server loop: keep sync ones quick).
            A dict reply is ``{"content": str | json-able, "finish_reason"?, "usage"?, "timings"?, "fail"?}``. Default:
            echo the last user message.
        script: replies used in order instead of a responder (request n gets ``script[n]`` unless a failure
            was injected for it — injected failures do not consume script entries).
        on_exhausted: what an exhausted script does: ``"error"`` (HTTP 500 with a clear message, also added
            to ``errors``) or ``"repeat"`` (the last reply again).
        latency: seconds slept (asyncio) before each successful reply or truncated stream.
        failures: ``(body, n) -> mode | Failure | None``, asked for each chat request (n counts from 0) that
            ``fail_next`` did not already fail.
        retry_after: default ``Retry-After`` seconds for mode ``"429"``.
        stream_chunk_chars: characters of content per streamed chunk.
        api_key: when set, every request must carry ``Authorization: Bearer <api_key>`` or gets a 401.
        strict_model: chat requests naming another model than ``model`` get a 404 (as Ollama and vLLM answer).
        enforce_context: a chat request whose prompt (~4 characters a token) exceeds ``n_ctx`` gets a 400.
        fail_always: every chat request fails in this mode (see :data:`FAIL_MODES`).
        infill: serve fill-in-the-middle as llama-server does for formicary: ``POST /tokenize`` (a toy tokenizer,
            one token per character, the Qwen FIM names as ids 1-3) and ``POST /completion`` of a FIM prompt,
            answered through the responder with the prompt decoded back into ``input_prefix`` and
            ``input_suffix`` (schema name ``infill``, see :func:`schema_name`); without it both routes are a
            404, as on servers that lack them.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        responder: Responder | None = None,
        script: Sequence[Reply] | None = None,
        *,
        model: str = DEFAULT_MODEL,
        latency: float = 0.0,
        n_ctx: int = 8192,
        failures: FailurePolicy | None = None,
        retry_after: float = 1.0,
        on_exhausted: str = "error",
        stream_chunk_chars: int = 16,
        port: int = 0,
        api_key: str | None = None,
        strict_model: bool = False,
        enforce_context: bool = False,
        fail_always: str | None = None,
        infill: bool = False,
    ) -> None:
        if responder is not None and script is not None:
            raise ValueError("give a responder or a script, not both")
        self._respond = _Script(script, on_exhausted) if script is not None else responder or echo_responder
        self.model, self.latency, self.n_ctx, self.failures = model, latency, n_ctx, failures
        self.retry_after, self.stream_chunk_chars, self._port = retry_after, max(1, stream_chunk_chars), port
        self.api_key, self.strict_model, self.enforce_context = api_key, strict_model, enforce_context
        self.fail_always = _as_failure(fail_always)
        self.infill = (
            infill  # serve /tokenize and FIM /completion like a chat request (else 404, as other servers)
        )
        self.errors: list[str] = []
        """Responder exceptions and exhausted scripts, one message each (tests assert it stays empty)."""
        self._lock = threading.Lock()
        self._requests: list[Body] = []
        self._pending: deque[Failure] = deque()
        self._in_flight = self._max_in_flight = self._connection_count = 0
        self._conns: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # -- introspection (safe from any thread) --
    @property
    def requests(self) -> list[Body]:
        """A copy of every chat request body received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connection_count(self) -> int:
        """TCP connections accepted so far (keep-alive clients reuse theirs)."""
        return self._connection_count

    @property
    def max_in_flight(self) -> int:
        """Peak number of chat requests being served at once (latency and hangs included)."""
        return self._max_in_flight

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: where ``/health`` and ``/props`` live (they are also under ``/v1``)."""
        if not self._port:
            raise RuntimeError("the scripted server is not started yet")
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    def fail_next(
        self, mode: str, count: int = 1, *, retry_after: float | None = None, chunks: int = 2
    ) -> None:
        """Make the next ``count`` chat requests fail in ``mode`` (see :data:`FAIL_MODES`)."""
        failure = Failure(mode, retry_after, chunks)
        with self._lock:
            self._pending.extend([failure] * count)

    # -- lifecycle --
    def start(self) -> ScriptedServer:
        """Serve from a daemon thread with its own event loop; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self.serve(ready.set))
            except BaseException as exc:  # handed to start() below
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        if not ready.wait(15) or errors:
            raise RuntimeError("the scripted server failed to start") from (errors[0] if errors else None)
        return self

    def stop(self) -> None:
        """Stop serving (hanging and idle connections are closed) and join the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return; safe from any thread and from signal handlers."""
        if self._loop is not None and self._stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._stop_event.set)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Serve on the running loop until :meth:`request_stop`; ``ready`` is called once the port is bound."""
        self._loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, self._port, backlog=2048)
        self._port = server.sockets[0].getsockname()[1]
        try:
            if ready is not None:
                ready()
            await self._stop_event.wait()
        finally:
            server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await server.wait_closed()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedServer:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc: object) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.stop)

    # -- HTTP --
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until the client closes it or the server stops."""
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._connection_count += 1
        conn = _Conn(reader, writer)
        try:
            while conn.keep_alive:
                lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip().lower()
                connection = headers.get("connection", "")
                conn.keep_alive = "keep-alive" in connection or (
                    version == "HTTP/1.1" and "close" not in connection
                )
                if "chunked" in headers.get("transfer-encoding", ""):
                    conn.keep_alive = False
                    await conn.error(501, "chunked request bodies are not supported")
                    return
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                key = f"bearer {self.api_key}".lower() if self.api_key is not None else None
                conn.authorized = key is None or headers.get("authorization") == key
                await self._route(conn, method, target, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the client went away or spoke something that is not HTTP: drop the connection
        except asyncio.CancelledError:
            pass  # the server is stopping; returning normally keeps asyncio's callback from logging it
        finally:
            self._conns.discard(task)
            writer.close()

    async def _route(self, conn: _Conn, method: str, target: str, raw: bytes) -> None:
        route = target.split("?", 1)[0]
        route = route[3:] if route.startswith("/v1/") else route
        if not conn.authorized and route != "/chat/completions":  # chat requests are counted first
            await conn.error(401, "Invalid API Key", "authentication_error")
            return
        if method == "POST" and route == "/chat/completions":
            await self._chat(conn, raw)
        elif method == "POST" and route == "/completion" and self.infill:
            await self._chat(conn, fim_as_infill(raw))
        elif method == "POST" and route == "/tokenize" and self.infill:
            await conn.send(200, {"tokens": toy_tokens(json.loads(raw))})
        elif method == "GET" and route == "/models":
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}
            await conn.send(200, {"object": "list", "data": [{**model, "meta": {"n_ctx_train": self.n_ctx}}]})
        elif method == "GET" and route == "/health":
            await conn.send(200, {"status": "ok"})
        elif method == "GET" and route == "/props":
            settings = {"n_ctx": self.n_ctx}
            await conn.send(
                200, {"default_generation_settings": settings, "n_ctx": self.n_ctx, "total_slots": 1}
            )
        else:
            await conn.error(404, f"no route for {method} {target}", "not_found_error")

    async def _chat(self, conn: _Conn, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            await conn.error(400, f"invalid JSON body: {exc}", "invalid_request_error")
            return
        with self._lock:
            n = len(self._requests)
            self._requests.append(body)
            failure = self._pending.popleft() if self._pending else self.fail_always
            failure = failure if conn.authorized else Failure("401")
            failure = failure or self._refusal(body)
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            reply: Body = {"content": _PARTIAL}
            if failure is None and self.failures is not None:
                failure = _as_failure(self.failures(body, n))
            if failure is None:
                try:
                    reply = await self._reply(body)
                    failure = _as_failure(reply.get("fail"))
                except Exception as exc:
                    message = f"scripted server: {type(exc).__name__}: {exc}"
                    with self._lock:
                        self.errors.append(message)
                    await conn.error(500, message)
                    return
            if failure is not None and failure.mode != "truncated_stream":
                await self._fail(conn, failure, body)
                return
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            await self._complete(conn, body, reply, n, truncated=failure)
        finally:
            self._in_flight -= 1

    def _refusal(self, body: Body) -> Failure | None:
        """What a real server refuses outright: an unknown model name, a prompt longer than its context."""
        if self.strict_model and body.get("model") != self.model:
            return Failure("404")
        prompt = sum(_tokens(message_text(m)) for m in body.get("messages") or [])
        if self.enforce_context and prompt + int(body.get("max_tokens") or 0) > self.n_ctx:
            return Failure("context")
        return None

    async def _reply(self, body: Body) -> Body:
        """Ask the responder or script, and normalize its answer to a dict with a string ``content``."""
        reply = self._respond(body)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, str):
            return {"content": reply}
        if not (isinstance(reply, dict) and ("content" in reply or "fail" in reply)):
            raise TypeError(
                f"a reply must be a str or a dict with 'content' or 'fail', not {reply!r:.200}; "
                "to answer with JSON return {'content': obj} or json.dumps(obj)"
            )
        content = reply.get("content")
        content = "" if content is None else content if isinstance(content, str) else json.dumps(content)
        return {**reply, "content": content}

    async def _fail(self, conn: _Conn, failure: Failure, body: Body) -> None:
        if failure.mode == "500":
            await conn.error(500, failure.message)
        elif failure.mode == "400":
            await conn.error(400, failure.message, "invalid_request_error")
        elif failure.mode == "401":
            await conn.error(401, "Invalid API Key", "authentication_error")
        elif failure.mode == "404":
            await conn.error(404, f"model '{body.get('model')}' not found", "not_found_error")
        elif failure.mode == "context":
            await conn.error(400, CONTEXT_MESSAGE, "exceed_context_size_error")
        elif failure.mode == "429":
            seconds = self.retry_after if failure.retry_after is None else failure.retry_after
            await conn.error(429, failure.message, "rate_limit_exceeded", Retry_After=f"{seconds:g}")
        elif failure.mode == "malformed_json" and body.get("stream"):
            broken = _chunk(b'data: {"id": "chatcmpl-broken", "choices": [\n\n') + _chunk(b"data: [DONE]\n\n")
            await conn.write(conn.head(200, "text/event-stream", None) + broken + b"0\r\n\r\n")
        elif failure.mode == "malformed_json":
            await conn.send(200, b'{"id": "chatcmpl-broken", "choices": [{"message": ')
        else:  # hang: say nothing until the client gives up (EOF) or the server stops (cancellation)
            conn.keep_alive = False
            while await conn.reader.read(65536):
                pass

    async def _complete(
        self, conn: _Conn, body: Body, reply: Body, n: int, truncated: Failure | None
    ) -> None:
        """Send the reply, whole or (``truncated``) cut off mid-body with the connection closed."""
        content: str = reply["content"]
        finish = reply.get("finish_reason") or "stop"
        prompt = sum(_tokens(message_text(m)) for m in body.get("messages") or [])
        usage = {
            "prompt_tokens": max(1, prompt),
            "completion_tokens": _tokens(content),
            **(reply.get("usage") or {}),
        }
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        base = {
            "id": f"chatcmpl-scripted-{n}",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
        }
        if truncated is not None:
            conn.keep_alive = False
        # a FIM completion (see tests/scripted_fim.py): llama-server's /completion answer
        if "input_prefix" in body and truncated is None:
            evaluated = _tokens(str(body["input_prefix"]) + str(body.get("input_suffix") or ""))
            draft = {
                "index": 0,
                "content": content,
                "tokens_evaluated": evaluated,
                "tokens_predicted": _tokens(content),
            }
            await conn.send(200, draft)
            return
        if not body.get("stream"):
            choices = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ]
            payload = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
            if isinstance(
                reply.get("timings"), dict
            ):  # llama-server's per-call timings, when a test sends them
                payload["timings"] = reply["timings"]
            if truncated is None:
                await conn.send(200, payload)
            else:
                data = json.dumps(payload).encode()
                await conn.write(conn.head(200, "application/json", len(data) + 64) + data[: len(data) // 2])
            return
        base["object"] = "chat.completion.chunk"
        size = self.stream_chunk_chars
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": content[i : i + size]} for i in range(0, len(content), size)]
        if truncated is not None:
            deltas = deltas[: truncated.chunks + 1]
        events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        if truncated is None:
            events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append({**base, "choices": [], "usage": usage})
        frames = [_chunk(b"data: %b\n\n" % json.dumps(event).encode()) for event in events]
        if truncated is None:
            frames.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await conn.write(
            conn.head(200, "text/event-stream", None, Cache_Control="no-cache") + b"".join(frames)
        )


def __getattr__(name: str) -> Any:
    """The separate-process helpers live in :mod:`tests.scripted_process` (kept importable from here)."""
    if name in ("spawn_server_process", "stop_server_process", "load_responder", "main"):
        from tests import scripted_process

        return getattr(scripted_process, name)
    raise AttributeError(name)


if __name__ == "__main__":
    from tests.scripted_process import main

    sys.exit(main())
