"""llama.cpp endpoints: sampling extras, each agent kept on its slot, never more calls than slots, timings
recorded — the model client against the scripted server's real HTTP."""

from __future__ import annotations

import json

import anyio
import pytest
from pydantic import BaseModel

from formicary.agents.model.client import ModelClient
from formicary.agents.model.slots import SlotPool
from formicary.agents.settings import ModelSettings
from formicary.store import db as store_db
from formicary.store.writer import Writer
from tests.scripted_server import ScriptedServer

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    n: int


TIMINGS = {"prompt_n": 12, "prompt_ms": 140.5, "predicted_n": 4, "predicted_ms": 160.0, "cache_n": 300}


def settings(base_url: str, **over) -> ModelSettings:
    return ModelSettings(**({"base_url": base_url, "retries": 0, "timeout": 10, "max_concurrency": 4} | over))


async def ask(client: ModelClient, s: ModelSettings, agent: str) -> None:
    await client.complete(
        s, [{"role": "user", "content": agent}], "answer", Answer, role="worker", agent_id=agent
    )


async def test_llama_cpp_gets_repeat_penalty_and_a_slot_others_do_not():
    with ScriptedServer(responder=lambda body: json.dumps({"n": 1})) as server:
        client = ModelClient()
        await ask(client, settings(server.base_url, llama_cpp=True, repeat_penalty=1.1), "A")
        await ask(client, settings(server.base_url), "A")
        await client.aclose()
        llama, other = server.requests
    assert llama["repeat_penalty"] == 1.1 and llama["id_slot"] in range(4) and llama["cache_prompt"] is True
    assert not {"repeat_penalty", "id_slot", "cache_prompt"} & set(other)


async def test_an_agent_stays_on_its_slot_and_calls_never_exceed_the_slots(tmp_path):
    """The embedded server has 2 slots though 4 calls are allowed: 6 agents calling at once never have more
    than 2 in flight, and each agent's calls go to the slot it used before whenever that one is free."""
    with ScriptedServer(responder=lambda body: {"content": json.dumps({"n": 1}), "timings": TIMINGS},
                        latency=0.05) as server:  # fmt: skip
        writer = Writer(tmp_path / "f.db")
        client = ModelClient(writer, "S1", embedded_base_url=server.base_url, embedded_slots=2)
        s = settings("", max_concurrency=4)
        async with anyio.create_task_group() as group:
            for agent in ("A", "B", "C", "D", "E", "F"):
                group.start_soon(ask, client, s, agent)
        assert server.max_in_flight == 2
        for _ in range(3):  # two agents taking turns: each returns to its own slot
            await ask(client, s, "A")
            await ask(client, s, "B")
        await client.aclose()
        writer.flush()
        writer.close()
        tail = server.requests[-6:]
    slots = {b["messages"][0]["content"]: set() for b in tail}
    for body in tail:
        slots[body["messages"][0]["content"]].add(body["id_slot"])
    assert len(slots["A"]) == 1 and len(slots["B"]) == 1 and slots["A"] != slots["B"]
    rows = list(store_db.connect(tmp_path / "f.db").query("SELECT * FROM llm_calls"))
    assert len(rows) == 12
    assert all(r["prompt_ms"] == 140.5 and r["cached_tokens"] == 300 and r["slot"] in (0, 1) for r in rows)
    assert all(r["queue_ms"] is not None for r in rows)
    assert max(r["queue_ms"] for r in rows) > 0  # the first wave queued for the two slots


async def test_slot_pool_prefers_the_agents_own_slot_then_the_longest_idle():
    pool = SlotPool(3)
    a = await pool.acquire("A")
    b = await pool.acquire("B")
    await pool.release(a)
    await pool.release(b)
    again = await pool.acquire("B")
    assert again.slot == b.slot and again.reused
    other = await pool.acquire("C")  # slot 2 was never used: idle longest
    assert other.slot not in (a.slot, b.slot) and not other.reused
    assert pool.idle == 1


async def test_a_spare_draw_takes_only_a_slot_no_other_agent_claims_and_keeps_it():
    pool = SlotPool(3)
    a = await pool.acquire("A")
    await pool.release(a)  # free, but A's prompt is in its cache
    b = await pool.acquire("B")  # busy
    assert pool.spares("B/") == 1  # A's slot is not B's to take
    spare = pool.spare("B/1")
    assert spare is not None and spare.slot not in (a.slot, b.slot) and not spare.reused
    assert pool.spare("B/2") is None  # nothing else is free and unclaimed: no wait, no draw
    await pool.release(spare)
    again = pool.spare("B/1")  # its own slot again: its cached prompt is reused
    assert again is not None and again.slot == spare.slot and again.reused
    await pool.release(again)
    await pool.release(b)
    pool.forget("B")  # B ended: its slot and its extra draws' slot are free for anyone's spare draws
    assert pool.spares("C/") == 2 and pool.spare("A/1").slot != a.slot


def test_no_spare_slot_while_every_slot_is_wanted_by_a_busy_worker():
    """At a session's start no agent has claimed a slot, yet every worker is about to ask for one: an extra draw
    then would hold a slot a worker waits for (measured: three first calls queued 60 s behind one worker's four
    drafts). Spare slots are what the busy workers leave over."""
    client = ModelClient()
    settings = ModelSettings(base_url="http://127.0.0.1:9/v1", llama_cpp=True, max_concurrency=4)
    assert client.spare_slots(settings, "A", callers=4) == 0
    assert client.spare_slots(settings, "A", callers=2) == 2
    assert client.spare_slots(settings, "A", callers=1) == 3
    assert client.spare_slots(settings.model_copy(update={"llama_cpp": False}), "A", callers=1) == 0
