"""Endpoint pools against real scripted servers: calls spread over servers within their caps, a server that goes
down is taken out and probed back, and an outage of every server is waited out instead of failing tasks."""

from __future__ import annotations

import time

import anyio
import pytest
from pydantic import BaseModel

from formicary.agents.model.client import ModelClient
from formicary.agents.model.errors import EndpointError, find_endpoint_error
from formicary.agents.session import events as ev
from formicary.agents.session.engine import Engine
from formicary.agents.settings import ModelSettings, Settings
from formicary.store import db as store_db
from tests.bench_team import bench_goal
from tests.gitrepo import make_repo
from tests.scripted_server import Failure, ScriptedServer, spawn_server_process, stop_server_process

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    n: int


def answer(body) -> str:
    return '{"n": 1}'


async def ask_many(client: ModelClient, settings: ModelSettings, n: int) -> list[BaseModel]:
    replies = []

    async def one() -> None:
        reply = await client.complete(
            settings, [{"role": "user", "content": "hi"}], "a", Answer, role="worker"
        )
        replies.append(reply.data)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return replies


def test_endpoints_configured_as_tables_or_urls():
    settings = Settings.model_validate(
        {
            "model": {
                "base_url": "http://127.0.0.1:1/v1",
                "max_concurrency": 3,
                "endpoints": [
                    "http://127.0.0.1:2/v1",
                    {"base_url": "http://127.0.0.1:3/v1", "max_concurrency": 8},
                ],
            },
            "roles": {"judge": {"endpoints": ["http://127.0.0.1:4/v1"], "base_url": ""}},
        }
    )
    servers = settings.role("worker").servers()
    assert [(s.base_url[-4:], s.max_concurrency) for s in servers] == [("1/v1", 3), ("2/v1", 3), ("3/v1", 8)]
    assert [s.base_url for s in settings.role("judge").servers()] == ["http://127.0.0.1:4/v1"]
    assert not settings.uses_embedded_server()


async def test_calls_spread_over_the_pool_within_each_cap():
    with (
        ScriptedServer(responder=answer, latency=0.2) as a,
        ScriptedServer(responder=answer, latency=0.2) as b,
        ScriptedServer(responder=answer, latency=0.2) as c,
    ):
        settings = ModelSettings(
            model="scripted-model",
            max_concurrency=2,
            endpoints=[a.base_url, b.base_url, {"base_url": c.base_url, "max_concurrency": 4}],
        )
        client = ModelClient()
        replies = await ask_many(client, settings, 40)
        per_endpoint = client.calls_per_endpoint()
        await client.aclose()
    assert len(replies) == 40
    assert (a.max_in_flight, b.max_in_flight, c.max_in_flight) == (2, 2, 4)
    assert per_endpoint[c.base_url] > per_endpoint[a.base_url] > 0 and per_endpoint[b.base_url] > 0


async def test_a_server_that_goes_down_is_taken_out_and_probed_back():
    proc, url = spawn_server_process(responder="tests.test_pools:answer", latency=0.05)
    port = url.split(":")[2].split("/")[0]
    notices: list[str] = []
    with ScriptedServer(responder=answer, latency=0.05) as steady:
        settings = ModelSettings(model="scripted-model", max_concurrency=2, endpoints=[url, steady.base_url])
        client = ModelClient()
        client.notices.append(notices.append)
        try:
            await ask_many(client, settings, 10)
            stop_server_process(proc)
            before = steady.request_count
            assert len(await ask_many(client, settings, 20)) == 20  # none failed: the live one took them
            assert steady.request_count - before >= 20
            proc, _ = spawn_server_process(
                responder="tests.test_pools:answer", latency=0.05, extra_args=[f"--port={port}"]
            )
            deadline = time.monotonic() + 30
            while client.pool(settings, "worker").members[0].up is False and time.monotonic() < deadline:
                await ask_many(client, settings, 4)
                await anyio.sleep(0.2)
            assert client.pool(settings, "worker").members[0].up
        finally:
            stop_server_process(proc)
            await client.aclose()
    assert any("taken out" in n for n in notices) and any("is back" in n for n in notices)


async def test_no_server_answering_past_the_outage_limit_is_one_endpoint_error():
    settings = ModelSettings(model="m", endpoints=["http://127.0.0.1:9/v1"], outage_limit=1.5, retries=0)
    client = ModelClient()
    started = time.monotonic()
    with pytest.raises(ExceptionGroup) as caught:
        await ask_many(client, settings, 5)
    await client.aclose()
    assert 1.0 < time.monotonic() - started < 20
    errors = caught.value.exceptions
    assert len(errors) == 5 and all(isinstance(e, EndpointError) for e in errors)
    line = find_endpoint_error(caught.value).line
    assert line.startswith("the worker model endpoint http://127.0.0.1:9/v1 failed: no answer for 2s")


async def test_the_server_stopped_for_30s_mid_run_no_task_fails(tmp_path):
    """The issue's scenario: a 30-second outage of the only server; calls wait, and every task lands."""
    proc, url = spawn_server_process(responder="tests.bench_team:bench_responder", latency=0.1)
    port = url.split(":")[2].split("/")[0]
    tasks, warnings = 24, []
    settings = Settings.model_validate(
        {
            "model": {"base_url": url, "model": "scripted-model", "retries": 2, "timeout": 10},
            "limits": {"workers": 6, "cycles": 1, "planner_depth": 0, "tasks_per_cycle": tasks,
                       "followups_per_planner": 0, "steps_per_worker": 12},
            "sandbox": {"mode": "none"},
        }
    )  # fmt: skip
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"}, n_files=20)
    engine = Engine.create(settings, repo, bench_goal(tasks, 6, 20), db_path=tmp_path / "o.db")
    engine.subscribe(lambda e: warnings.append(e.message) if isinstance(e, ev.WarningRaised) else None)

    async def outage() -> None:
        nonlocal proc
        while engine.state is None or engine.state.commits < 4:
            await anyio.sleep(0.1)
        await anyio.to_thread.run_sync(stop_server_process, proc)
        await anyio.sleep(30)
        proc, _ = await anyio.to_thread.run_sync(
            lambda: spawn_server_process(
                responder="tests.bench_team:bench_responder", latency=0.1, extra_args=[f"--port={port}"]
            )
        )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(outage)
            outcome = await engine.run()
    finally:
        stop_server_process(proc)
    db = store_db.connect(tmp_path / "o.db")
    statuses = [r["status"] for r in db.query("SELECT status FROM tasks WHERE kind = 'work'")]
    assert outcome.status == "done", outcome.reason
    assert statuses.count("done") == tasks and "failed" not in statuses
    refused = db.execute("SELECT COUNT(*) FROM llm_calls WHERE error LIKE 'cannot connect%'").fetchone()[0]
    assert refused >= 1  # the outage was real: calls hit the stopped server
    assert any("waiting for the model endpoint" in w for w in warnings)
    assert any("answers again" in w for w in warnings)


async def test_a_dead_embedded_server_is_restarted_on_its_port_when_probed(tmp_path):
    import os
    import signal

    from formicary.agents.model.server import EmbeddedServer
    from tests.test_model_setup import _fake_install

    server = EmbeddedServer(_fake_install(tmp_path), cache=tmp_path, threads=2)
    url = await server.start()
    try:
        client = ModelClient(embedded_base_url=url)
        client.revivers[url] = server.revive
        endpoint = client.pool(ModelSettings(model="m"), "worker").members[0]
        first = server.pid
        os.kill(first, signal.SIGKILL)
        await server.wait()
        endpoint.mark_down("cannot connect (ConnectError)")
        assert await client._probe(endpoint, "m")  # restarted, then answered GET /models
        assert server.pid != first and server.base_url == url
        assert not await server.revive()  # alive: nothing to do
        await client.aclose()
    finally:
        await server.stop()


def test_the_status_bar_shows_calls_per_endpoint_of_a_pool():
    from formicary.agents.session import events as ev
    from formicary.view.follow import StatusView, _count_call
    from formicary.widgets.status_bar import status_text

    counts: tuple = ()
    for url in ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1", "http://127.0.0.1:8001/v1", None]:
        counts = _count_call(counts, ev.LlmCall(role="worker", endpoint=url).endpoint)
    assert counts == (("http://127.0.0.1:8001/v1", 2), ("http://127.0.0.1:8002/v1", 1))
    text = status_text(StatusView(endpoint_calls=counts, started_at=0.0), 1.0, "live", compact=False).plain
    assert "calls 127.0.0.1:8001 2 · 127.0.0.1:8002 1" in text
    alone = StatusView(endpoint_calls=counts[:1], started_at=0.0)
    assert "calls" not in status_text(alone, 1.0, "live", compact=False).plain


async def test_a_server_failing_its_calls_stays_out_until_a_real_call_works():
    with ScriptedServer(responder=answer) as sick, ScriptedServer(responder=answer) as well:
        sick.fail_always = Failure("500")
        settings = ModelSettings(
            model="scripted-model", max_concurrency=2, endpoints=[sick.base_url, well.base_url]
        )
        client = ModelClient()
        try:
            replies = await ask_many(client, settings, 30)
            endpoint = client.pool(settings, "worker").members[0]
            assert len(replies) == 30 and not endpoint.up  # taken out after a few failed calls
            failed_on_sick = sick.request_count
            assert failed_on_sick <= 8
            endpoint.next_probe = 0.0
            assert not await client._probe(endpoint, "scripted-model")  # GET /models works, the call does not
            sick.fail_always = None
            assert await client._probe(endpoint, "scripted-model")
        finally:
            await client.aclose()


async def test_cancelled_waiters_give_their_slots_back():
    with ScriptedServer(responder=answer, latency=0.3) as srv:
        settings = ModelSettings(model="scripted-model", base_url=srv.base_url, max_concurrency=2)
        client = ModelClient()
        with anyio.move_on_after(0.5):  # 20 calls, 2 at a time: most are waiting when cancelled
            await ask_many(client, settings, 20)
        endpoint = client.pool(settings, "worker").members[0]
        assert endpoint.in_flight == 0 and client.pool(settings, "worker").waiting == 0
        assert len(await ask_many(client, settings, 4)) == 4
        await client.aclose()
