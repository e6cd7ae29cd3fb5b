"""Which tests check a task's writes: the functions its text names as code, and their tests however a test suite
names them. Seen on more-itertools (``TestAlwaysIterable``, and an ``only()`` in the same module): the worker was
told its broken ``always_iterable()`` passed its tests, finished, and the gate refused it twice."""

from __future__ import annotations

import sys

import pytest

from formicary.agents.roles.briefing import task_names
from formicary.agents.tools.sandbox import SandboxOptions
from formicary.agents.tools.targeted import check_after_edit, selection_words

pytestmark = pytest.mark.anyio

MODULE = '''def always_iterable(obj):
    """An iterator over obj's items; an empty one for None."""
    return iter(obj)


def only(iterable):
    """The one item of iterable."""
    (item,) = iterable
    return item
'''
TESTS = """from unittest import TestCase

from mod import always_iterable, only


class TestAlwaysIterable(TestCase):
    def test_none(self):
        self.assertEqual(list(always_iterable(None)), [])


class TestOnly(TestCase):
    def test_one(self):
        self.assertEqual(only([1]), 1)
"""


def test_the_task_names_functions_its_title_or_code_names_not_words_of_its_prose():
    instructions = "Write `always_iterable()` in mod.py as its docstring and its tests specify. Change only that function."
    assert task_names("always_iterable() in mod.py", instructions, [MODULE]) == {"always_iterable"}
    assert task_names("Fix the iterator", "Make `only` and always_iterable( handle None.", [MODULE]) == {
        "always_iterable",
        "only",
    }
    assert task_names("Fix the iterators", "Make only work on tuples.", [MODULE]) == {"only"}  # nothing else


def test_a_snake_case_name_also_selects_the_test_class_named_after_it():
    assert selection_words({"always_iterable", "only", "_private_thing"}) == [
        "_private_thing",
        "always_iterable",
        "alwaysiterable",
        "only",
        "privatething",
    ]


async def test_the_check_after_a_write_runs_the_tests_of_the_class_named_after_the_function(tmp_path):
    (tmp_path / "mod.py").write_text(MODULE)
    (tmp_path / "test_mod.py").write_text(TESTS)
    run = await check_after_edit(
        f"{sys.executable} -m pytest",
        str(tmp_path),
        ["test_mod.py"],
        {"always_iterable", "only"},
        SandboxOptions(mode="none", timeout=60),
        60,
    )
    assert run is not None and run.exit_code == 1, run and run.output
    assert "TestAlwaysIterable" in run.output
