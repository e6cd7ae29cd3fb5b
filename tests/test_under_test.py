"""The functions a failing test calls, shown to the planner (roles/under_test.py)."""

from __future__ import annotations

import pytest

from formicary.agents.roles.under_test import functions_under_test, locate_test

FILES = {
    "units.py": "def km_to_miles(km):\n    return km\n",
    "pkg/__init__.py": "",
    "pkg/text.py": "def slug(t):\n    return t\n",
    "test_units.py": (
        "import unittest\nfrom units import km_to_miles\nimport pkg.text as text\n\n\n"
        "class DistanceTest(unittest.TestCase):\n"
        "    def test_km_to_miles(self):\n        self.assertEqual(round(km_to_miles(1.609344), 6), 1.0)\n\n"
        "    def test_other(self):\n        self.assertEqual(text.slug('a'), 'a')\n"
    ),
    "tests/test_slug.py": "from pkg.text import slug\n\n\ndef test_slug():\n    assert slug('A') == 'a'\n",
}


def test_a_failing_tests_id_leads_to_the_functions_it_calls_from_the_repository():
    read = FILES.get
    assert functions_under_test(["test_units.DistanceTest.test_km_to_miles"], list(FILES), read) == [
        "km_to_miles() in units.py"  # not round() or assertEqual(): they are not the repository's
    ]
    assert functions_under_test(["tests/test_slug.py::test_slug[x]"], list(FILES), read) == [
        "slug() in pkg/text.py"
    ]
    assert functions_under_test(["test_units.DistanceTest.test_other"], list(FILES), read) == [
        "slug() in pkg/text.py"
    ]
    assert functions_under_test(["(failures=1)", "nowhere.T.test_x"], list(FILES), read) == []


def test_a_test_is_located_from_pytest_and_unittest_ids():
    files = set(FILES)
    assert locate_test("tests/test_slug.py::TestX::test_y[1]", files) == ("tests/test_slug.py", "test_y")
    assert locate_test("test_units.DistanceTest.test_km_to_miles", files) == (
        "test_units.py",
        "test_km_to_miles",
    )
    assert locate_test("missing.py::test_a", files) is None


@pytest.mark.anyio
async def test_the_planner_is_told_what_the_failing_tests_call(tmp_path):
    from tests.scripted_server import schema_name
    from tests.scripted_team import ScriptedTeam, plan
    from tests.test_worker_steps import run

    team = ScriptedTeam(root_plans=[plan([])])
    _, _, bodies, _, _ = await run(tmp_path, team, check="python3 -m unittest")
    asked = [b for b in bodies if schema_name(b) == "plan"]
    prompt = asked[0]["messages"][-1]["content"]
    assert "test_units.UnitsTest.test_c_to_f" in prompt
    assert "The failing tests call: c_to_f() in units.py" in prompt
