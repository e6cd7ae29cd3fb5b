"""Model faults during a session: the session goes on, a task that keeps failing ends failed with its reason,
and a storm of 429s lowers the endpoint's concurrency instead of failing the run."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from formicary.agents.session.engine import Engine
from formicary.agents.session.events import LlmCall
from formicary.agents.settings import Settings
from formicary.store import db as store_db
from formicary.store.packing import unpack
from formicary.store.queries import dictionaries
from tests.gitrepo import make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, task, write

pytestmark = pytest.mark.anyio

FAULTS = ["500", "429", "hang", "malformed_json", "truncated_stream"]


def settings_for(server, **limits) -> Settings:
    return Settings.model_validate(
        {
            "model": {
                "base_url": server.base_url,
                "model": "scripted-model",
                "retries": 6,
                "timeout": 1.0,
                "max_concurrency": 8,
            },
            "limits": {"workers": 4, "cycles": 2, "steps_per_worker": 6, "task_attempts": 2} | limits,
            "sandbox": {"mode": "none"},
        }
    )


def rows(db_path, sql, *params):
    return list(store_db.connect(db_path).query(sql, params))


async def test_fault_every_mode_injected_and_the_session_finishes(tmp_path):
    rng = random.Random(7)
    injected: dict[str, int] = {}

    def failures(body, n):
        if n > 0 and rng.random() < 0.3:
            mode = FAULTS[sum(injected.values()) % len(FAULTS)]
            injected[mode] = injected.get(mode, 0) + 1
            return mode
        return None

    team = ScriptedTeam(
        root_plans=[plan([task(f"t{i}") for i in range(6)])],
        default_work=lambda title, step: write(f"{title}.txt", "x\n") if step == 0 else finish(),
    )
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=team, failures=failures, retry_after=0.05) as server:
        engine = Engine.create(settings_for(server), repo, "write", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    assert set(injected) == set(FAULTS), injected
    assert outcome.status == "done", outcome.reason
    errors = rows(tmp_path / "f.db", "SELECT COUNT(*) n FROM llm_calls WHERE error IS NOT NULL")[0]["n"]
    assert errors >= sum(injected.values()) - 1
    assert (
        rows(tmp_path / "f.db", "SELECT COUNT(*) n FROM tasks WHERE kind='work' AND status='done'")[0]["n"]
        == 6
    )


@pytest.mark.parametrize("bad", ["prose", "schema"])
async def test_fault_bad_replies_become_observations_then_the_task_fails(tmp_path, bad):
    def broken(title, step):
        return (
            "I think I will edit the file now." if bad == "prose" else {"thought": "x", "action": {"nme": 1}}
        )

    team = ScriptedTeam(
        root_plans=[plan([task("stubborn"), task("fine")])],
        default_work=lambda title, step: write("ok.txt", "ok\n") if step == 0 else finish(),
        work={"stubborn": []},
    )
    team.work.pop("stubborn")
    original = team._action

    def action(body):
        text = json.dumps(body["messages"][1])
        if "TASK: stubborn" in text:
            reply = broken("stubborn", 0)
            return reply if isinstance(reply, dict) else {"__raw__": reply}
        return original(body)

    team._action = action

    def responder(body):
        out = team(body)
        data = json.loads(out)
        return data["__raw__"] if isinstance(data, dict) and "__raw__" in data else out

    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=responder) as server:
        engine = Engine.create(settings_for(server, cycles=1), repo, "write", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    # The judge said done, but 'stubborn' failed and never landed: not a success (the one cycle was the budget).
    assert outcome.status == "stopped" and "cycle budget" in outcome.reason
    db = tmp_path / "f.db"
    verdict = rows(db, "SELECT decision, reason FROM verdicts")[0]
    assert (
        verdict["decision"] == "continue"
        and "1 task(s) failed and did not land ('stubborn')" in verdict["reason"]
    )
    stubborn = rows(db, "SELECT * FROM tasks WHERE title = 'stubborn'")[0]
    assert stubborn["status"] == "failed" and "step limit" in stubborn["error"]
    assert rows(db, "SELECT status FROM tasks WHERE title = 'fine'")[0]["status"] == "done"
    invalid = rows(db, "SELECT observation FROM actions WHERE name = 'invalid'")
    shared = dictionaries(sqlite3.connect(db))  # observations are compressed against their action's first
    assert len(invalid) == 6 and all(
        unpack(r["observation"], shared=shared).startswith("ERROR") for r in invalid
    )


async def test_fault_endpoint_keeps_failing_task_ends_failed_not_retried_forever(tmp_path):
    def failures(body, n):
        text = json.dumps(body["messages"][1]) if len(body["messages"]) > 1 else ""
        return "500" if "TASK: doomed" in text else None

    team = ScriptedTeam(
        root_plans=[plan([task("doomed"), task("fine")])],
        default_work=lambda title, step: write(f"{title}.txt", "x\n") if step == 0 else finish(),
    )
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=team, failures=failures) as server:
        s = settings_for(server, cycles=1)
        s.model.retries = 2
        engine = Engine.create(s, repo, "write", db_path=tmp_path / "f.db")
        outcome = await engine.run()
        doomed_calls = sum(1 for b in server.requests if "TASK: doomed" in json.dumps(b["messages"]))
    assert outcome.status == "stopped", outcome.reason  # 'doomed' failed: the judge's done is not taken
    doomed = rows(tmp_path / "f.db", "SELECT * FROM tasks WHERE title = 'doomed'")[0]
    assert doomed["status"] == "failed" and "HTTP 500" in doomed["error"]
    assert doomed["attempts"] == 2
    assert doomed_calls == 2 * 3  # two attempts, each 1 call + 2 retries


async def test_fault_429_storm_lowers_concurrency_and_the_run_goes_on(tmp_path):
    def failures(body, n):
        return "429" if 5 <= n < 60 else None

    team = ScriptedTeam(
        root_plans=[plan([task(f"t{i}") for i in range(8)])],
        default_work=lambda title, step: write(f"{title}.txt", "x\n") if step == 0 else finish(),
    )
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=team, failures=failures, retry_after=0.05, latency=0.02) as server:
        s = settings_for(server, workers=8, cycles=1)
        s.model.retries = 30
        engine = Engine.create(s, repo, "write", db_path=tmp_path / "f.db")
        lowered = []
        engine.subscribe(
            lambda e: (
                lowered.append(engine.client.limiter(s.role("worker")).limit)
                if isinstance(e, LlmCall) and e.error
                else None
            )
        )
        outcome = await engine.run()
    assert outcome.status == "done"
    assert min(lowered) < 8
    assert (
        rows(tmp_path / "f.db", "SELECT COUNT(*) n FROM tasks WHERE kind='work' AND status='done'")[0]["n"]
        == 8
    )
