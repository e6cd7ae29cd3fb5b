"""The landing gate end to end: the engine, scripted workers and a real check on a real repository.

Only work that makes the shared branch no worse lands: a syntax error, a deleted tested function and a
step-limited worker's broken partial work stay on their task branches; a fix lands; a refusal goes back to the
worker and its fixed retry lands; the check runs once per tree; and walking the shared branch's first-parent
history, the check's result never gets worse.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from formicary.agents.session.engine import Engine
from formicary.store import db as store_db
from formicary.store import queries
from tests.gitrepo import git, make_repo
from tests.history import check_history, first_parent_history, regressions
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, read, task, write
from tests.test_engine import rows, settings_for

pytestmark = pytest.mark.anyio

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
STATS = "def mean(xs):\n    return 0\n"
FIXED_STATS = "def mean(xs):\n    return sum(xs) / len(xs)\n"
TESTS = {
    "test_calc.py": (
        "import unittest\n\nfrom calc import add, sub\n\n\nclass TestCalc(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
        "    def test_sub(self):\n        self.assertEqual(sub(5, 3), 2)\n"
    ),
    "test_stats.py": (
        "import unittest\n\nfrom stats import mean\n\n\nclass TestStats(unittest.TestCase):\n"
        "    def test_mean(self):\n        self.assertEqual(mean([1, 2, 3]), 2)\n"
    ),
}
CHECK = "python3 -m unittest"


def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": CALC, "stats.py": STATS, "README.md": "x\n", **TESTS})


def gate_settings(server, check: str = CHECK, **limits):
    settings = settings_for(server, cycles=1, **limits)
    settings.check_command = check
    return settings


async def assert_never_worse(repo: Path, branch: str, tmp_path: Path, command: str = CHECK) -> int:
    """Run the check on every first-parent commit of ``branch``; each is no worse than the one before."""
    history = await check_history(repo, branch, command, tmp_path / "history")
    assert not regressions(history), regressions(history)
    return len(history)


async def test_only_the_fix_lands_syntax_errors_and_deleted_functions_stay_on_their_branches(tmp_path):
    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Add helpers"), task("Simplify calc"), task("Fix mean")])],
        work={
            "Add helpers": [write("helpers.py", 'def helper():\n    """never closed\n'), finish("helpers")],
            "Simplify calc": [write("calc.py", "def add(a, b):\n    return a + b\n"), finish("simpler")],
            "Fix mean": [write("stats.py", FIXED_STATS), finish("fixed mean")],
        },
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server), repo, "improve", db_path=db)
        outcome = await engine.run()
        prompts = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "action"]
    assert outcome.status == "stopped", outcome.reason  # two tasks failed: the judge's done is not taken
    branch = engine.git.branch
    tree = git(repo, "ls-tree", "-r", "--name-only", branch).split()
    assert "helpers.py" not in tree
    assert git(repo, "show", f"{branch}:calc.py") + "\n" == CALC
    assert git(repo, "show", f"{branch}:stats.py") + "\n" == FIXED_STATS
    assert len(first_parent_history(repo, branch)) == 2  # the base and the one fix

    tasks = {t["title"]: t for t in rows(db, "SELECT * FROM tasks WHERE kind = 'work'")}
    assert tasks["Fix mean"]["status"] == "done"
    assert tasks["Add helpers"]["status"] == "failed" and "no longer parse" in tasks["Add helpers"]["error"]
    assert tasks["Simplify calc"]["status"] == "failed" and "landing gate" in tasks["Simplify calc"]["error"]
    for title, path in (("Add helpers", "helpers.py"), ("Simplify calc", "calc.py")):
        kept = rows(db, "SELECT branch, sha FROM commits WHERE task_id = ?", tasks[title]["id"])[0]
        assert git(repo, "rev-parse", kept["branch"]) != "" and path in git(
            repo, "show", "--name-only", "--format=", kept["sha"]
        )
    gates = rows(db, "SELECT * FROM gates ORDER BY created_at")
    by_task = {}
    for g in gates:
        by_task.setdefault(g["task_id"], []).append(g)
    helpers = by_task[tasks["Add helpers"]["id"]]
    assert {g["verdict"] for g in helpers} == {"refused"} and "helpers.py" in helpers[0]["parse_errors"]
    calc = by_task[tasks["Simplify calc"]["id"]]
    assert {g["verdict"] for g in calc} == {"refused"}
    assert "unittest.loader._FailedTest.test_calc" in calc[0]["new_failures"]
    assert {g["verdict"] for g in by_task[tasks["Fix mean"]["id"]]} == {"passed"}
    refusal = next(
        m["content"]
        for b in prompts
        for m in b["messages"]
        if m["role"] == "user" and m["content"].startswith("REFUSED") and "test_calc" in m["content"]
    )
    assert "ImportError" in refusal  # the output's tail says what broke
    session = rows(db, "SELECT check_command, check_source FROM sessions")[0]
    assert session == {"check_command": CHECK, "check_source": "config"}
    assert await assert_never_worse(repo, branch, tmp_path) == 2


async def test_a_refusal_goes_back_to_the_worker_and_its_fixed_retry_lands(tmp_path):
    repo = project(tmp_path)
    broken = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
    fixed = CALC + "\n\ndef mul(a, b):\n    return a * b\n"
    team = ScriptedTeam(
        root_plans=[plan([task("Add mul")])],
        work={"Add mul": [write("calc.py", broken), finish("mul")]},
        on_refusal={"Add mul": [read("calc.py"), write("calc.py", fixed), finish("mul, sub kept")]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server), repo, "add mul", db_path=db)
        outcome = await engine.run()
        prompts = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "action"]
    assert outcome.status == "done", outcome.reason
    branch = engine.git.branch
    assert git(repo, "show", f"{branch}:calc.py") + "\n" == fixed
    task_row = rows(db, "SELECT * FROM tasks WHERE title = 'Add mul'")[0]
    assert task_row["status"] == "done"
    verdicts = [g["verdict"] for g in rows(db, "SELECT verdict FROM gates ORDER BY created_at")]
    assert verdicts == ["refused", "passed"]
    events = queries.events_since(store_db.connect(db), engine.session_id)
    landed = next(e["data"] for e in events if e["kind"] == "commit_landed")
    assert landed["refusals"] == 1
    refused_prompt = next(
        b for b in prompts if any(m["content"].startswith("REFUSED") for m in b["messages"])
    )
    text = next(m["content"] for m in refused_prompt["messages"] if m["content"].startswith("REFUSED"))
    assert (
        "newly failing: unittest.loader._FailedTest.test_calc" in text and "cannot import name 'sub'" in text
    )
    assert await assert_never_worse(repo, branch, tmp_path) == 2


async def test_a_step_limited_workers_broken_partial_work_does_not_land(tmp_path):
    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Rewrite calc")])],
        work={"Rewrite calc": [write("calc.py", "def add(a, b):\n    return (a +\n"), read("calc.py")]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, steps_per_worker=3), repo, "goal", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "stopped", outcome.reason  # its only task failed: not a success
    branch = engine.git.branch
    assert git(repo, "show", f"{branch}:calc.py") + "\n" == CALC
    row = rows(db, "SELECT * FROM tasks WHERE title = 'Rewrite calc'")[0]
    assert row["status"] == "failed"
    assert "unfinished" in row["error"] and "step limit" in row["error"] and "no longer parse" in row["error"]
    assert "work kept on formicary-tasks/" in row["error"]
    kept = rows(db, "SELECT branch, sha FROM commits WHERE task_id = ?", row["id"])[0]
    assert "(a +" in git(repo, "show", f"{kept['sha']}:calc.py")


async def test_a_step_limited_workers_good_partial_work_lands_and_says_unfinished(tmp_path):
    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Fix mean")])],
        work={"Fix mean": [write("stats.py", FIXED_STATS), read("stats.py")]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, steps_per_worker=3), repo, "goal", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    assert git(repo, "show", f"{engine.git.branch}:stats.py") + "\n" == FIXED_STATS
    row = rows(db, "SELECT status, handoff FROM tasks WHERE title = 'Fix mean'")[0]
    assert row["status"] == "done" and "unfinished" in row["handoff"] and "step limit" in row["handoff"]


async def test_each_tree_is_checked_once_and_history_never_gets_worse(tmp_path):
    repo = project(tmp_path)
    log = tmp_path / "check-runs.log"
    # The check names its tree by hashing the checked-out files (sandbox off in tests, so it may write here).
    check = f"{CHECK}; rc=$?; cat *.py *.txt 2>/dev/null | sha1sum >> {log}; exit $rc"
    titles = [f"Note {i}" for i in range(5)]
    team = ScriptedTeam(
        root_plans=[plan([task(t) for t in titles] + [task("Fix mean")])],
        work={t: [write(f"note{i}.txt", f"{i}\n"), finish()] for i, t in enumerate(titles)}
        | {"Fix mean": [write("stats.py", FIXED_STATS), finish()]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team, latency=0.02) as server:
        engine = Engine.create(gate_settings(server, check, workers=6), repo, "notes", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    assert all(t["status"] == "done" for t in rows(db, "SELECT status FROM tasks WHERE kind = 'work'"))
    assert engine.gate is not None and engine.gate.tip_runs and set(engine.gate.tip_runs.values()) == {1}
    gate_checks = log.read_text().splitlines()
    judged = 1  # the judge's check of the final tip may be a cached result or one more run
    assert len(gate_checks) == len(set(gate_checks)) or len(gate_checks) - len(set(gate_checks)) <= judged
    assert engine.gate.check_runs == len(set(gate_checks))
    assert await assert_never_worse(repo, engine.git.branch, tmp_path, CHECK) == 7


async def test_detected_check_and_parse_gate_without_a_check(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n", "conf.json": "{}\n"})
    team = ScriptedTeam(
        root_plans=[plan([task("Bad json"), task("Good toml"), task("Notes")])],
        work={
            "Bad json": [write("conf.json", '{"a": 1,}\n'), finish()],
            "Good toml": [write("conf.toml", "[a]\nb = 1\n"), finish()],
            "Notes": [write("notes.txt", "((\n"), finish()],
        },
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, ""), repo, "goal", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "stopped", outcome.reason  # 'Bad json' failed: not a success
    assert engine.check is not None and not engine.check.enabled and engine.check.source == "detected"
    tree = git(repo, "ls-tree", "-r", "--name-only", engine.git.branch).split()
    assert "conf.toml" in tree and "notes.txt" in tree
    assert git(repo, "show", f"{engine.git.branch}:conf.json") == "{}"
    failed = rows(db, "SELECT error FROM tasks WHERE title = 'Bad json'")[0]["error"]
    assert "conf.json" in failed and "no longer parse" in failed
    started = rows(db, "SELECT data FROM events WHERE kind = 'session_started'")[0]["data"]
    assert "none found (parse gate only)" in started


def test_headless_run_shows_the_check_and_the_gates_refusals(tmp_path):
    import os
    import sys

    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Simplify calc")])],
        work={"Simplify calc": [write("calc.py", "def add(a, b):\n    return a + b\n"), finish()]},
    )
    env = dict(os.environ)
    env.update(
        FORMICARY_SANDBOX__MODE="none",
        FORMICARY_LIMITS__CYCLES="1",
        FORMICARY_LIMITS__GATE_ROUNDS="0",
    )
    with ScriptedServer(responder=team) as server:
        env["FORMICARY_MODEL__BASE_URL"] = server.base_url
        args = [
            "run",
            "--repo",
            str(repo),
            "--goal",
            "simplify",
            "--headless",
            "--db",
            str(tmp_path / "f.db"),
        ]
        done = subprocess.run(
            [sys.executable, "-m", "formicary", *args, "--check", CHECK],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        empty = subprocess.run(
            [sys.executable, "-m", "formicary", *args, "--check", " "],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    out = done.stdout
    assert f"check: {CHECK} (--check)" in out, out + done.stderr
    assert "gate refused" in out and "fail with this change" in out
    assert "gate: 0 passed, 1 refused, 2 check run(s)" in out
    assert empty.returncode == 2 and empty.stderr.strip().splitlines() == [
        'formicary: --check needs a command, or "none" to run without one'
    ]


async def test_the_judges_done_is_not_taken_while_a_task_failed_without_landing(tmp_path):
    """Cycle 1's only task fails (its fix never parses) and the judge says done anyway: the cycle goes on, the
    next one lands the fix, and only then does the session end done."""
    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Fix mean")]), plan([task("Fix mean again")])],
        work={
            "Fix mean": [write("stats.py", "def mean(xs):\n    return (\n"), finish("fixed")],
            "Fix mean again": [write("stats.py", FIXED_STATS), finish("fixed")],
        },
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        settings = settings_for(server, cycles=3, gate_rounds=1)
        settings.check_command = CHECK
        engine = Engine.create(settings, repo, "fix mean", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    verdicts = rows(db, "SELECT decision, reason FROM verdicts ORDER BY rowid")
    assert [v["decision"] for v in verdicts] == ["continue", "done"]
    assert "1 task(s) failed and did not land ('Fix mean')" in verdicts[0]["reason"]
    assert git(repo, "show", f"{engine.git.branch}:stats.py") + "\n" == FIXED_STATS


@pytest.mark.parametrize("check", [CHECK, "none"])
async def test_a_task_whose_change_another_task_landed_reports_no_commit_of_its_own(tmp_path, check):
    """Two tasks write the same fix: one lands it; the other's merge changes nothing, so it must not report the
    other's commit as its own (before: both handoffs named one commit and both printed 'landed')."""
    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Fix mean"), task("Fix mean too")])],
        work={t: [write("stats.py", FIXED_STATS), finish("fixed")] for t in ("Fix mean", "Fix mean too")},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team, latency=0.05) as server:
        engine = Engine.create(gate_settings(server, check, workers=2), repo, "fix mean", db_path=db)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    tasks = rows(db, "SELECT title, status, handoff FROM tasks WHERE kind = 'work' ORDER BY title")
    assert [t["status"] for t in tasks] == ["done", "done"]
    commits = [json.loads(t["handoff"]).get("commit") for t in tasks]
    assert len([c for c in commits if c]) == 1, tasks
    assert any("the shared branch had its change already" in t["handoff"] for t in tasks)
    statuses = sorted(r["status"] for r in rows(db, "SELECT status FROM commits"))
    assert statuses == ["already", "integrated"]
    assert len(first_parent_history(repo, engine.git.branch)) == 2


async def test_the_summary_never_shows_a_later_tips_check_as_the_sessions_start(tmp_path):
    """The first landing passes outright (the tip's check is not needed), the second is refused against the new
    tip, which passes: that result is not the start's (at the start mean was broken and the check failed; the
    summary has that from what cycle 1's judge was told)."""
    from formicary.summary import load_summary

    repo = project(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Fix mean"), task("Simplify calc")])],
        work={
            "Fix mean": [write("stats.py", FIXED_STATS), finish()],
            "Simplify calc": [write("calc.py", "def add(a, b):\n    return a + b\n"), finish()],
        },
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, workers=1, gate_rounds=0), repo, "fix", db_path=db)
        await engine.run()
    gates = rows(db, "SELECT verdict, tip_exit FROM gates ORDER BY created_at")
    assert [(g["verdict"], g["tip_exit"]) for g in gates] == [("passed", None), ("refused", 0)]
    summary = load_summary(store_db.connect(db), engine.session_id)
    # not "passed" (the later tip's result): failed, as cycle 1's judge was told
    assert summary.check_start is not None and summary.check_start.passed is False


async def test_unfinished_work_on_a_task_whose_tests_passed_does_not_land(tmp_path):
    """Seen on an unseen goal: a worker planned to "fix" a working function ran out of steps and landed a new,
    unused function beside it (the gate passed it: nothing got worse). Unfinished work must show progress on
    its task's tests to land."""
    repo = project(tmp_path)
    junk = CALC + "\n\ndef add_with_spaces(a, b):\n    return a + b\n"
    team = ScriptedTeam(
        root_plans=[plan([task("Fix add()", "Make add() handle spaces.", ["calc.py", "test_calc.py"])])],
        work={"Fix add()": [write("calc.py", junk), read("calc.py"), read("test_calc.py")]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, steps_per_worker=3), repo, "goal", db_path=db)
        await engine.run()
    assert git(repo, "show", f"{engine.git.branch}:calc.py") + "\n" == CALC
    row = rows(db, "SELECT * FROM tasks WHERE title = 'Fix add()'")[0]
    assert row["status"] == "failed"
    assert "no better than before its first edit: not landed; work kept on formicary-tasks/" in row["error"]
    kept = rows(db, "SELECT sha FROM commits WHERE task_id = ?", row["id"])[0]
    assert "add_with_spaces" in git(repo, "show", f"{kept['sha']}:calc.py")


async def test_unfinished_work_that_fixed_some_of_its_tests_lands(tmp_path):
    repo = make_repo(
        tmp_path / "repo",
        {"calc.py": "def add(a, b):\n    return 0\n\n\ndef sub(a, b):\n    return 0\n", **TESTS},
    )
    half = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return 0\n"
    team = ScriptedTeam(
        root_plans=[plan([task("Fix add() and sub()", "Fix add() and sub().", ["calc.py", "test_calc.py"])])],
        work={"Fix add() and sub()": [write("calc.py", half), read("calc.py"), read("test_calc.py")]},
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server, steps_per_worker=3), repo, "goal", db_path=db)
        await engine.run()
    assert git(repo, "show", f"{engine.git.branch}:calc.py") + "\n" == half
    row = rows(db, "SELECT status, handoff FROM tasks WHERE title = 'Fix add() and sub()'")[0]
    assert row["status"] == "done" and "unfinished" in row["handoff"]
