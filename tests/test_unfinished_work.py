"""Work that looks done and is not: a function left a stub, code left where it never runs.

Both were seen with the 1.5B model on an unseen goal ("Add miles_to_km() to units.py ... and a unittest"): the
worker finished with ``def miles_to_km(miles): "Convert miles to kilometers"`` and it landed as done; another
worker's ``replace`` put a ``return`` above a function's docstring and old body. Every test passed both times.
"""

from __future__ import annotations

import anyio
import pytest

from formicary.agents.tools import confine
from formicary.agents.tools.actions import ActionContext, WriteFile, WriteFunction, execute
from formicary.agents.tools.incomplete import refuse_dead_code, stubs_named
from formicary.agents.tools.sandbox import SandboxOptions
from formicary.store import db as store_db
from tests.gitrepo import git
from tests.scripted_server import schema_name
from tests.scripted_team import ScriptedTeam, finish, plan, task
from tests.test_worker_steps import TESTS, UNITS, actions, run

pytestmark = pytest.mark.anyio

ADD = task("Add miles_to_km to units.py", "Add miles_to_km(miles), miles to kilometres.", files=["units.py"])


def write_function(content: str, name: str = "miles_to_km") -> dict:
    return {"thought": "", "action": {"name": "write_function", "path": "units.py", "function": name,
                                      "content": content}}  # fmt: skip


STUB = write_function('def miles_to_km(miles):\n    """Convert miles to kilometers."""\n')
DONE = write_function(
    'def miles_to_km(miles):\n    """Convert miles to kilometers."""\n    return miles * 1.609344\n'
)


async def test_a_finish_with_the_tasks_function_still_a_stub_is_refused_until_it_is_written(tmp_path):
    team = ScriptedTeam(root_plans=[plan([ADD])], work={ADD["title"]: [STUB, finish(), DONE, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    steps = [(a["name"], a["observation"]) for a in actions(db)]
    assert (
        steps[1][0] == "finish" and "not finished: miles_to_km() in units.py has no code yet" in steps[1][1]
    )
    assert "return miles * 1.609344" in git(repo, "show", f"{engine.git.branch}:units.py")


async def test_a_worker_that_keeps_finishing_with_a_stub_fails_and_nothing_lands(tmp_path):
    team = ScriptedTeam(root_plans=[plan([ADD])], work={ADD["title"]: [STUB, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    assert git(repo, "show", f"{engine.git.branch}:units.py") == UNITS.rstrip("\n")
    conn = store_db.connect(db)
    (row,) = list(conn.query("SELECT status, error FROM tasks WHERE kind = 'work'"))
    assert row["status"] != "done" and "miles_to_km() in units.py still without code" in row["error"]


async def test_a_stub_the_title_adds_is_caught_when_written_with_write_file(tmp_path):
    """The title names the new function; the worker never used write_function, which would have named it."""
    stub = UNITS + "\n\ndef miles_to_km(miles):\n    pass\n"
    written = {"thought": "", "action": {"name": "write_file", "path": "units.py", "content": stub}}
    team = ScriptedTeam(root_plans=[plan([ADD])], work={ADD["title"]: [written, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    assert "miles_to_km" not in git(repo, "show", f"{engine.git.branch}:units.py")
    assert any("not finished: miles_to_km()" in a["observation"] for a in actions(db))


async def test_a_return_put_above_a_docstring_and_old_body_is_refused(tmp_path):
    fix = task("Speed up double in units.py", "double(x) returns twice x.", files=["units.py"])
    above = {"thought": "", "action": {"name": "replace", "path": "units.py", "search": "def double(x):\n",
                                       "replace": "def double(x):\n    return x + x\n\n"}}  # fmt: skip
    team = ScriptedTeam(root_plans=[plan([fix])], work={fix["title"]: [above, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    first = actions(db)[0]["observation"]
    assert first.startswith("error: not written: in double() of units.py, line 7") and "never run" in first
    assert git(repo, "show", f"{engine.git.branch}:units.py") == UNITS.rstrip("\n")


def test_dead_code_already_there_does_not_block_an_edit(tmp_path):
    old = "def f():\n    return 1\n    print('old dead')\n\n\ndef g():\n    return 2\n"
    refuse_dead_code(old, old.replace("return 2", "return 3"), "m.py")  # f's dead line was there before
    with pytest.raises(confine.ActionFailed, match=r"in g\(\) of m.py, line 8"):
        refuse_dead_code(old, old.replace("return 2\n", "return 2\n    return 3\n"), "m.py")
    refuse_dead_code(old, "def broken(:\n", "m.py")  # not parsing is said by the parse check, not here
    loop = "def h(xs):\n    for x in xs:\n        if x:\n            continue\n            x += 1\n"
    with pytest.raises(confine.ActionFailed, match=r"in h\(\)"):
        refuse_dead_code(None, loop, "m.py")


async def test_write_file_and_write_function_are_vetted_too(tmp_path):
    (tmp_path / "units.py").write_text(UNITS)
    (tmp_path / "test_units.py").write_text(TESTS)
    ctx = ActionContext(root=tmp_path, sandbox=SandboxOptions(mode="none"))
    dead = UNITS.replace("    return 2 * x\n", "    return 2 * x\n    return 3 * x\n")
    obs = await execute(WriteFile(name="write_file", path="units.py", content=dead), ctx)
    assert obs.error and "never run" in obs.text
    body = "def double(x):\n    return 2 * x\n    print('never')\n"
    obs = await execute(
        WriteFunction(name="write_function", path="units.py", function="double", content=body), ctx
    )
    assert obs.error and "never run" in obs.text
    assert (tmp_path / "units.py").read_text() == UNITS


def test_which_functions_are_still_stubs():
    text = '''
import abc


def doc_only(x):
    """Only a docstring."""


def placeholder(x):
    pass


def ellipsis(x): ...


def todo(x):
    raise NotImplementedError


def written(x):
    """Real."""
    return x + 1


class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self):
        """Each shape's own."""

    def perimeter(self):
        raise NotImplementedError

    def name(self):
        return None
'''
    names = {"doc_only", "placeholder", "ellipsis", "todo", "written", "area", "perimeter", "name", "absent"}
    assert stubs_named(text, names) == ["doc_only", "placeholder", "ellipsis", "todo", "Shape.name"]
    assert stubs_named(text, {"written"}) == [] and stubs_named("def broken(:", {"broken"}) == []


async def test_a_planned_task_to_add_a_function_its_file_has_with_code_is_dropped(tmp_path):
    """Seen: "Add miles_to_km()" was planned with tasks to "implement" every working function of the module."""
    again = task("Implement double function in units.py", "Add a function double(x).", files=["units.py"])
    stub = task("Implement c_to_f in units.py", "c_to_f converts Celsius.", files=["units.py"])
    new = task("Add triple to units.py", "Add triple(x).", files=["units.py"])
    triple = write_function("def triple(x):\n    return 3 * x\n", "triple")
    team = ScriptedTeam(root_plans=[plan([again, stub, new])], work={new["title"]: [triple, finish()]})
    _, _, bodies, db, _ = await run(tmp_path, team, check="python3 -m unittest")
    conn = store_db.connect(db)
    titles = {r["title"] for r in conn.query("SELECT title FROM tasks WHERE kind = 'work'")}
    assert titles == {stub["title"], new["title"]}
    status = " ".join(r["data"] for r in conn.query("SELECT data FROM events WHERE kind = 'status'"))
    assert "dropped a task to add double(): units.py has it already" in status
    plans = [b["messages"][-1]["content"] for b in bodies if schema_name(b) == "plan"]
    told = (
        "ALREADY IN THE CODE AND WORKING (never plan adding or implementing these):\n- double() in units.py"
    )
    assert (
        len(plans) >= 2 and told not in plans[0] and all(told in p for p in plans[1:])
    )  # a small model re-plans


TRIPLE = write_function("def triple(x):\n    return 3 * x\n", "triple")
WITH_TESTS = task(
    "Add triple to units.py (with its tests)", "Add triple(x) and test it.", ["units.py", "test_units.py"]
)


async def test_a_task_that_adds_a_function_with_its_tests_is_asked_for_the_test_before_it_finishes(tmp_path):
    tested = (
        TESTS
        + "\n\nclass TripleTest(unittest.TestCase):\n    def test_triple(self):\n        self.assertEqual(triple(2), 6)\n"
    )
    tested = tested.replace("from units import c_to_f, double", "from units import c_to_f, double, triple")
    write_test = {"thought": "", "action": {"name": "write_file", "path": "test_units.py", "content": tested}}
    team = ScriptedTeam(
        root_plans=[plan([WITH_TESTS])], work={WITH_TESTS["title"]: [TRIPLE, finish(), write_test, finish()]}
    )
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    refused = [a["observation"] for a in actions(db) if a["name"] == "finish"][0]
    assert (
        "your task includes its tests, and no test file was changed. Add a test of triple to test_units.py"
        in refused
    )
    assert "def test_triple" in git(repo, "show", f"{engine.git.branch}:test_units.py")


async def test_a_worker_that_will_not_write_the_test_still_lands_its_code(tmp_path):
    """Asking is all: untested code is not worse code, and the gate has judged it."""
    team = ScriptedTeam(root_plans=[plan([WITH_TESTS])], work={WITH_TESTS["title"]: [TRIPLE, finish()]})
    engine, _, _, db, repo = await run(tmp_path, team, check="python3 -m unittest")
    assert [a["name"] for a in actions(db)] == ["write_function", "finish", "finish", "finish"]
    assert "return 3 * x" in git(repo, "show", f"{engine.git.branch}:units.py")


def test_a_function_the_goal_only_mentions_is_not_one_it_asks_for():
    from formicary.agents.roles.planner import _goal_asks_for

    seen = "Add miles_to_km(miles) to units.py, the inverse of km_to_miles, and a unittest for it in test_units.py."
    assert _goal_asks_for(seen, "miles_to_km") and not _goal_asks_for(seen, "km_to_miles")
    assert _goal_asks_for("Fix km_to_miles: it rounds", "km_to_miles")
    assert _goal_asks_for("Make `slugify()` handle unicode", "slugify")


def test_the_checks_before_a_write_never_open_a_fifo_an_agent_left(tmp_path):
    """Reading the file an edit replaces went through a plain open(): a FIFO named like the file blocked it."""
    import os
    import threading

    os.mkfifo(tmp_path / "units.py")
    ctx = ActionContext(root=tmp_path, sandbox=SandboxOptions(mode="none"))
    action = WriteFile(
        name="write_file", path="units.py", content=UNITS + "def f():\n    return 1\n    return 2\n"
    )
    checked = threading.Thread(target=lambda: anyio.run(execute, action, ctx), daemon=True)
    checked.start()
    checked.join(20)
    assert not checked.is_alive()
