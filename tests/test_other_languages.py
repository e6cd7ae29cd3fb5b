"""A repository in another language than Python: its tests are found and shown, protected like Python's, and
the worker is not offered the Python-only ``write_function`` (measured with the 1.5B model on a JavaScript
task: offered it, the model wrote a Python ``def`` into lib.js six times and never landed anything)."""

from __future__ import annotations

import json
import shutil

import pytest

from formicary.agents.roles.briefing import is_test_file
from formicary.agents.roles.briefing import test_edit_refusal as edit_refusal
from formicary.agents.tools.actions import reply_schema
from formicary.agents.tools.targeted import module_tested, related_tests
from tests.gitrepo import git, make_repo
from tests.scripted_team import ScriptedTeam, finish, plan, task
from tests.test_engine import rows
from tests.test_worker_steps import actions, run_in, worker_bodies

pytestmark = pytest.mark.anyio

LIB = """// Small string helpers.

function reverse(s) {
  return s.split("").reverse().join("");
}

function isPalindrome(s) {
  throw new Error("not implemented");
}

module.exports = { reverse, isPalindrome };
"""
TESTS = """const test = require("node:test");
const assert = require("node:assert");
const { reverse, isPalindrome } = require("./lib.js");

test("reverse", () => assert.strictEqual(reverse("abc"), "cba"));
test("isPalindrome", () => {
  assert.strictEqual(isPalindrome("Racecar"), true);
  assert.strictEqual(isPalindrome("hello"), false);
});
"""
STUB = '  throw new Error("not implemented");\n'
BODY = '  const t = s.toLowerCase().replace(/[^a-z0-9]/g, "");\n  return t === reverse(t);\n'


@pytest.mark.parametrize(
    ("path", "module"),
    [
        ("test_units.py", "units"),
        ("pkg/units_test.py", "units"),
        ("lib.test.js", "lib"),
        ("src/lib.spec.ts", "lib"),
        ("strings_test.go", "strings"),
        ("spec/parser_spec.rb", "parser"),
    ],
)
def test_test_files_of_each_language_are_named_after_their_module(path, module):
    assert is_test_file(path) and module_tested(path) == module


@pytest.mark.parametrize("path", ["lib.js", "src/testing.ts", "contest.py", "latest.go", "attest.rb"])
def test_sources_are_not_test_files(path):
    assert not is_test_file(path)


def test_the_tests_of_a_javascript_file_are_found_and_protected(tmp_path):
    repo = make_repo(
        tmp_path / "repo",
        {"lib.js": LIB, "lib.test.js": TESTS, "other.test.js": "test('x', () => {});\n", "README.md": "x\n"},
    )
    assert related_tests(str(repo), ["lib.js"], {"isPalindrome"}) == ["lib.test.js"]
    assert "test file" in (edit_refusal(str(repo), "lib.test.js", ["lib.js"]) or "")
    assert edit_refusal(str(repo), "lib.test.js", ["lib.js", "lib.test.js"]) is None


def test_the_reply_schema_without_python_has_no_write_function():
    def names(schema):
        return [v["properties"]["name"]["enum"][0] for v in schema["properties"]["action"]["anyOf"]]

    assert "write_function" in names(reply_schema().model_json_schema())
    without = names(reply_schema(python=False).model_json_schema())
    assert "write_function" not in without and {"write_file", "replace", "finish"} <= set(without)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for the project's own check")
async def test_a_javascript_task_sees_its_tests_is_not_offered_write_function_and_lands(tmp_path):
    title = "Implement isPalindrome() in lib.js"
    team = ScriptedTeam(
        root_plans=[plan([task(title, "Make isPalindrome work.", files=["lib.js"])])],
        work={
            title: [
                {"thought": "t", "action": {"name": "write_function", "path": "lib.js", "function": "isPalindrome",
                                            "content": "def isPalindrome(s):\n    return s == s[::-1]\n"}},
                {"thought": "t", "action": {"name": "replace", "path": "lib.js", "search": STUB, "replace": BODY}},
                finish("done"),
            ]
        },
    )  # fmt: skip
    files = {"lib.js": LIB, "lib.test.js": TESTS, "package.json": '{"name": "s"}\n'}
    engine, outcome, bodies, db, repo = await run_in(tmp_path, team, files, check="node --test")
    assert outcome.status == "done", outcome.reason
    first = worker_bodies(bodies)[0]
    prompt = first["messages"][0]["content"] + first["messages"][1]["content"]
    assert "TESTS lib.test.js:" in prompt and "write_function" not in prompt
    schema = json.dumps(first["response_format"])
    assert '"replace"' in schema and "write_function" not in schema
    refused = [a for a in actions(db) if a["name"] == "write_function"]
    assert refused and "write_function edits Python files only" in refused[0]["observation"]
    assert BODY in git(repo, "show", f"{engine.git.branch}:lib.js")


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for the project's own check")
async def test_the_gate_names_failing_node_tests_so_a_change_that_breaks_another_does_not_land(tmp_path):
    """The tip already fails (isPalindrome is a stub), so exit statuses alone cannot tell a change that breaks
    reverse() from one that changes nothing: the gate compares the TAP report's failing test names."""
    team = ScriptedTeam(
        root_plans=[plan([task("Tidy reverse()", files=["lib.js"])])],
        work={"Tidy reverse()": [
            {"thought": "t", "action": {"name": "replace", "path": "lib.js", "search": 'join("")', "replace": 'join("-")'}},
            finish("tidied"),
        ]},
    )  # fmt: skip
    files = {"lib.js": LIB, "lib.test.js": TESTS, "package.json": '{"scripts": {"test": "node --test"}}\n'}
    engine, outcome, _, db, repo = await run_in(tmp_path, team, files, check="node --test", gate_rounds=0)
    assert git(repo, "show", f"{engine.git.branch}:lib.js") + "\n" == LIB
    gate = rows(db, "SELECT verdict, reason FROM gates")
    assert [g["verdict"] for g in gate] == ["refused"] and "1 test(s) fail with this change" in gate[0][
        "reason"
    ]


def test_test_files_are_found_as_a_walk_finds_them_and_new_ones_at_once(tmp_path):
    """The listing kept per folder (a worker's first prompt looks for tests in every task) sees what a walk
    sees: no hidden folders, no dependencies, no folder behind a link; and a test added later, even in a folder
    listed long ago, is found at once."""
    import os

    from formicary.agents.tools.targeted import test_files

    root = tmp_path / "wt"
    for rel in [
        "tests/test_a.py",
        "src/lib.js",
        "src/lib.test.js",
        "node_modules/x/test_n.py",
        ".venv/test_v.py",
        "go/x_test.go",
        "tests/deep/test_b.py",
        "README.md",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    (root / "linked").symlink_to(root / "tests", target_is_directory=True)
    past = 1_000_000_000
    for folder, _dirs, _ in os.walk(root):
        os.utime(folder, (past, past))
    expected = ["go/x_test.go", "src/lib.test.js", "tests/test_a.py", "tests/deep/test_b.py"]
    assert test_files(str(root)) == expected
    assert test_files(str(root)) == expected  # from the kept listings
    (root / "tests" / "deep" / "test_c.py").write_text("x\n")
    (root / "tests" / "test_a.py").unlink()
    assert test_files(str(root)) == [
        "go/x_test.go",
        "src/lib.test.js",
        "tests/deep/test_b.py",
        "tests/deep/test_c.py",
    ]


def test_hints_offer_write_function_only_for_python_files():
    from formicary.agents.roles.briefing import already_shown_nudge, regex_hint

    assert "write_function" in regex_hint("units.py") and "write_function" not in regex_hint("src/lib.js")
    assert "write_function" in already_shown_nudge("units.py", "in your task")
    assert "write_function" not in already_shown_nudge("src/lib.js", "in your task")
