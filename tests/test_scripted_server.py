"""The scripted model server answers like an OpenAI-compatible endpoint and fails on demand, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI, InternalServerError, RateLimitError

from tests.scripted_server import (
    ScriptedServer,
    by_schema,
    last_user_text,
    spawn_server_process,
    stop_server_process,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(n_ctx=4096) as srv:
        yield srv


def chat(text: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def schema_request(name: str, text: str = "go") -> dict[str, object]:
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": {"type": "object"}}}
    return chat(text, response_format=fmt)


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]


def test_models_health_props_and_unknown_route(server: ScriptedServer) -> None:
    with httpx.Client() as http:
        models = http.get(f"{server.base_url}/models").json()
        assert models["object"] == "list"
        assert models["data"][0]["id"] == "scripted-model"
        assert models["data"][0]["object"] == "model"
        assert http.get(f"{server.root_url}/health").json() == {"status": "ok"}
        props = http.get(f"{server.root_url}/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 4096
        assert props["n_ctx"] == 4096
        assert http.get(f"{server.root_url}/nope").status_code == 404
    # one pooled keep-alive connection carried all four requests
    assert server.connection_count == 1
    assert server.request_count == 0  # only chat requests are recorded


@pytest.mark.anyio
async def test_openai_sdk_parses_plain_and_streamed_replies() -> None:
    reply = "a reply long enough to be split into several streamed chunks"
    async with ScriptedServer(script=[reply, {"content": "second", "finish_reason": "length"}]) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        first = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}]
        )
        assert first.choices[0].message.content == reply
        assert first.choices[0].finish_reason == "stop"
        assert first.model == "m"
        assert first.id and first.created
        assert first.usage is not None
        assert first.usage.completion_tokens == len(reply) // 4
        assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "again"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        assert "".join(parts) == "second"
        assert finish == "length"
        assert usage is not None and usage.completion_tokens == 1
        await client.close()
    assert [last_user_text(body) for body in srv.requests] == ["hello", "again"]


def test_stream_without_usage_ends_with_done(server: ScriptedServer) -> None:
    with httpx.Client() as http:
        events = sse_events(
            http.post(f"{server.base_url}/chat/completions", json=chat("echo me", stream=True)).text
        )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)  # no usage chunk unless asked for
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) == "echo me"


def test_script_is_used_in_order_then_fails_clearly() -> None:
    with ScriptedServer(script=["one", {"content": {"k": 2}}]) as srv, httpx.Client() as http:
        url = f"{srv.base_url}/chat/completions"
        contents = [http.post(url, json=chat()).json()["choices"][0]["message"]["content"] for _ in range(2)]
        assert contents == ["one", '{"k": 2}']
        exhausted = http.post(url, json=chat())
        assert exhausted.status_code == 500
        assert "exhausted" in exhausted.json()["error"]["message"]
        assert srv.errors and "exhausted" in srv.errors[0]


def test_script_can_repeat_its_last_reply() -> None:
    with ScriptedServer(script=["a", "b"], on_exhausted="repeat") as srv, httpx.Client() as http:
        url = f"{srv.base_url}/chat/completions"
        contents = [http.post(url, json=chat()).json()["choices"][0]["message"]["content"] for _ in range(4)]
    assert contents == ["a", "b", "b", "b"]


def test_routing_by_schema_name_and_messages() -> None:
    async def act(body: dict) -> dict:
        await asyncio.sleep(0)
        return {"content": {"action": "write", "task": last_user_text(body)}}

    responder = by_schema(
        {"plan": ['{"tasks": ["a"]}', '{"tasks": []}'], "action": act, "verdict": '{"done": true}'},
        default="free text",
    )
    with ScriptedServer(responder) as srv, httpx.Client() as http:
        url = f"{srv.base_url}/chat/completions"

        def content(request: dict) -> str:
            return http.post(url, json=request).json()["choices"][0]["message"]["content"]

        assert content(schema_request("plan")) == '{"tasks": ["a"]}'
        assert json.loads(content(schema_request("action", "task 7"))) == {
            "action": "write",
            "task": "task 7",
        }
        assert content(schema_request("plan")) == '{"tasks": []}'
        assert content(schema_request("verdict")) == '{"done": true}'
        assert content(chat()) == "free text"
        assert not srv.errors


def test_responder_errors_become_http_500_and_are_recorded() -> None:
    def broken(body: dict) -> dict:
        return {"tasks": []}  # forgot to wrap JSON in {"content": ...}

    with ScriptedServer(broken) as srv, httpx.Client() as http:
        response = http.post(f"{srv.base_url}/chat/completions", json=chat())
    assert response.status_code == 500
    assert "TypeError" in srv.errors[0]


@pytest.mark.anyio
async def test_http_failures_as_the_openai_sdk_sees_them() -> None:
    async with ScriptedServer(script=["fine"]) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "x"}]
        srv.fail_next("500")
        srv.fail_next("429", retry_after=3)
        with pytest.raises(InternalServerError):
            await client.chat.completions.create(model="m", messages=messages)
        with pytest.raises(RateLimitError) as limited:
            await client.chat.completions.create(model="m", messages=messages)
        assert limited.value.response.headers["retry-after"] == "3"
        # injected failures do not consume the script
        ok = await client.chat.completions.create(model="m", messages=messages)
        assert ok.choices[0].message.content == "fine"
        await client.close()
    assert srv.request_count == 3


def test_hang_until_the_client_times_out(server: ScriptedServer) -> None:
    server.fail_next("hang")
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"{server.base_url}/chat/completions", json=chat())
        assert http.post(f"{server.base_url}/chat/completions", json=chat("after")).status_code == 200
    assert server.max_in_flight == 1


def test_malformed_json(server: ScriptedServer) -> None:
    server.fail_next("malformed_json", count=2)
    url = f"{server.base_url}/chat/completions"
    with httpx.Client() as http:
        plain = http.post(url, json=chat())
        assert plain.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            plain.json()
        streamed = http.post(url, json=chat(stream=True))
        assert streamed.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(sse_events(streamed.text)[0])


def test_truncated_replies_end_in_a_protocol_error(server: ScriptedServer) -> None:
    server.fail_next("truncated_stream", count=2, chunks=1)
    url = f"{server.base_url}/chat/completions"
    with httpx.Client() as http:
        received: list[str] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("POST", url, json=chat(stream=True)) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                received.append(line)
        events = [json.loads(line.removeprefix("data: ")) for line in received if line.startswith("data: ")]
        assert len(events) == 2  # the role chunk and one content chunk, then the connection closed
        assert "[DONE]" not in "".join(received)
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(url, json=chat())
        assert http.post(url, json=chat("whole")).json()["choices"][0]["message"]["content"] == "whole"


def test_failures_callable_sees_every_request() -> None:
    def every_other(body: dict, n: int) -> str | None:
        return "500" if n % 2 == 0 else None

    with ScriptedServer(failures=every_other) as srv, httpx.Client() as http:
        codes = [http.post(f"{srv.base_url}/chat/completions", json=chat()).status_code for _ in range(4)]
    assert codes == [500, 200, 500, 200]


@pytest.mark.anyio
async def test_many_concurrent_requests_overlap() -> None:
    async with ScriptedServer(latency=0.5) as srv:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=srv.base_url, limits=limits, timeout=30) as http:
            responses = await asyncio.gather(
                *(http.post("/chat/completions", json=chat(f"n{i}")) for i in range(200))
            )
    assert [r.status_code for r in responses] == [200] * 200
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {f"n{i}" for i in range(200)}
    assert srv.request_count == 200
    assert srv.max_in_flight >= 100


def test_subprocess_mode_prints_its_url_and_serves() -> None:
    proc, base_url = spawn_server_process(script=["from the process"], n_ctx=2048)
    try:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with httpx.Client() as http:
            reply = http.post(f"{base_url}/chat/completions", json=chat())
            assert reply.json()["choices"][0]["message"]["content"] == "from the process"
            assert http.get(base_url.removesuffix("/v1") + "/props").json()["n_ctx"] == 2048
    finally:
        assert stop_server_process(proc) == 0


def test_subprocess_mode_loads_a_responder_by_name() -> None:
    proc, base_url = spawn_server_process(responder="tests.scripted_server:echo_responder")
    try:
        reply = httpx.post(f"{base_url}/chat/completions", json=chat("echoed"))
        assert reply.json()["choices"][0]["message"]["content"] == "echoed"
    finally:
        assert stop_server_process(proc) == 0


@pytest.mark.anyio
async def test_stopping_the_server_releases_a_hung_request() -> None:
    srv = ScriptedServer()
    async with srv, httpx.AsyncClient(base_url=srv.base_url, timeout=30) as http:
        srv.fail_next("hang")
        pending = asyncio.ensure_future(http.post("/chat/completions", json=chat()))
        async with asyncio.timeout(10):  # a guard, not a measurement
            while srv.in_flight == 0:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(srv.stop)
        with pytest.raises(httpx.RemoteProtocolError):
            await pending


def test_unknown_failure_mode_is_refused(server: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="unknown failure mode"):
        server.fail_next("teapot")
