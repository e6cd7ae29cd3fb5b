"""An edit that writes the tests' wrong values into the code (patching outputs, not fixing the rule) is undone and
never lands (scripted server, real repository, real unittest runs)."""

from __future__ import annotations

import pytest

from formicary.agents.roles.answers import WrongValues, quoted_in_failures
from tests.gitrepo import git, make_repo
from tests.scripted_team import ScriptedTeam, finish, plan, task
from tests.test_planning_small import one_worker_unittest_session
from tests.test_worker_steps import actions

PYTEST_FAILURE = """\
____________________ test_tableize[ChildToy-child_toys] ____________________
inflection/test_inflection.py:431: in test_tableize
    assert inflection.tableize(string) == tableized
E   AssertionError: assert 'childtoys' == 'child_toys'
E     - child_toys
E     + childtoys
____________________ test_tableize[_RecipeIngredient-_recipe_ingredients] ____________________
E   AssertionError: assert '_recipeingredients' == '_recipe_ingredients'
E   assert 'a very long value that pytest cut...' == 'another'
"""
TESTS = "CASES = [('ChildToy', 'child_toys'), ('_RecipeIngredient', '_recipe_ingredients')]\n"


def test_the_quoted_values_of_failure_lines_are_read_whole_ones_only():
    assert quoted_in_failures(PYTEST_FAILURE) == {
        "childtoys",
        "child_toys",
        "_recipeingredients",
        "_recipe_ingredients",
        "another",
    }
    assert quoted_in_failures("AssertionError: 'childtoys' != 'child_toys'\n") == {"childtoys", "child_toys"}
    assert quoted_in_failures("all good: 'childtoys'\n") == set()  # not a failure line


def test_only_actual_values_count_and_only_when_an_edit_writes_them_in():
    wrong = WrongValues()
    wrong.learn(PYTEST_FAILURE, [TESTS])
    assert wrong.values == {"childtoys", "_recipeingredients", "another"}  # expected ones are the tests'
    before = "def tableize(word):\n    return pluralize(word)\n"
    hack = (
        "def tableize(word):\n"
        "    return pluralize(word).lower().replace('childtoys', 'child_toys')"
        ".replace('_recipeingredients', '_recipe_ingredients')\n"
    )
    assert wrong.patched(before, hack) == ["_recipeingredients", "childtoys"]
    assert wrong.patched(hack, hack) == []  # only what the edit adds
    honest = "import re\n\ndef tableize(word):\n    return pluralize(re.sub('([a-z])([A-Z])', r'\\1_\\2', word).lower())\n"
    assert wrong.patched(before, honest) == []
    assert wrong.patched(before, "def tableize(:\n") == []  # does not parse: the parse check says so
    short = WrongValues()
    short.learn("E   AssertionError: assert '11st' == '11' + 'st'\n", ["('11', '11th')"])
    assert short.values == set()  # shorter than MIN_CHARS: a wrong 'st' is a right answer elsewhere


TEXT = 'def tableize(word):\n    """Table name of a class name: ChildToy -> child_toys."""\n    return None\n'
TABLE_TESTS = (
    "import unittest\nfrom text import tableize\n\n\nclass TableizeTest(unittest.TestCase):\n"
    "    def test_compound(self):\n        self.assertEqual(tableize('ChildToy'), 'child_toys')\n\n"
    "    def test_simple(self):\n        self.assertEqual(tableize('Person'), 'persons')\n"
)
NAIVE = "def tableize(word):\n    return word.lower() + 's'\n"
HACK = "def tableize(word):\n    return (word.lower() + 's').replace('childtoys', 'child_toys')\n"
RULE = (
    "def tableize(word):\n"
    "    out = ''.join('_' + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(word))\n"
    "    return out + 's'\n"
)


def edit(content: str) -> dict:
    return {"thought": "", "action": {"name": "write_function", "path": "text.py", "function": "tableize",
                                      "content": content}}  # fmt: skip


pytestmark = pytest.mark.anyio


async def test_a_worker_that_patches_its_wrong_output_is_undone_and_only_the_rule_lands(tmp_path):
    """Seen in an effectiveness run: tableize() "restored" with ``.replace('childtoys', 'child_toys')``."""
    repo = make_repo(tmp_path / "repo", {"text.py": TEXT, "test_text.py": TABLE_TESTS})
    script = [edit(NAIVE), edit(HACK), edit(RULE), finish()]
    team = ScriptedTeam(
        root_plans=[
            plan([task("Fix tableize", "Make tableize() pass its tests.", ["text.py", "test_text.py"])])
        ],
        default_work=lambda title, step: script[min(step, len(script) - 1)],
        verdicts=[{"decision": "done", "reason": "ok", "notes": ""}],
    )
    engine, db = await one_worker_unittest_session(tmp_path, repo, team)
    steps = actions(db)
    assert [r["name"] for r in steps][:3] == ["write_function"] * 3
    assert "'childtoys' != 'child_toys'" in steps[0]["observation"]
    assert "ERROR: your edit was undone: it writes 'childtoys' into text.py" in steps[1]["observation"]
    landed = git(repo, "show", f"{engine.git.branch}:text.py")
    assert "enumerate(word)" in landed
    history = git(repo, "log", "--first-parent", "-p", engine.git.branch)
    assert "childtoys" not in history  # the patch never reached the shared branch
