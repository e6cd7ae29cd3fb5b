"""End to end: the engine against the scripted server on a real temporary repository.

A goal the scripted planner splits into tasks plus one sub-planner; workers that write files, one pair of them
conflicting on one line; a judge that says continue once, then done.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
import pytest

from formicary.agents.session.engine import Engine
from formicary.agents.settings import Settings
from formicary.store import db as store_db
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, read, run, task, write

pytestmark = pytest.mark.anyio

MERGED = "one\ntwo\n"


def team() -> ScriptedTeam:
    return ScriptedTeam(
        root_plans=[
            plan(
                [task("Add alpha", files=["alpha.txt"]), task("Shared one"), task("Shared two")],
                [{"title": "Docs area", "scope": "Write the guide"}],
            ),
            plan([task("Add beta")]),
        ],
        sub_plans={"Docs area": plan([task("Write guide")])},
        work={
            "Add alpha": [read("README.md"), write("alpha.txt", "alpha\n"), finish("added alpha")],
            "Shared one": [write("shared.txt", "one\n"), finish("one")],
            "Shared two": [write("shared.txt", "two\n"), finish("two")],
            "Write guide": [write("docs/guide.md", "# Guide\n"), finish("guide", notes="short guide")],
            "Add beta": [write("beta.txt", "beta\n"), finish("added beta")],
        },
        on_conflict={
            t: [write("shared.txt", MERGED), finish("merged both")] for t in ("Shared one", "Shared two")
        },
        verdicts=[
            {"decision": "continue", "reason": "beta missing", "notes": "add beta"},
            {"decision": "done", "reason": "all there", "notes": ""},
        ],
    )


def settings_for(server: ScriptedServer, **limits) -> Settings:
    return Settings.model_validate(
        {
            "model": {
                "base_url": server.base_url,
                "model": "scripted-model",
                "retries": 2,
                "timeout": 10,
                "max_concurrency": 16,
            },
            "limits": {"workers": 4, "cycles": 4, "planner_depth": 1} | limits,
            "sandbox": {"mode": "none"},
        }
    )


def rows(db_path, sql, *params):
    return list(store_db.connect(db_path).query(sql, params))


async def test_two_cycles_with_subplanner_conflict_and_judge(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "shared.txt": "base\n"})
    operator_head = git(repo, "rev-parse", "HEAD")
    db_path = tmp_path / "f.db"
    scripted = team()
    with ScriptedServer(responder=scripted, latency=0.05) as server:
        # 3 workers for 4 planned items: a plan the workers cannot all start at once keeps its sub-planner
        engine = Engine.create(settings_for(server, workers=3), repo, "Add the files", db_path=db_path)
        outcome = await engine.run()
        requests = server.request_count
        assert not server.errors
    assert outcome.status == "done", outcome.reason

    branch = engine.git.branch
    tree = set(git(repo, "ls-tree", "-r", "--name-only", branch).split())
    assert {"alpha.txt", "docs/guide.md", "beta.txt", "shared.txt", "README.md"} <= tree
    assert git(repo, "show", f"{branch}:shared.txt") + "\n" == MERGED
    assert git(repo, "rev-parse", "HEAD") == operator_head
    assert git(repo, "status", "--porcelain") == ""

    sid = engine.session_id
    tasks = rows(db_path, "SELECT * FROM tasks WHERE session_id = ?", sid)
    by_title = {t["title"]: t for t in tasks}
    by_id = {t["id"]: t for t in tasks}
    sub = by_title["Docs area"]
    assert sub["kind"] == "subplanner" and by_id[sub["parent_id"]]["kind"] == "planner"
    assert by_title["Write guide"]["parent_id"] == sub["id"]
    work = [t for t in tasks if t["kind"] == "work"]
    assert len(work) == 5 and all(t["status"] == "done" for t in work)
    assert not [t for t in tasks if t["status"] == "running"]

    assert rows(db_path, "SELECT COUNT(*) n FROM llm_calls WHERE session_id = ?", sid)[0]["n"] == requests
    actions = rows(db_path, "SELECT name FROM actions WHERE session_id = ?", sid)
    assert {"read_file", "write_file", "finish"} <= {a["name"] for a in actions}
    commits = rows(db_path, "SELECT * FROM commits WHERE session_id = ? AND status = 'integrated'", sid)
    assert len(commits) == 5
    assert sum(c["conflicts"] for c in commits) >= 1
    for c in commits:
        assert git(repo, "merge-base", "--is-ancestor", c["integrated_sha"], branch) == ""
    verdicts = rows(db_path, "SELECT decision FROM verdicts WHERE session_id = ? ORDER BY created_at", sid)
    assert [v["decision"] for v in verdicts] == ["continue", "done"]
    cycles = rows(db_path, "SELECT * FROM cycles WHERE session_id = ? ORDER BY number", sid)
    assert [c["reason"] for c in cycles] == ["start", "continue"]
    session = rows(db_path, "SELECT * FROM sessions WHERE id = ?", sid)[0]
    assert session["status"] == "done" and session["scratchpad"] == "notes"
    kinds = {r["kind"] for r in rows(db_path, "SELECT DISTINCT kind FROM events WHERE session_id = ?", sid)}
    assert {
        "session_started",
        "cycle_started",
        "plan",
        "agent_step",
        "commit_landed",
        "conflict",
        "verdict",
        "session_ended",
    } <= kinds
    assert not list(engine.git.worktrees_dir.glob("*")) if engine.git.worktrees_dir.exists() else True


def slow_team(steps: int = 30) -> ScriptedTeam:
    def default(title: str, step: int):
        return write(f"{title.replace(' ', '_')}.txt", f"{step}\n") if step < steps else finish()

    return ScriptedTeam(
        root_plans=[plan([task(f"Task {i}") for i in range(4)])],
        default_work=default,
        verdicts=[{"decision": "done", "reason": "ok", "notes": ""}],
    )


@asynccontextmanager
async def running(engine: Engine):
    """Run ``engine`` in the background; its outcome is in the yielded dict once the block has ended."""
    result: dict = {}

    async def go():
        result["outcome"] = await engine.run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        yield result


async def wait_for(predicate, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_pause_stops_new_calls_and_resume_restarts_them(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=slow_team(steps=6), latency=0.05) as server:
        engine = Engine.create(settings_for(server), repo, "goal", db_path=tmp_path / "f.db")
        async with running(engine) as result:
            await wait_for(lambda: server.request_count >= 5)
            engine.pause()
            await anyio.sleep(0.3)  # calls in flight finish
            frozen = server.request_count
            await anyio.sleep(0.5)
            assert server.request_count == frozen
            assert engine.snapshot().paused
            engine.resume()
            await wait_for(lambda: server.request_count > frozen)
        assert result["outcome"].status == "done"
    controls = rows(tmp_path / "f.db", "SELECT data FROM events WHERE kind = 'control'")
    assert [c["data"] for c in controls] == [
        '{"control": "pause", "source": "api"}',
        '{"control": "resume", "source": "api"}',
    ]


async def test_fresh_start_begins_a_new_cycle(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=slow_team(steps=40), latency=0.02) as server:
        engine = Engine.create(settings_for(server), repo, "goal", db_path=tmp_path / "f.db")
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            await wait_for(lambda: engine.snapshot().tasks.get("running", 0) >= 2)
            engine.fresh_start()
            await wait_for(lambda: engine.cycle_number == 2)
            await wait_for(lambda: engine.snapshot().tasks.get("running", 0) >= 1)
            engine.stop()
    cycles = rows(tmp_path / "f.db", "SELECT reason, status FROM cycles ORDER BY number")
    assert cycles[0] == {"reason": "start", "status": "abandoned"}
    assert cycles[1]["reason"] == "fresh"
    cancelled = rows(
        tmp_path / "f.db", "SELECT COUNT(*) n FROM tasks WHERE status = 'cancelled' AND kind = 'work'"
    )
    assert cancelled[0]["n"] >= 2


async def test_stop_leaves_no_running_task_and_no_worktree(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    with ScriptedServer(responder=slow_team(steps=40), latency=0.02) as server:
        engine = Engine.create(settings_for(server), repo, "goal", db_path=tmp_path / "f.db")
        async with running(engine) as result:
            await wait_for(lambda: engine.snapshot().tasks.get("running", 0) >= 3)
            engine.stop()
    assert result["outcome"].status == "stopped"
    db_path = tmp_path / "f.db"
    assert rows(db_path, "SELECT COUNT(*) n FROM tasks WHERE status = 'running'")[0]["n"] == 0
    assert rows(db_path, "SELECT status, stop_reason FROM sessions")[0] == {
        "status": "stopped",
        "stop_reason": "stopped by the operator",
    }
    wt_dir = engine.git.worktrees_dir
    assert not wt_dir.exists() or not any(wt_dir.iterdir())
    assert (
        "worktree" not in git(repo, "worktree", "list").split("\n", 1)[-1]
        or len(git(repo, "worktree", "list").splitlines()) == 1
    )


async def test_step_limit_keeps_and_lands_the_work_written_so_far(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    looping = ScriptedTeam(
        root_plans=[plan([task("loops")])],
        work={"loops": [write("partial.txt", "half done\n"), read("partial.txt")]},
    )
    with ScriptedServer(responder=looping) as server:
        settings = settings_for(server, steps_per_worker=4, cycles=1)
        engine = Engine.create(settings, repo, "goal", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    assert outcome.status == "done"
    assert git(repo, "show", f"{engine.git.branch}:partial.txt") == "half done"
    row = rows(tmp_path / "f.db", "SELECT status, handoff FROM tasks WHERE title = 'loops'")[0]
    assert row["status"] == "done" and "step limit" in row["handoff"] and "unfinished" in row["handoff"]


async def test_judge_sees_the_check_command_output_run_in_the_sandbox(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    one = ScriptedTeam(
        root_plans=[plan([task("Add alpha")])], work={"Add alpha": [write("alpha.txt", "alpha\n"), finish()]}
    )
    with ScriptedServer(responder=one) as server:
        settings = settings_for(server, cycles=1)
        settings.sandbox.mode = "bubblewrap"
        settings.check_command = "cat alpha.txt && echo CHECK-OK"
        engine = Engine.create(settings, repo, "goal", db_path=tmp_path / "f.db")
        outcome = await engine.run()
        judge_prompt = next(
            b for b in server.requests if b["response_format"]["json_schema"]["name"] == "verdict"
        )
    assert outcome.status == "done"
    text = judge_prompt["messages"][-1]["content"]
    # the judge sees the check at the start of the cycle (alpha.txt missing) and at its end
    assert "CHECK `cat alpha.txt && echo CHECK-OK` AT THE START OF THE CYCLE: FAILED (exit 1)" in text
    assert "CHECK `cat alpha.txt && echo CHECK-OK` NOW, AT THE END (exit code 0)" in text
    assert "alpha\nCHECK-OK" in text
    verdict = rows(tmp_path / "f.db", "SELECT check_output FROM verdicts")[0]
    assert "CHECK-OK" in verdict["check_output"]


async def test_worker_prompt_shows_the_expected_files_current_text(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n", "units.py": "def f():\n    return None\n"})
    one = ScriptedTeam(
        root_plans=[plan([task("Fix f", files=["units.py", "missing.py", "../outside"])])],
        work={"Fix f": [finish()]},
    )
    with ScriptedServer(responder=one) as server:
        engine = Engine.create(settings_for(server, cycles=1), repo, "goal", db_path=tmp_path / "f.db")
        await engine.run()
        first = next(b for b in server.requests if b["response_format"]["json_schema"]["name"] == "action")
    text = first["messages"][1]["content"]
    assert "CURRENT units.py:\ndef f():\n    return None" in text
    assert "CURRENT missing.py" not in text and "CURRENT ../outside" not in text


async def test_a_repeating_worker_is_told_and_its_temperature_rises(tmp_path):
    """A repeated command is answered with a nudge and hotter sampling (a repeated edit starts the task over
    instead: tests/test_worker_steps.py)."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    same = run("echo same")
    looping = ScriptedTeam(root_plans=[plan([task("loops")])], work={"loops": [same, same, same, finish()]})
    with ScriptedServer(responder=looping) as server:
        engine = Engine.create(settings_for(server, cycles=1), repo, "goal", db_path=tmp_path / "f.db")
        await engine.run()
        actions = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "action"]
    temperatures = [b["temperature"] for b in actions]
    assert temperatures[0] == temperatures[1] < temperatures[2] < temperatures[3]
    last = actions[-1]["messages"][-1]["content"]
    assert "exactly the same as your previous one" in last


async def test_the_judge_does_not_see_notes_about_failures_that_are_gone(tmp_path):
    """Cycle 1 leaves the check failing and the judge notes why; cycle 2 makes it pass. Cycle 2's judge is told
    the check went from failing to passing, without the stale notes (the demo's 1.5B judge repeated them for four
    cycles after every test passed)."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    team = ScriptedTeam(
        root_plans=[plan([task("Try alpha")]), plan([task("Add alpha")])],
        work={
            "Try alpha": [write("beta.txt", "b\n"), finish()],
            "Add alpha": [write("alpha.txt", "a\n"), finish()],
        },
        verdicts=[
            {"decision": "continue", "reason": "alpha missing", "notes": "STALE-NOTE: alpha.txt is missing."},
            {"decision": "done", "reason": "ok", "notes": ""},
        ],
    )
    with ScriptedServer(responder=team) as server:
        settings = settings_for(server, cycles=2)
        settings.check_command = "cat alpha.txt"
        engine = Engine.create(settings, repo, "goal", db_path=tmp_path / "f.db")
        outcome = await engine.run()
        judged = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "verdict"]
    assert outcome.status == "done" and len(judged) == 2
    second = judged[1]["messages"][-1]["content"]
    assert "STALE-NOTE" not in second and "failed at the start of this cycle and passes now" in second
    planner = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "plan"][-1]
    assert (
        "STALE-NOTE" in planner["messages"][-1]["content"]
    )  # the planner of cycle 2 still got them: true then


async def test_judge_notes_without_a_word_are_dropped(tmp_path):
    """The demo's 1.5B judge answered ``"notes": ","``, which the TUI showed as "notes: ,"."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    team = ScriptedTeam(
        root_plans=[plan([task("Add alpha")])],
        work={"Add alpha": [write("alpha.txt", "a\n"), finish()]},
        verdicts=[{"decision": "done", "reason": "ok", "notes": " , ."}],
    )
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(settings_for(server, cycles=1), repo, "goal", db_path=tmp_path / "f.db")
        assert (await engine.run()).status == "done"
    assert rows(tmp_path / "f.db", "SELECT notes FROM verdicts") == [{"notes": ""}]
