"""The model client against the scripted server's real HTTP: retries, caps, pause, recording, formats."""

from __future__ import annotations

import json

import anyio
import pytest
from pydantic import BaseModel

from formicary.agents.model.client import AdaptiveLimiter, ModelClient, ModelError, ReplyFormatError
from formicary.agents.settings import ModelSettings
from formicary.store import db as store_db
from formicary.store.writer import Writer
from tests.scripted_server import ScriptedServer

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    answer: str
    n: int


GOOD = json.dumps({"answer": "yes", "n": 3})


def settings(server: ScriptedServer, **over) -> ModelSettings:
    base = {
        "model": "scripted-model",
        "base_url": server.base_url,
        "retries": 3,
        "timeout": 5,
        "max_concurrency": 4,
    }
    return ModelSettings(**(base | over))


async def ask(client: ModelClient, s: ModelSettings):
    return await client.complete(
        s, [{"role": "user", "content": "hi"}], "answer", Answer, role="worker", agent_id="A1"
    )


@pytest.fixture
def server():
    with ScriptedServer(responder=lambda body: GOOD, retry_after=0.2) as srv:
        yield srv


async def test_reply_validated_with_tokens_and_schema_sent(server):
    client = ModelClient()
    reply = await ask(client, settings(server))
    await client.aclose()
    assert reply.data == Answer(answer="yes", n=3)
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    body = server.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "answer"
    assert set(body["response_format"]["json_schema"]["schema"]["properties"]) == {"answer", "n"}


@pytest.mark.parametrize("mode", ["500", "429", "malformed_json", "truncated_stream"])
async def test_fault_retried_then_succeeds(server, mode, tmp_path):
    writer = Writer(tmp_path / "f.db")
    client = ModelClient(writer, "S1")
    server.fail_next(mode, count=2)
    reply = await ask(client, settings(server))
    await client.aclose()
    writer.flush()
    writer.close()
    assert reply.attempts == 3 and reply.data.n == 3
    rows = list(store_db.connect(tmp_path / "f.db").query("SELECT * FROM llm_calls ORDER BY created_at"))
    assert [r["error"] is None for r in rows] == [False, False, True]
    if mode in ("500", "429"):
        assert f"HTTP {mode}" in rows[0]["error"]


async def test_retry_after_is_honoured(server):
    server.fail_next("429", retry_after=0.6)
    client = ModelClient()
    started = anyio.current_time()
    await ask(client, settings(server))
    await client.aclose()
    assert anyio.current_time() - started >= 0.6


async def test_hang_times_out_and_retries(server):
    server.fail_next("hang")
    client = ModelClient()
    reply = await ask(client, settings(server, timeout=0.5))
    await client.aclose()
    assert reply.attempts == 2


async def test_gives_up_after_retries(server):
    server.fail_next("500", count=10)
    client = ModelClient()
    with pytest.raises(ModelError, match=r"HTTP 500.*after 2 attempts"):
        await ask(client, settings(server, retries=1))
    await client.aclose()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Sure! The answer is yes.", "not valid JSON"),
        ('{"answer": "yes"}', "breaks the schema: n"),
        ("", "empty"),
    ],
)
async def test_format_errors_are_not_retried(content, reason):
    with ScriptedServer(responder=lambda body: content) as srv:
        client = ModelClient()
        with pytest.raises(ReplyFormatError, match=reason) as err:
            await ask(client, settings(srv))
        await client.aclose()
    assert err.value.content == content
    assert srv.request_count == 1


async def test_fenced_json_is_accepted():
    with ScriptedServer(responder=lambda body: f"```json\n{GOOD}\n```") as srv:
        client = ModelClient()
        reply = await ask(client, settings(srv))
        await client.aclose()
    assert reply.data.answer == "yes"


async def test_cap_per_endpoint_is_shared_by_all_callers():
    with ScriptedServer(responder=lambda body: GOOD, latency=0.2) as srv:
        client = ModelClient()
        s = settings(srv, max_concurrency=3)
        async with anyio.create_task_group() as tg:
            for _ in range(24):
                tg.start_soon(ask, client, s)
        await client.aclose()
    assert srv.request_count == 24
    assert srv.max_in_flight == 3


async def test_429_storm_lowers_concurrency():
    with ScriptedServer(responder=lambda body: GOOD, latency=0.05, retry_after=0.1) as srv:
        srv.fail_next("429", count=20)
        client = ModelClient()
        s = settings(srv, max_concurrency=8, retries=20)
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(ask, client, s)
        limit = client.limiter(s).limit
        await client.aclose()
    assert limit < 8


def test_limiter_recovers_after_successes():
    async def main():
        limiter = AdaptiveLimiter(8)
        limiter.throttled()
        assert limiter.limit == 4
        for _ in range(200):
            limiter.succeeded()
        assert limiter.limit == 8

    anyio.run(main)


async def test_pause_holds_new_calls_until_resume(server):
    client = ModelClient()
    client.pause()
    results = []

    async def call():
        results.append(await ask(client, settings(server)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.sleep(0.3)
        assert server.request_count == 0 and not results
        client.resume()
    await client.aclose()
    assert len(results) == 1


async def test_key_is_sent_but_never_recorded(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_API_KEY", "sk-secret-abcdefghijklmnop")
    writer = Writer(tmp_path / "f.db")
    client = ModelClient(writer, "S1")
    await ask(client, settings(server, api_key_env="SCRIPTED_API_KEY"))
    await client.aclose()
    writer.flush()
    writer.close()
    data = b"".join(p.read_bytes() for p in tmp_path.glob("f.db*"))
    assert b"sk-secret-abcdefghijklmnop" not in data


async def test_no_endpoint_is_a_clear_error():
    client = ModelClient()
    with pytest.raises(ModelError, match="no endpoint"):
        await client.complete(
            ModelSettings(retries=0), [{"role": "user", "content": "x"}], "answer", Answer, role="worker"
        )


async def test_litellm_route_against_the_same_server(server):
    client = ModelClient()
    s = settings(server, api="litellm", model="openai/scripted-model")
    reply = await ask(client, s)
    await client.aclose()
    assert reply.data.n == 3


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("400", "HTTP 400, the endpoint refused the request (injected failure)"),
        ("401", "HTTP 401, the endpoint refused the key (Invalid API Key)"),
        ("404", "HTTP 404, model 'scripted-model' or the URL is not served there"),
        ("context", "HTTP 400, the context is too small for the prompts (the request exceeds"),
    ],
)
async def test_refusals_retrying_cannot_fix_fail_at_once(server, mode, words):
    from formicary.agents.model.errors import EndpointError

    client = ModelClient()
    server.fail_next(mode, count=5)
    with pytest.raises(EndpointError) as caught:
        await ask(client, settings(server))
    await client.aclose()
    assert server.request_count == 1
    assert words in caught.value.reason
    assert caught.value.line.startswith(f"the worker model endpoint {server.base_url} failed: HTTP ")


def test_litellm_is_told_the_provider_only_for_names_it_does_not_know():
    from formicary.agents.model.via_litellm import litellm_needs_provider

    providers = ["openai", "ollama", "anthropic"]
    assert litellm_needs_provider("qwen2.5-coder", providers)
    assert litellm_needs_provider("Qwen/Qwen2.5-Coder-7B-Instruct", providers)
    assert not litellm_needs_provider("openai/qwen2.5-coder", providers)
    assert not litellm_needs_provider("ollama/qwen2.5-coder", providers)


def test_failures_are_sorted_and_found_inside_exception_groups():
    from formicary.agents.model.errors import EndpointError, Kind, classify, find_endpoint_error

    class ConnectError(Exception):
        pass

    assert classify(ConnectError("refused")).kind is Kind.DOWN
    fatal = EndpointError("x", role="judge", endpoint="e")
    nested = ExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [fatal])])
    assert find_endpoint_error(nested) is fatal
    assert find_endpoint_error(ExceptionGroup("none", [ValueError("a")])) is None


async def test_transport_errors_keep_the_shape_the_classifier_reads():
    from formicary.agents.model.http import ChatEndpoint, ConnectError, HTTPStatusError

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with ScriptedServer(script=["fine"]) as srv:
        endpoint = ChatEndpoint(srv.base_url, "")
        srv.fail_next("429", retry_after=3)
        with pytest.raises(HTTPStatusError) as limited:
            await endpoint.post(body, 5)
        assert limited.value.status_code == 429 and limited.value.response.headers["retry-after"] == "3"
        reply = await endpoint.post(body, 5)
        assert reply["choices"][0]["message"]["content"] == "fine"
        srv.fail_next("hang")
        with pytest.raises(TimeoutError):
            await endpoint.post(body, 0.3)
        await endpoint.close()
        sent = srv.requests[1]
    assert sent["messages"] == body["messages"] and sent["model"] == "m"
    gone = ChatEndpoint(srv.base_url, "")  # the server has stopped: nothing answers
    with pytest.raises(ConnectError):
        await gone.post(body, 5)
    await gone.close()


def test_the_proxy_is_read_from_the_environment_once(monkeypatch):
    from formicary.agents.model.http import ChatEndpoint

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert ChatEndpoint("http://models.invalid/v1", "").proxy == "http://proxy.invalid:3128"
    monkeypatch.setenv("NO_PROXY", "models.invalid")
    assert ChatEndpoint("http://models.invalid/v1", "").proxy is None
