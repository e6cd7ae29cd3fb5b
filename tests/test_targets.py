"""Named targets: a goal naming its functions and their files is planned without a model call, one task each,
and only the named targets that have not landed (scripted server, real repositories)."""

from __future__ import annotations

import pytest

from formicary.agents.roles import targets
from formicary.agents.session.engine import Engine
from formicary.agents.settings import Settings
from formicary.agents.tools import pyedit
from formicary.store import db as store_db
from tests.gitrepo import make_repo
from tests.scripted_server import ScriptedServer, schema_name
from tests.scripted_team import ScriptedTeam, finish, plan, task

pytestmark = pytest.mark.anyio

FILES = {
    "text.py": 'def slugify(s):\n    """Lowercase words joined by dashes."""\n    return None\n',
    "units.py": 'def c_to_f(c):\n    """Celsius to Fahrenheit."""\n    return None\n',
    "test_text.py": "from text import slugify\n\ndef test_slugify():\n    assert slugify('A b') == 'a-b'\n",
    "test_units.py": "from units import c_to_f\n\ndef test_c_to_f():\n    assert c_to_f(100) == 212\n",
}
PROSE = (
    "Make every test pass. Two functions are stubs: implement `slugify()` in `text.py` (tests in "
    "`test_text.py`), and c_to_f() in units.py (tests in test_units.py). Do not edit the tests."
)
BULLETS = "Make every test pass:\n- `slugify()` in `text.py`\n- `c_to_f()` in `units.py`, returning a float\n"


def found(goal: str) -> list[targets.Target]:
    return targets.find_targets(goal, list(FILES), FILES.get)


def test_targets_in_prose_and_bullets():
    prose = found(PROSE)
    assert [(t.function, t.path, t.tests) for t in prose] == [
        ("slugify", "text.py", "test_text.py"),
        ("c_to_f", "units.py", "test_units.py"),
    ]
    bullets = found(BULLETS)
    assert [(t.function, t.path) for t in bullets] == [("slugify", "text.py"), ("c_to_f", "units.py")]
    tasks = targets.planned_tasks(BULLETS, bullets)
    assert [t.title for t in tasks] == ["slugify() in text.py", "c_to_f() in units.py"]
    assert all(t.files == [t.title.split(" in ")[1]] for t in tasks)
    assert "returning a float" in tasks[1].instructions  # what the goal says beyond the name is passed on
    assert "returning a float" not in tasks[0].instructions
    assert "Make every test pass" in tasks[0].instructions  # the goal's general lines apply to every target
    prose_tasks = targets.planned_tasks(PROSE, prose)
    assert "Do not edit the tests." in prose_tasks[0].instructions
    assert "The goal says" not in prose_tasks[0].instructions  # nothing beyond name, file and tests


def test_functions_named_together_share_the_file_named_after_them():
    """Seen on toolz: "frequencies() and sliding_window() in toolz/itertoolz.py …" planned sliding_window only."""
    files = dict(FILES, **{"text.py": FILES["text.py"] + "\n\ndef title(s):\n    return None\n"})
    together = "title() and slugify() in text.py raise NotImplementedError: implement both. c_to_f(). Go."
    assert [(t.function, t.path) for t in targets.find_targets(together, list(files), files.get)] == [
        ("title", "text.py"),
        ("slugify", "text.py"),
    ]
    apart = "Write title(). Then slugify() in text.py."  # another sentence: not the same file by this rule
    assert [t.function for t in targets.find_targets(apart, list(files), files.get)] == ["slugify"]


def test_no_plan_from_vague_or_unverifiable_targets():
    assert found("Make the tests pass in text.py and units.py.") == []  # no function named
    one = found("Fix `slugify()` in `text.py`: it keeps capitals.")  # one target is a task too
    assert [(t.function, t.path, t.tests) for t in one] == [("slugify", "text.py", "")]
    assert (
        found("Implement `slugify()` in `units.py` and `c_to_f()` in `text.py`.") == []
    )  # not defined there
    left = found("Implement `slugify()` in `nowhere.py` and `c_to_f()` in `units.py`.")
    assert [(t.function, t.path) for t in left] == [("c_to_f", "units.py")]  # the one that checks out


def test_which_targets_failing_test_ids_name():
    a = targets.Target("ordinal", "m.py", "test_m.py", "")
    b = targets.Target("to_hex", "m.py", "test_m.py", "")
    c = targets.Target("slugify", "text.py", "test_text.py", "")
    failing = ["test_m.py::test_ordinal[-1--1st]", "test_text.SlugifyTest.test_simple"]
    assert targets.still_failing([a, b, c], failing) == {a, c}
    d = targets.Target("c_to_f", "units.py", "test_units.py", "")  # its own test file: any test of it counts
    assert targets.still_failing([c, d], ["test_units.BoilingTest.test_boils"]) == {d}
    assert targets.still_failing([a, b], ["test_m.py::test_other"]) == set()  # a shared file says nothing


def test_outline_shows_other_functions_and_the_tables_tests_use():
    source = "import re\n\n" + "".join(
        f'def f{i}(x):\n    """Doc {i}.\n\n    More about it.\n    """\n    return x + {i}\n\n\n'
        for i in range(40)
    )
    source += "def bare(x):\n    return x\n"
    shown = pyedit.excerpt(source, {"f7"}, 4000, outline=True)
    assert 'def f7(x):\n    """Doc 7.\n\n    More about it.\n    """\n    return x + 7' in shown
    # another function: its signature and what its docstring's first line says it does, its body elided
    assert 'def f8(x):\n    """Doc 8."""\n    ...\n' in shown and "return x + 8" not in shown
    assert shown.endswith("def bare(x):\n    ...")
    tests = "import pytest\nCASES = [(1, 2)]\nOTHER = [3]\n\n" + "".join(
        f"def test_f{i}():\n    assert f{i}(1)\n\n" for i in range(40)
    )
    tests += "@pytest.mark.parametrize('a,b', CASES)\ndef test_f7_cases(a, b):\n    assert f7(a) == b\n"
    shown = pyedit.excerpt(tests, {"f7"}, 4000)
    assert "CASES = [(1, 2)]" in shown and "OTHER" not in shown and "def test_f8" not in shown


async def test_named_targets_need_no_planner_call(tmp_path):
    repo = make_repo(tmp_path / "repo", FILES)
    fixes = {
        "slugify() in text.py": "def slugify(s):\n    return '-'.join(s.lower().split())\n",
        "c_to_f() in units.py": "def c_to_f(c):\n    return c * 9 / 5 + 32\n",
    }
    work = {
        title: [
            {"thought": "w", "action": {"name": "write_function", "path": title.split(" in ")[1],
                                        "function": title.split("(")[0], "content": body}},
            finish(),
        ]
        for title, body in fixes.items()
    }  # fmt: skip
    team = ScriptedTeam(
        root_plans=[plan([task("should not be asked for")])],
        work=work,
        verdicts=[{"decision": "done", "reason": "ok", "notes": ""}],
    )
    db = tmp_path / "f.db"
    settings = Settings.model_validate(
        {
            "model": {"base_url": "", "retries": 1, "timeout": 20},
            "limits": {"workers": 2, "cycles": 1},
            "sandbox": {"mode": "none"},
            "check_command": "python3 -m pytest -q -p no:cacheprovider",
        }
    )
    with ScriptedServer(responder=team) as server:
        settings.model.base_url = server.base_url
        outcome = await Engine.create(settings, repo, PROSE, db_path=db).run()
        asked = [schema_name(b) for b in server.requests]
    assert outcome.status == "done"
    assert "plan" not in asked  # the first round's plan came from the goal
    conn = store_db.connect(db)
    tasks = {
        r["title"]: r["status"] for r in conn.query("SELECT title, status FROM tasks WHERE kind = 'work'")
    }
    assert tasks == {"slugify() in text.py": "done", "c_to_f() in units.py": "done"}


async def test_a_failed_target_is_tried_again_by_a_fresh_worker_without_a_planner_call(tmp_path):
    repo = make_repo(tmp_path / "repo", FILES)
    first_tries: dict[str, int] = {}

    def work(title: str, step: int) -> dict:
        path, function = title.split(" in ")[1], title.split("(")[0]
        if step == 0:
            first_tries[title] = first_tries.get(title, 0) + 1
        if title.startswith("c_to_f") and first_tries[title] == 1:
            return {"thought": "", "action": {"name": "read_file", "path": "README.md", "start": 0, "end": 0}}
        body = {"slugify": "return '-'.join(s.lower().split())", "c_to_f": "return c * 9 / 5 + 32"}[function]
        arg = "s" if function == "slugify" else "c"
        return {"thought": "", "action": {"name": "write_function", "path": path, "function": function,
                                          "content": f"def {function}({arg}):\n    {body}\n"}}  # fmt: skip

    team = ScriptedTeam(root_plans=[plan([task("should not be asked for")])], default_work=work)
    settings = Settings.model_validate(
        {
            "model": {"base_url": "", "retries": 1, "timeout": 20},
            "limits": {"workers": 2, "cycles": 1, "steps_per_worker": 1},
            "sandbox": {"mode": "none"},
            "check_command": "python3 -m pytest -q -p no:cacheprovider",
        }
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        settings.model.base_url = server.base_url
        await Engine.create(settings, repo, BULLETS, db_path=db).run()
        asked = [schema_name(b) for b in server.requests]
    assert "plan" not in asked
    rows = list(
        store_db.connect(db).query("SELECT title, status FROM tasks WHERE kind = 'work' ORDER BY created_at")
    )
    assert [(r["title"], r["status"]) for r in rows] == [
        ("slugify() in text.py", "done"),
        ("c_to_f() in units.py", "failed"),  # its first worker only read, then hit its step limit
        ("c_to_f() in units.py", "done"),  # planned again from the goal, for a fresh worker
    ]


async def test_a_landed_target_whose_tests_still_fail_is_planned_again(tmp_path):
    """Measured on the demo: a step-limited worker landed a slugify that passed one more test than the stub
    (the gate lets that in: nothing got worse) and its task ended done; the target must be tried again, and the
    one that landed whole must not."""
    files = dict(FILES)
    files["test_text.py"] = (
        "from text import slugify\n\ndef test_one_word():\n    assert slugify('A') == 'a'\n\n"
        "def test_words():\n    assert slugify('A b') == 'a-b'\n"
    )
    repo = make_repo(tmp_path / "repo", files)
    tries: dict[str, int] = {}

    def work(title: str, step: int) -> dict:
        path, function = title.split(" in ")[1], title.split("(")[0]
        if step == 0:
            tries[title] = tries.get(title, 0) + 1
        if step > 0:
            return finish()
        partial = function == "slugify" and tries[title] == 1
        body = {
            "slugify": "return s.lower()" if partial else "return '-'.join(s.lower().split())",
            "c_to_f": "return c * 9 / 5 + 32",
        }[function]
        arg = "s" if function == "slugify" else "c"
        return {"thought": "", "action": {"name": "write_function", "path": path, "function": function,
                                          "content": f"def {function}({arg}):\n    {body}\n"}}  # fmt: skip

    team = ScriptedTeam(
        root_plans=[plan([task("should not be asked for")])],
        default_work=work,
        verdicts=[{"decision": "continue", "reason": "x", "notes": ""}, {"decision": "done", "reason": "ok", "notes": ""}],
    )  # fmt: skip
    settings = Settings.model_validate(
        {
            "model": {"base_url": "", "retries": 1, "timeout": 20},
            "limits": {"workers": 2, "cycles": 2, "followups_per_planner": 0, "redraws_per_worker": 0},
            "sandbox": {"mode": "none"},
            "check_command": "python3 -m pytest -q -p no:cacheprovider",
        }
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        settings.model.base_url = server.base_url
        engine = Engine.create(settings, repo, PROSE, db_path=db)
        await engine.run()
        asked = [schema_name(b) for b in server.requests]
    assert "plan" not in asked
    assert tries == {"slugify() in text.py": 2, "c_to_f() in units.py": 1}
    from tests.gitrepo import git

    assert "'-'.join" in git(repo, "show", f"{engine.git.branch}:text.py")
    status = [r["data"] for r in store_db.connect(db).query("SELECT data FROM events WHERE kind = 'status'")]
    assert any("planned again, their tests still fail: slugify() in text.py" in d for d in status)
