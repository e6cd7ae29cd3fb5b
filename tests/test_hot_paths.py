"""No starvation on hot files: a task that lost a conflict round lands next on its paths (bounded), and a task
that still fails integration goes back to its planner, which may retry it."""

from __future__ import annotations

import json
import re

import anyio
import pytest

from formicary.agents.git.hotpaths import HotPaths
from formicary.agents.session.engine import Engine
from formicary.agents.settings import Settings
from formicary.store import db as store_db
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer, message_text
from tests.scripted_team import ScriptedTeam, finish, plan, task, write

pytestmark = pytest.mark.anyio

HOT = "hot.txt"
BASE = "the shared header\nbody\n"
MARKER = re.compile(r"^(<<<<<<< |=======$|>>>>>>> |\|\|\|\|\|\|\| )")


def keep_both(text: str) -> str:
    """Resolve conflict markers by keeping every line of both sides (a base section, if shown, is dropped)."""
    out, in_base = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("||||||| "):
            in_base = True
        elif line.rstrip("\n") == "=======":
            in_base = False
        elif not MARKER.match(line) and not in_base:
            out.append(line)
    return "".join(out)


def hot_team(hot: int, cold: int) -> ScriptedTeam:
    """``hot`` tasks each add their line at the top of one file; ``cold`` tasks each write their own file.

    A task retried by its planner is titled ``<title> again`` and does the same. (The hot tasks' first write is
    made by :func:`responder`, from the file as the worker's prompt shows it.)
    """
    tasks = [task(f"Hot {i}", files=[HOT]) for i in range(hot)] + [task(f"Cold {i}") for i in range(cold)]
    team = ScriptedTeam(root_plans=[plan(tasks)])
    team.default_work = lambda title, step: (
        finish(title) if step else write(f"cold/{title.split()[1]}.txt", f"{title}\n")
    )
    return team


def responder(team: ScriptedTeam, stubborn: set[str]):
    """``team``, plus conflicts resolved by keeping both sides, except by the ``stubborn`` titles, which leave
    the markers (so they fail integration); a planner that sees one fail retries it once as ``<title> again``."""
    retried: set[str] = set()

    def respond(body):
        messages = body.get("messages") or []
        last = message_text(messages[-1]) if messages else ""
        name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        if name == "plan" and "HANDOFFS FROM WORKERS" in last:
            failed = re.findall(r"^- \[failed\] (.+?):", last, re.M)
            again = [task(f"{t} again", files=[HOT]) for t in failed if t in stubborn and t not in retried]
            retried.update(failed)
            return json.dumps(plan(again))
        if name == "action":
            title = re.search(r"TASK: (.+)", message_text(messages[1])).group(1).strip()
            conflict = next(
                (
                    message_text(m)
                    for m in reversed(messages)
                    if m["role"] == "user" and message_text(m).startswith("CONFLICT")
                ),
                None,
            )
            if conflict is not None and last.startswith("CONFLICT"):
                merged = conflict.split(f"\n{HOT} now reads:\n", 1)[1]
                return json.dumps(write(HOT, merged if title in stubborn else keep_both(merged)))
            if title.startswith("Hot") and len(messages) == 2:  # add a line on top of the file as it is now
                shown = (
                    message_text(messages[1]).split(f"CURRENT {HOT}:\n", 1)[1].split("\nREPOSITORY MAP:")[0]
                )
                return json.dumps(write(HOT, f"{title.removesuffix(' again')}\n{shown}"))
        return team(body)

    return respond


def settings_for(server: ScriptedServer, workers: int, tasks: int) -> Settings:
    return Settings.model_validate(
        {
            "model": {"base_url": server.base_url, "model": "scripted-model", "max_concurrency": workers + 4},
            "limits": {"workers": workers, "cycles": 1, "planner_depth": 0, "tasks_per_cycle": tasks},
            "sandbox": {"mode": "none"},
        }
    )


def landed_lines(repo, branch: str) -> list[str]:
    return git(repo, "show", f"{branch}:{HOT}").splitlines()


async def test_thirty_tasks_on_one_line_and_two_hundred_others_all_land(tmp_path):
    """64 workers, 30 tasks adding a line at the top of one file, 200 independent ones, default limits."""
    repo = make_repo(tmp_path / "repo", {"README.md": "# hot\n", HOT: BASE})
    team = hot_team(30, 200)
    with ScriptedServer(responder=responder(team, set()), latency=0.01) as server:
        engine = Engine.create(settings_for(server, 64, 230), repo, "hot file", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    assert outcome.status in ("done", "stopped"), outcome.reason
    db = store_db.connect(tmp_path / "f.db")
    work = list(db.query("SELECT title, status, error FROM tasks WHERE kind = 'work'"))
    assert len(work) == 230
    assert [w for w in work if w["status"] != "done"] == []
    branch = engine.git.branch
    lines = landed_lines(repo, branch)
    assert sorted(line for line in lines if line.startswith("Hot")) == sorted(f"Hot {i}" for i in range(30))
    assert lines[-2:] == BASE.splitlines() and not any(MARKER.match(line) for line in lines)
    cold = git(repo, "ls-tree", "--name-only", f"{branch}:cold").split()
    assert len(cold) == 200
    rounds = list(
        db.query("SELECT MAX(conflicts) m, SUM(conflicts) s FROM commits WHERE status = 'integrated'")
    )
    assert rounds[0]["s"] > 0, "the hot tasks did conflict"
    assert list(db.query("SELECT COUNT(*) n FROM integrations WHERE result = 'held'"))[0]["n"] > 0


async def test_a_task_that_fails_integration_goes_back_to_its_planner(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "# hot\n", HOT: BASE})
    team = hot_team(3, 0)
    stubborn = {"Hot 0", "Hot 1", "Hot 2"}  # whoever conflicts leaves the markers: it fails
    with ScriptedServer(responder=responder(team, stubborn), latency=0.01) as server:
        settings = settings_for(server, 3, 10)
        engine = Engine.create(settings, repo, "hot file", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    assert outcome.status in ("done", "stopped"), outcome.reason
    db = store_db.connect(tmp_path / "f.db")
    work = {
        w["title"]: w for w in db.query("SELECT title, status, error, handoff FROM tasks WHERE kind = 'work'")
    }
    failed = [t for t, w in work.items() if w["status"] == "failed"]
    assert failed, "two of three hot tasks conflict and keep their markers"
    for title in failed:
        assert "integration failed" in work[title]["error"]
        assert work[f"{title} again"]["status"] == "done", "the planner retried it and it landed"
    lines = landed_lines(repo, engine.git.branch)
    assert sorted(line for line in lines if line.startswith("Hot")) == ["Hot 0", "Hot 1", "Hot 2"]


def test_turns_are_queued_released_and_bounded():
    now = [0.0]
    hot = HotPaths(hold_s=10, clock=lambda: now[0])
    assert not hot and hot.blocked_until("a", ["f"]) is None
    hot.claim("a", ["f"])
    assert hot.owner("f") == "a" and hot.blocked_until("a", ["f", "g"]) is None
    assert hot.blocked_until("b", ["g"]) is None  # a path nobody holds
    assert hot.blocked_until("b", ["f"]) == 10 and hot.blocked_until("c", ["f"]) == 10
    now[0] = 4
    hot.release("a")  # a landed: b (first queued) has the turn from now
    assert hot.owner("f") == "b" and hot.blocked_until("c", ["f"]) == 14
    now[0] = 15  # b kept it too long: it goes to the back and c's turn starts
    assert hot.blocked_until("c", ["f"]) is None and hot.owner("f") == "c"
    assert hot.blocked_until("b", ["f"]) == 25
    hot.release("c")
    hot.release("b")
    assert not hot


async def test_a_held_landing_wakes_when_the_turn_changes_hands():
    hot = HotPaths(hold_s=30)
    hot.claim("a", ["f"])
    until = hot.blocked_until("b", ["f"])
    assert until is not None
    woke = anyio.Event()

    async def waiter():
        await hot.wait(until)
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        assert not woke.is_set()
        hot.release("a")
        with anyio.fail_after(5):
            await woke.wait()
    assert hot.owner("f") == "b"
