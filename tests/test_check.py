"""The check runner: detection from a tree's files, real pytest/unittest runs naming failing tests, the
targeted check after a write, and the parse gate on hostile files."""

from __future__ import annotations

import json

import pytest

from formicary.agents.tools.check import (
    CheckSpec,
    check_after_write,
    detect,
    failing_from_output,
    parse_junit,
    run_check,
    spec_for,
    targeted,
)
from formicary.agents.tools.parse_gate import parse_problems

pytestmark = pytest.mark.anyio

NONE = "none"  # sandbox mode for speed; one test runs under bubblewrap

CODE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TESTS = (
    "import unittest\n\nfrom calc import add, sub\n\n\n"
    "class TestCalc(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_sub(self):\n        self.assertEqual(sub(5, 3), 2)\n"
)


def project(tmp_path, code: str = CODE, tests: str = TESTS):
    (tmp_path / "calc.py").write_text(code)
    (tmp_path / "test_calc.py").write_text(tests)
    return tmp_path


def files(mapping: dict[str, str]):
    return list(mapping), mapping.get


def test_detection_order_and_explicit_choices():
    paths, read = files({"pkg/mod.py": "", "tests/test_mod.py": ""})
    assert detect(paths, read, lambda: True).command.startswith("python3 -m pytest")
    assert detect(paths, read, lambda: False).command == "python3 -m unittest"
    paths, read = files({"package.json": json.dumps({"scripts": {"test": "jest"}})})
    assert detect(paths, read, lambda: True).command == "npm test"
    placeholder = {"scripts": {"test": 'echo "Error: no test specified" && exit 1'}}
    paths, read = files({"package.json": json.dumps(placeholder)})
    assert not detect(paths, read, lambda: True).enabled
    paths, read = files({"package.json": "{not json", "Cargo.toml": "[package]"})
    assert detect(paths, read, lambda: True).command == "cargo test"
    paths, read = files({"go.mod": "module x", "Makefile": "test:\n\tgo test\n"})
    assert detect(paths, read, lambda: True).command == "go test ./..."
    paths, read = files({"Makefile": "build:\n\tcc x.c\ntest: build\n\t./run\n"})
    assert detect(paths, read, lambda: True).command == "make test"
    paths, read = files({"Makefile": "build:\n\tcc x.c\n", "README.md": ""})
    assert not detect(paths, read, lambda: True).enabled
    assert spec_for("none", "--check").command == "" and spec_for("NONE", "config").source == "config"
    assert spec_for("pytest -x", "config").runner == "pytest"
    assert spec_for("python3 -m unittest", "config").runner == "unittest"
    assert spec_for("./ci.sh", "--check").describe() == "./ci.sh (--check)"


def test_failing_ids_from_runner_output():
    assert failing_from_output("custom", "FAILED (failures=1)\n") == frozenset()  # unittest's summary line
    assert failing_from_output("pytest", "FAILED t.py::test_a - assert 1\nERROR t2.py\n") == {
        "t.py::test_a",
        "t2.py",
    }
    text = "FAIL: test_x (test_m.TestM.test_x)\nERROR: test_m (unittest.loader._FailedTest.test_m)\n"
    assert failing_from_output("unittest", text) == {
        "test_m.TestM.test_x",
        "unittest.loader._FailedTest.test_m",
    }
    assert failing_from_output("unittest", "FAIL: test_x (test_m.TestM)\n") == {"test_m.TestM.test_x"}
    assert failing_from_output("go", "    --- FAIL: TestA (0.00s)\nFAIL\tex/pkg\t0.1s\n") == {
        "TestA",
        "package ex/pkg",
    }
    assert failing_from_output("cargo", "test a::b ... FAILED\ntest c ... ok\n") == {"a::b"}
    tap = "TAP version 13\nok 1 - reverse\nnot ok 2 - isPalindrome\n  ---\n    not ok 1 - nested case\nnot ok 3 - later # TODO\n"
    assert failing_from_output("npm", tap) == {"isPalindrome", "nested case"}
    jest = "  ● strings › isPalindrome handles case\n\n    expect(received).toBe(expected)\n"
    assert failing_from_output("npm", jest) == {"strings › isPalindrome handles case"}
    assert failing_from_output("npm", " FAIL  lib.test.js > strings > reverse\n") == {
        "lib.test.js > strings > reverse"
    }
    assert parse_junit(b"<html/>") is None and parse_junit(b"not xml") is None
    xml = (
        b'<testsuites><testsuite><testcase classname="m" name="a"/>'
        b'<testcase classname="m" name="b"><failure/></testcase>'
        b'<testcase classname="" name="m2"><error/></testcase>'
        b'<testcase classname="m" name="c"><skipped/></testcase></testsuite></testsuites>'
    )
    assert parse_junit(xml) == (frozenset({"m::b", "m2"}), 1)


def test_an_edit_that_made_progress_is_known_from_the_runners_counts():
    """A worker's failed edit is drawn again unless it made progress (agents/roles/resample.py)."""
    from formicary.agents.tools.targeted import CheckRun

    one = CheckRun("pytest -x t.py", 1, "F\n1 failed, 1 passed in 0.1s")
    three = CheckRun("pytest -x t.py", 1, "F\n1 failed, 3 passed in 0.1s")
    assert three.better_than(one) and not one.better_than(three) and not one.better_than(one)
    assert not three.better_than(CheckRun("other", 1, "1 failed"))  # another command says nothing
    assert not three.better_than(None)
    worse = CheckRun("python3 -m unittest", 1, "Ran 14 tests in 0.01s\n\nFAILED (failures=3, errors=1)")
    better = CheckRun("python3 -m unittest", 1, "Ran 14 tests in 0.01s\n\nFAILED (failures=2)")
    assert better.better_than(worse) and not worse.better_than(better)
    assert CheckRun("python3 -m unittest", 0, "OK").better_than(worse)


async def test_pytest_run_names_failures_through_junit_and_removes_the_file(tmp_path):
    root = project(tmp_path, CODE.replace("a - b", "a + b"))
    spec = spec_for("python3 -m pytest -q -p no:cacheprovider", "config")
    result = await run_check(root, spec, NONE, timeout=120)
    assert not result.ok and result.failing == {"test_calc.TestCalc::test_sub"} and result.passed == 1
    assert not (root / ".formicary-check-junit.xml").exists()
    (root / "calc.py").write_text("def add(a, b:\n")
    broken = await run_check(root, spec, NONE, timeout=120)
    assert broken.failing == {"test_calc"}  # a collection error is named by its module


async def test_unittest_run_names_failures_and_passes(tmp_path):
    root = project(tmp_path)
    spec = spec_for("python3 -m unittest", "config")
    assert (await run_check(root, spec, NONE, timeout=120)).ok
    (root / "calc.py").write_text(CODE.replace("a - b", "a * b"))
    result = await run_check(root, spec, NONE, timeout=120)
    assert result.exit_code == 1 and result.failing == {"test_calc.TestCalc.test_sub"}
    (root / "calc.py").write_text("def add(a, b:\n")
    result = await run_check(root, spec, NONE, timeout=120)
    assert result.failing == {"unittest.loader._FailedTest.test_calc"}


async def test_a_failure_without_names_is_known_by_exit_status_only(tmp_path):
    result = await run_check(tmp_path, spec_for("echo boom; exit 3", "config"), NONE, timeout=30)
    assert result.exit_code == 3 and result.failing is None and "boom" in result.output
    timed = await run_check(tmp_path, spec_for("sleep 5", "config"), NONE, timeout=0.5)
    assert timed.timed_out and not timed.ok and timed.summary() == "timed out"


async def test_check_runs_in_the_sandbox(tmp_path):
    from formicary.agents.tools.sandbox import sandbox_problem

    if sandbox_problem("bubblewrap"):
        pytest.skip("no usable bubblewrap here")
    root = project(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    spec = spec_for(f"python3 -m unittest && echo x > {outside}", "config")
    result = await run_check(root, spec, "bubblewrap", timeout=120)
    assert result.ok and not outside.exists()  # what it wrote outside the worktree is gone with it


async def test_check_after_write_targets_the_touched_modules_tests(tmp_path):
    root = project(tmp_path)
    (root / "other.py").write_text("X = 1\n")
    (root / "test_other.py").write_text(
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_x(self):\n        self.fail('other')\n"
    )
    spec = spec_for("python3 -m unittest", "config")
    narrow = targeted(spec, root, ["calc.py"])
    assert narrow.command == "python3 -m unittest test_calc"
    done = await check_after_write(root, spec, ["calc.py"], NONE, timeout=120)
    assert done is not None and done.targeted and done.result.ok and "passed" in done.observation()
    whole = await check_after_write(root, spec, ["README.md"], NONE, timeout=120)
    assert whole is not None and not whole.targeted and not whole.result.ok
    assert "test_other.T.test_x" in whole.observation()
    assert await check_after_write(root, CheckSpec(), ["calc.py"], NONE) is None
    pytest_spec = spec_for("python3 -m pytest -q", "config")
    assert targeted(pytest_spec, root, ["calc.py"]).command == "python3 -m pytest -q test_calc.py"
    assert targeted(spec_for("make test", "config"), root, ["calc.py"]).command == "make test"


async def test_parse_gate_names_each_broken_file_and_survives_hostile_ones():
    found = await parse_problems(
        {
            "ok.py": CODE,
            "bad.py": 'def f():\n    """unterminated\n',
            "nulls.py": "x = 1\0\n",
            "deep.py": "x = " + "(" * 5000 + ")" * 5000 + "\n",
            "ok.json": '{"a": [1, 2]}',
            "bad.json": '{"a": [1, 2}',
            "ok.toml": "[a]\nb = 1\n",
            "bad.toml": "[a\nb = 1\n",
            "ok.yaml": "a: &x [1, 2]\nb: *x\n",
            "bombs.yaml": "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c]\n",
            "bad.yml": "a: [1, 2\nb: 3\n",
            "notes.txt": "(((",
        }
    )
    assert set(found) == {"bad.py", "nulls.py", "deep.py", "bad.json", "bad.toml", "bad.yml"}
    assert "line 2" in found["bad.py"] or "line 3" in found["bad.py"]
    assert await parse_problems({"a.txt": "((("}) == {}


def test_program_of_names_only_what_path_lookup_decides():
    from formicary.agents.tools.check import program_of

    assert program_of("pytest -q") == "pytest"
    assert program_of("CI=1 LANG=C make test") == "make"
    for not_looked_up in ("./run_tests.sh", "cd sub && pytest", "'unterminated", "$RUNNER test", ""):
        assert program_of(not_looked_up) is None, not_looked_up
