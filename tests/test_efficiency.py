"""The engine's hot paths stay cheap with hundreds of workers: repository map reuse, one HTTP session per endpoint.

The figures themselves come from ``bench/efficiency.py``; these tests pin the behaviour the figures rely on.
"""

from __future__ import annotations

import anyio
import pytest

from formicary.agents.git import repo_map as repo_map_module
from formicary.agents.model.client import ModelClient
from formicary.agents.session.engine import Engine
from formicary.agents.settings import ModelSettings, Settings
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def counted_maps(monkeypatch):
    """Count repository map regenerations."""
    calls: list[str] = []
    original = repo_map_module.repo_map

    async def counting(repo, ref):
        calls.append(ref)
        return await original(repo, ref)

    monkeypatch.setattr(repo_map_module, "repo_map", counting)
    return calls


async def opened_engine(tmp_path, server: ScriptedServer) -> Engine:
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "a.txt": "a\n"})
    settings = Settings.model_validate(
        {"model": {"base_url": server.base_url, "model": "m"}, "sandbox": {"mode": "none"}}
    )
    engine = Engine.create(settings, repo, "goal", db_path=tmp_path / "f.db")
    await engine.prepare()
    return engine


def move_tip(engine: Engine) -> str:
    """Land a commit on the shared branch the way integration does: a new tip the engine knows about."""
    root, tip = engine.git.root, engine.git.shared.tip
    new = git(root, "commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m", "landed meanwhile")
    git(root, "update-ref", f"refs/heads/{engine.git.branch}", new, tip)
    engine.git.shared.tip = new
    return new


async def test_workers_reuse_a_recent_map_and_planners_get_the_current_one(tmp_path, counted_maps):
    with ScriptedServer() as server:
        engine = await opened_engine(tmp_path, server)
        first = await engine.repo_map()
        assert "a.txt" in first and len(counted_maps) == 1
        new = move_tip(engine)
        assert await engine.repo_map(max_age=60) == first  # a worker: the map is seconds old, reused
        assert len(counted_maps) == 1
        current = await engine.repo_map()  # a planner: the tip moved, so a new map
        assert counted_maps == [counted_maps[0], new] and "landed meanwhile" in current
        assert await engine.repo_map() == current and len(counted_maps) == 2  # same tip: cached


async def test_concurrent_callers_share_one_regeneration(tmp_path, counted_maps):
    with ScriptedServer() as server:
        engine = await opened_engine(tmp_path, server)
        await engine.repo_map()
        move_tip(engine)
        results: list[str] = []

        async def ask() -> None:
            results.append(await engine.repo_map())

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
        assert len(counted_maps) == 2 and len(set(results)) == 1


async def test_one_http_session_per_endpoint_serves_every_call():
    with ScriptedServer(script=['{"n": 1}'], on_exhausted="repeat") as server:
        client = ModelClient()
        settings = ModelSettings(model="m", base_url=server.base_url, max_concurrency=300)
        endpoint = client.pool(settings).members[0]
        used = {id(client._transport(endpoint)) for _ in range(6)}
        assert len(used) == 1
        await client.aclose()
