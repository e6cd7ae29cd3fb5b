"""Workers that finish with a small model, against the scripted server on real repositories.

Each test scripts what the 1.5B model was measured doing (re-reading files it was shown, reading past their
ends, never running the tests) and checks the worker turns it into progress: the task's files and tests in the
first prompt, re-reads answered from context without a step, the check run by itself after each edit, and
several candidate edits drawn from idle slots with the passing one kept, a failed edit drawn again from the
same prompt.
"""

from __future__ import annotations

import json

import pytest

from formicary.agents.session.engine import Engine
from formicary.agents.settings import Settings
from formicary.store import db as store_db
from formicary.store import queries
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer, schema_name
from tests.scripted_team import ScriptedTeam, finish, plan, read, task, write

pytestmark = pytest.mark.anyio

UNITS = '''"""Unit conversions."""


def double(x):
    """Return twice ``x``."""
    return 2 * x


def c_to_f(c):
    """Celsius to Fahrenheit."""
    return None
'''
UNITS_FIXED = UNITS.replace("    return None\n", "    return c * 9 / 5 + 32\n")
TESTS = """import unittest

from units import c_to_f, double


class UnitsTest(unittest.TestCase):
    def test_double(self):
        self.assertEqual(double(2), 4)

    def test_c_to_f(self):
        self.assertEqual(c_to_f(100), 212)
"""


def settings_for(
    server: ScriptedServer, *, check: str = "", llama_cpp: bool = False, slots: int = 4, **limits
) -> Settings:
    return Settings.model_validate(
        {
            "model": {
                "base_url": server.base_url,
                "retries": 1,
                "timeout": 20,
                "max_concurrency": slots,
                "llama_cpp": llama_cpp,
            },
            "limits": {"workers": 1, "cycles": 1, "planner_depth": 0} | limits,
            "sandbox": {"mode": "none"},
            "check_command": check,
        }
    )


def units_repo(tmp_path):
    return make_repo(tmp_path / "repo", {"units.py": UNITS, "test_units.py": TESTS, "README.md": "x\n"})


def actions(db_path, title=None):
    """The worker's action rows, texts read through the record's queries (stored compressed, arguments against
    the reply that chose them)."""
    db = store_db.connect(db_path)
    rows = list(db.query("SELECT a.seq, a.agent_id FROM actions a ORDER BY a.created_at, a.step, a.seq"))
    read = {
        agent: {r["seq"]: r for r in queries.actions(db, agent)} for agent in {r["agent_id"] for r in rows}
    }
    return [read[r["agent_id"]][r["seq"]] for r in rows]


def fix_task() -> dict:
    return task("Implement c_to_f in units.py", "Make c_to_f convert Celsius.", files=["units.py"])


async def run(tmp_path, team, **kw):
    files = {"units.py": UNITS, "test_units.py": TESTS, "README.md": "x\n"}
    return await run_in(tmp_path, team, files, **kw)


async def run_in(tmp_path, team, files, **kw):
    """One session of ``team`` on a new repository of ``files``: (engine, outcome, request bodies, db, repo)."""
    repo = make_repo(tmp_path / "repo", files)
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(settings_for(server, **kw), repo, "Fix units", db_path=db)
        outcome = await engine.run()
        bodies = list(server.requests)
    return engine, outcome, bodies, db, repo


def worker_bodies(bodies):
    return [b for b in bodies if schema_name(b) == "action"]


async def test_first_prompt_has_the_task_files_and_their_tests(tmp_path):
    team = ScriptedTeam(root_plans=[plan([fix_task()])], work={fix_task()["title"]: [finish()]})
    _, _, bodies, _, _ = await run(tmp_path, team, check="python3 -m unittest")
    first = worker_bodies(bodies)[0]["messages"][1]["content"]
    assert "CURRENT units.py:" in first and "def c_to_f(c):" in first
    assert "TESTS test_units.py:" in first and "self.assertEqual(c_to_f(100), 212)" in first
    assert "Functions this task is about: c_to_f" in first


async def test_a_reread_of_a_shown_file_costs_no_step(tmp_path):
    # 2 steps: two re-reads of the shown file, then the write and finish still fit
    title = fix_task()["title"]
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={title: [read("units.py"), read("units.py"), write("units.py", UNITS_FIXED), finish("fixed")]},
    )
    engine, outcome, _, db, repo = await run(tmp_path, team, steps_per_worker=2)
    rows = actions(db)
    reads = [r for r in rows if r["name"] == "read_file"]
    assert len(reads) == 2 and all("already have the whole of units.py" in r["observation"] for r in reads)
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED
    task_rows = list(store_db.connect(db).query("SELECT status FROM tasks WHERE kind = 'work'"))
    assert [t["status"] for t in task_rows] == ["done"]


async def test_a_changed_file_is_read_again(tmp_path):
    title = fix_task()["title"]
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={
            title: [
                {"thought": "", "action": {"name": "replace", "path": "units.py", "search": "return None",
                                           "replace": "return c * 9 / 5"}},
                read("units.py"),
                finish(),
            ]
        },
    )  # fmt: skip
    _, _, _, db, _ = await run(tmp_path, team)
    read_row = next(r for r in actions(db) if r["name"] == "read_file")
    assert "return c * 9 / 5" in read_row["observation"]


async def test_reading_past_the_end_is_said_once(tmp_path):
    title = fix_task()["title"]
    past = {"thought": "", "action": {"name": "read_file", "path": "README.md", "start": 50, "end": 60}}
    team = ScriptedTeam(root_plans=[plan([fix_task()])], work={title: [past, past, finish()]})
    _, _, _, db, _ = await run(tmp_path, team, steps_per_worker=2)
    reads = [r["observation"] for r in actions(db) if r["name"] == "read_file"]
    assert "has only 1 lines" in reads[0]
    assert "already read to the end of README.md" in reads[1] and "no step" in reads[1]


async def test_the_check_runs_by_itself_after_each_edit(tmp_path):
    title = fix_task()["title"]
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={title: [write("units.py", UNITS), write("units.py", UNITS_FIXED), finish()]},
    )
    _, _, bodies, db, _ = await run(tmp_path, team, check="python3 -m unittest")
    writes = [r["observation"] for r in actions(db) if r["name"] == "write_file"]
    assert "CHECK `python3 -m unittest test_units`: FAILED" in writes[0]
    assert "CHECK `python3 -m unittest test_units`: PASSED" in writes[1] and "finish" in writes[1]
    # no model step was spent on `run`
    assert not [r for r in actions(db) if r["name"] == "run"]


async def test_write_function_replaces_one_function_and_keeps_the_rest(tmp_path):
    title = fix_task()["title"]
    new = 'def c_to_f(c):\n    """Celsius to Fahrenheit."""\n    return c * 9 / 5 + 32\n'
    edit = {"thought": "", "action": {"name": "write_function", "path": "units.py", "function": "c_to_f",
                                      "content": new}}  # fmt: skip
    team = ScriptedTeam(root_plans=[plan([fix_task()])], work={title: [edit, finish()]})
    engine, _, _, _, repo = await run(tmp_path, team, check="python3 -m unittest")
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_write_function_adds_a_function_the_file_lacks_and_it_lands(tmp_path):
    """Measured on an unseen "add capitalize_words()" goal: both workers spent every step on write_function for
    a function not yet in the file. Now it is added, and it lands through the gate."""
    add = task("Add triple to units.py", "Add triple(x), three times x.", files=["units.py"])
    edit = {"thought": "", "action": {"name": "write_function", "path": "units.py", "function": "triple",
                                      "content": "def triple(x):\n    return 3 * x\n"}}  # fmt: skip
    team = ScriptedTeam(root_plans=[plan([add])], work={add["title"]: [edit, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    landed = git(repo, "show", f"{engine.git.branch}:units.py")
    assert landed.startswith(UNITS.rstrip("\n")) and landed.endswith("\n\n\ndef triple(x):\n    return 3 * x")
    assert actions(db)[0]["observation"].startswith("added triple to units.py")


async def test_a_written_file_that_does_not_parse_is_said_at_once_not_the_tests_passing(tmp_path):
    """Measured: a new test file with a broken class body was followed by "the tests for your task pass now"."""
    add = task("Add tests", "Add tests for c_to_f.", files=["tests/test_more.py"])
    broken = write(
        "tests/test_more.py", "import unittest\n\nclass T(unittest.TestCase):\n\ndef test_a(self):\n"
    )
    team = ScriptedTeam(root_plans=[plan([add])], work={add["title"]: [broken, finish()]})
    await run(tmp_path, team, check="python3 -m unittest")
    wrote = next(r["observation"] for r in actions(tmp_path / "f.db") if r["name"] == "write_file")
    assert "ERROR: tests/test_more.py does not parse now (SyntaxError" in wrote and "CHECK" not in wrote


async def test_without_named_files_the_check_is_narrowed_to_the_edited_files_tests(tmp_path):
    bare = task("Implement c_to_f", "Make c_to_f convert Celsius.")  # the planner named no files
    team = ScriptedTeam(
        root_plans=[plan([bare])], work={bare["title"]: [write("units.py", UNITS_FIXED), finish()]}
    )
    _, _, _, db, _ = await run(tmp_path, team, check="python3 -m unittest")
    wrote = next(r["observation"] for r in actions(db) if r["name"] == "write_file")
    assert "CHECK `python3 -m unittest test_units`: PASSED" in wrote


async def test_an_action_repeated_with_nothing_edited_is_answered_from_the_conversation(tmp_path):
    """Measured on the demo: a worker alternated a failing regex-escaped replace and the same partial read."""
    title = fix_task()["title"]
    bad = {"thought": "", "action": {"name": "replace", "path": "units.py", "search": "c_to_f\\(c\\)",
                                     "replace": "x"}}  # fmt: skip
    part = {"thought": "", "action": {"name": "read_file", "path": "README.md", "start": 1, "end": 1}}
    new = 'def c_to_f(c):\n    """Celsius to Fahrenheit."""\n    return c * 9 / 5 + 32\n'
    fix = {"thought": "", "action": {"name": "write_function", "path": "units.py", "function": "c_to_f",
                                     "content": new}}  # fmt: skip
    team = ScriptedTeam(root_plans=[plan([fix_task()])], work={title: [bad, part, bad, part, fix, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, steps_per_worker=4)  # a bad replace is not redrawn
    rows = actions(db)
    assert "not a regular expression" in rows[0]["observation"]
    again = [r["observation"] for r in rows[2:4]]
    assert all("You did exactly this at step" in o and "no step" in o for o in again)
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_the_worker_finishes_by_itself_when_its_failing_tests_pass(tmp_path):
    """The task's tests run before the first call (their result is in the prompt); once an edit turns them from
    failing to passing the worker finishes without another model call, and the gate lands the work."""
    title = fix_task()["title"]
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={title: [write("units.py", UNITS_FIXED), read("units.py"), finish("never asked")]},
    )
    engine, outcome, bodies, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    calls = worker_bodies(bodies)
    assert len(calls) == 1  # the write; no read, no finish call
    first = calls[0]["messages"][1]["content"]
    assert "The task's tests now: `python3 -m unittest test_units`: FAILED (exit 1)" in first
    rows = actions(db)
    assert [r["name"] for r in rows] == ["write_file", "finish"]
    assert '"auto": true' in rows[-1]["arguments"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


def write_fn(body: str) -> dict:
    return {"thought": "", "action": {"name": "write_function", "path": "units.py", "function": "c_to_f",
                                      "content": f"def c_to_f(c):\n    {body}\n"}}  # fmt: skip


async def test_a_worker_that_repeats_a_failed_edit_starts_over_with_its_tries_listed(tmp_path):
    """Measured: the 1.5B model sent the same failing definition five times. The second time, its edits are
    undone and it starts from the first prompt plus its failed tries; the right body then lands."""
    title = fix_task()["title"]
    wrong = write_fn("return c * 2")
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={title: [wrong, wrong]},
        on_restart={title: [write_fn("return c * 9 / 5 + 32")]},
    )
    # one slot: no idle ones to draw candidate edits from (tests/test_slots.py covers those)
    engine, outcome, bodies, db, repo = await run(
        tmp_path, team, check="python3 -m unittest", slots=1, redraws_per_worker=0
    )
    calls = worker_bodies(bodies)
    assert len(calls) == 3
    fresh = calls[2]["messages"]
    assert len(fresh) == 2  # system + the first prompt, with the tries under it
    assert fresh[1]["content"].startswith(calls[0]["messages"][1]["content"])
    assert "YOU ARE STARTING THIS TASK AGAIN" in fresh[1]["content"]
    assert "TRY 1: write_function c_to_f:\ndef c_to_f(c):\n    return c * 2" in fresh[1]["content"]
    assert "FAILED" in fresh[1]["content"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED
    status = [r["data"] for r in store_db.connect(db).query("SELECT data FROM events WHERE kind = 'status'")]
    assert any("started its task again" in d for d in status)


def by_temperature(bodies_by_heat: list[str], then: str):
    """A worker that writes ``bodies_by_heat[i]`` at the i-th temperature of its first step, ``then`` after."""

    def responder(body):
        name = schema_name(body)
        if name == "plan":
            return json.dumps(plan([fix_task()]))
        if name == "verdict":
            return json.dumps({"decision": "done", "reason": "ok", "notes": ""})
        if any(m["role"] == "assistant" for m in body["messages"]):
            return json.dumps(write_fn(then))
        heat = min(len(bodies_by_heat) - 1, round((body["temperature"] - 0.2) / 0.35))
        return json.dumps(write_fn(bodies_by_heat[heat]))

    return responder


async def test_a_failed_edit_is_drawn_again_from_the_same_prompt(tmp_path):
    """The cold draw fails the task's tests; it is undone and the step drawn again, hotter, from the very same
    messages (so llama-server serves the prompt from its cache); the passing redraw lands, and the failed try
    never entered the conversation."""
    responder = by_temperature(["return c * 2", "return c * 9 / 5 + 32"], then="return None")
    engine, outcome, bodies, db, repo = await run(
        tmp_path, responder, check="python3 -m unittest", llama_cpp=True, slots=1
    )
    calls = worker_bodies(bodies)
    assert len(calls) == 2
    assert calls[1]["messages"] == calls[0]["messages"]
    assert calls[1]["temperature"] > calls[0]["temperature"]
    assert calls[1]["id_slot"] == calls[0]["id_slot"]
    rows = actions(db)
    assert [r["name"] for r in rows] == ["write_function", "write_function", "finish"]
    assert "FAILED" in rows[0]["observation"] and "PASSED" in rows[1]["observation"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_when_every_redraw_fails_the_last_try_stays_in_the_conversation(tmp_path):
    responder = by_temperature(["return c * 2", "return c * 3", "return c * 4"], then="return c * 9 / 5 + 32")
    engine, outcome, bodies, db, repo = await run(tmp_path, responder, check="python3 -m unittest", slots=1)
    calls = worker_bodies(bodies)
    assert len(calls) == 4  # the first draw, two redraws, then the next step
    assert all(c["messages"] == calls[0]["messages"] for c in calls[:3])
    conversation = calls[3]["messages"]
    assert sum(1 for m in conversation if m["role"] == "assistant") == 1
    assert "return c * 4" in conversation[2]["content"]
    assert conversation[3]["content"].endswith("(2 other tries at this edit failed too.)")
    # the record rebuilds every request, redraws (the same messages as their parent call) included
    record = store_db.connect(db)
    worker = next(r["id"] for r in record.query("SELECT id FROM agents WHERE role = 'worker'"))
    assert [c["messages"] for c in queries.agent_calls(record, worker)] == [c["messages"] for c in calls]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_an_edit_failing_on_a_missing_name_is_not_drawn_again_but_shown(tmp_path):
    """A NameError says what to fix; a redraw from the same prompt would not know it."""
    responder = by_temperature(["return celsius * 9 / 5 + 32"], then="return c * 9 / 5 + 32")
    engine, outcome, bodies, db, repo = await run(tmp_path, responder, check="python3 -m unittest", slots=1)
    calls = worker_bodies(bodies)
    assert len(calls) == 2 and calls[1]["messages"] != calls[0]["messages"]
    assert "NameError: name 'celsius' is not defined" in calls[1]["messages"][-1]["content"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_an_edit_of_a_test_file_the_task_does_not_name_is_refused(tmp_path):
    """Measured: the 1.5B model "fixed" a failing test by editing its expected value. Tests are the spec."""
    title = fix_task()["title"]
    cheat = {
        "thought": "",
        "action": {"name": "replace", "path": "test_units.py", "search": "212", "replace": "None"},
    }
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={title: [cheat, write("units.py", UNITS_FIXED), finish()]},
    )
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest", redraws_per_worker=0)
    rows = actions(db)
    assert (
        rows[0]["name"] == "replace"
        and "is a test file and your task does not name it" in rows[0]["observation"]
    )
    assert git(repo, "show", f"{engine.git.branch}:test_units.py") + "\n" == TESTS
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_a_task_that_names_a_test_file_may_edit_it(tmp_path):
    named = task("Fix the c_to_f test", "Its expected value is wrong.", files=["test_units.py"])
    edit = {
        "thought": "",
        "action": {"name": "replace", "path": "test_units.py", "search": "212", "replace": "None"},
    }
    team = ScriptedTeam(root_plans=[plan([named])], work={named["title"]: [edit, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, redraws_per_worker=0)
    assert "is a test file" not in actions(db)[0]["observation"]
    assert "assertEqual(c_to_f(100), None)" in git(repo, "show", f"{engine.git.branch}:test_units.py")


async def test_a_worker_stuck_on_one_edit_after_its_fresh_starts_ends_before_its_step_limit(tmp_path):
    """Seen on an unseen repository: after its two fresh starts the 1.5B model sent one edit twelve times in a
    row, ~45 s a call, until its step limit. Four identical actions in a row end it; nothing of it lands."""
    responder = by_temperature(["return c * 2"], then="return c * 2")  # one wrong body, every step
    engine, outcome, bodies, db, repo = await run(
        tmp_path, responder, check="python3 -m unittest", slots=1, redraws_per_worker=0
    )
    db_rows = store_db.connect(db)
    steps = list(db_rows.query("SELECT agent_id, MAX(step) last FROM actions GROUP BY agent_id"))
    # each try: two edits before each of its two fresh starts, then the same edit four times in a row
    assert steps and all(r["last"] == 8 for r in steps), steps
    failed = list(db_rows.query("SELECT status, error FROM tasks WHERE kind = 'work'"))
    assert failed and all(r["status"] == "failed" for r in failed), failed
    assert "stuck: the same write_function 4 times in a row" in failed[0]["error"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS


def test_a_long_conversation_drops_its_oldest_steps_and_keeps_the_task():
    from formicary.agents.roles.briefing import fit_context

    messages = [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "task" * 5}]
    messages += [{"role": "user", "content": f"step {i} " + "x" * 100} for i in range(10)]
    fit_context(messages, 600)
    assert messages[:2] == [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "task" * 5}]
    assert messages[2]["content"].startswith("[older steps omitted") and messages[-1]["content"].startswith(
        "step 9"
    )
    assert sum(len(m["content"]) for m in messages) <= 600 + len(messages[2]["content"])
    fit_context(messages, 600)  # the note is said once
    assert sum(m["content"].startswith("[older steps omitted") for m in messages) == 1
