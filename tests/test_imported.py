"""What a module imports from its own repository, shown to a worker: a signature and a docstring line each."""

from __future__ import annotations

import json

import pytest

from formicary.agents.roles.drafts import with_helpers
from formicary.agents.tools.imported import MAX_NAMES, imported_helpers
from formicary.agents.tools.pyedit import body_gap
from tests.scripted_team import ScriptedTeam, finish, plan, write
from tests.test_drafts import responder, run
from tests.test_worker_steps import TESTS, UNITS, UNITS_FIXED, actions, fix_task, run_in, worker_bodies

NORM = '''"""Normalizers."""


def normalize_hex(hex_value: str) -> str:
    """
    Normalize a hexadecimal color value to six lowercase digits.

    More text.
    """
    return hex_value


class IntegerRGB(tuple):
    """Three integers."""


def _private(x):
    return x
'''

CONV = '''from re import sub
from ._norm import normalize_hex, IntegerRGB
from pkg.other import helper, MISSING
from . import nothing_here


def hex_to_rgb(hex_value: str) -> IntegerRGB:
    """Hex to RGB."""
    raise NotImplementedError
'''


def reader(files: dict[str, str]):
    return lambda path: files.get(path)


def test_relative_and_absolute_imports_from_the_repository_are_summarised():
    files = {
        "src/pkg/_norm.py": NORM,
        "src/pkg/other.py": "async def helper(a, *, b=1):\n    '''Help.'''\n",
        "src/pkg/conv.py": CONV,
    }
    lines = imported_helpers("src/pkg/conv.py", CONV, reader(files))
    assert lines == [
        "def normalize_hex(hex_value: str) -> str:  # Normalize a hexadecimal color value to six lowercase digits.",
        "class IntegerRGB(tuple):  # Three integers.",
        "async def helper(a, *, b=1):  # Help.",
    ]  # the standard library's ``re`` and names the repository does not define are left out


def test_bounds_and_bad_input():
    many = "".join(f"def f{i}():\n    '''Doc {i}.'''\n\n" for i in range(40))
    text = f"from .many import {', '.join(f'f{i}' for i in range(40))}\n"
    assert len(imported_helpers("m.py", text, reader({"many.py": many}))) == MAX_NAMES
    assert imported_helpers("m.py", "def (:\n", reader({})) == []
    assert imported_helpers("m.py", "from .x import y\n", reader({"x.py": "def (:"})) == []
    # an import climbing above the repository is never read
    seen: list[str] = []
    imported_helpers("m.py", "from ...up import y\n", lambda p: seen.append(p))
    assert not any(p.startswith("..") for p in seen)


def test_a_draft_sees_the_helpers_just_above_the_function():
    prefix, _, head, _ = body_gap(CONV, "hex_to_rgb")
    far, near = with_helpers(prefix, head, ["def normalize_hex(hex_value: str) -> str:  # Six digits."])
    assert far + near == prefix.replace(
        head,
        "# Imported from this repository:\n# def normalize_hex(hex_value: str) -> str:  # Six digits.\n"
        + head,
    )
    assert near.startswith("# Imported") and near.endswith(head + "\n")
    assert with_helpers(prefix, head, []) == (prefix[: -len(head) - 1], head + "\n")


RECORDS = '''from typing import NamedTuple


class RGB(NamedTuple):
    """Three ints."""

    red: int
    green: int
    blue: int


def tableize(word):
    """Table name."""
    raise NotImplementedError


def _private(x):
    return x
'''


def test_an_imported_record_class_says_how_to_build_one():
    files = {"records.py": RECORDS}
    lines = imported_helpers("m.py", "from .records import RGB, tableize, _private\n", reader(files))
    assert lines[0] == "class RGB(NamedTuple):  # RGB(red: int, green: int, blue: int); Three ints."


pytestmark = pytest.mark.anyio

UNITS_WITH_HELPER = '''from helpers import scale


def c_to_f(c):
    """Celsius to Fahrenheit."""
    return None
'''


async def test_the_worker_prompt_and_its_drafts_show_what_the_module_imports(tmp_path):
    tests = (
        "import unittest\nfrom units import c_to_f\n\n\nclass T(unittest.TestCase):\n"
        "    def test_boils(self):\n        self.assertEqual(c_to_f(100), 212)\n"
    )
    respond = responder(["    return c\n"], chat_body="return scale(c)")  # the draft fails: the chat loop
    helpers = {
        "helpers.py": 'def scale(x, factor=1.8, offset=32):\n    """Multiply by factor, then add offset."""\n'
        "    return x * factor + offset\n"
    }
    _, bodies, _, _ = await run(
        tmp_path, respond, units=UNITS_WITH_HELPER, tests=tests, files=helpers, drafts_per_stub=1
    )
    line = "def scale(x, factor=1.8, offset=32):  # Multiply by factor, then add offset."
    assert f"# {line}\n" in respond.infills[0]["input_prefix"]
    chats = [b for b in bodies if b.get("messages") and json.dumps(b).count("TASK:")]
    assert chats and line in chats[0]["messages"][1]["content"]


async def test_a_module_nested_too_deep_to_parse_does_not_stop_the_worker(tmp_path):
    """A hostile repository: the task's module (and a module it imports) nest thousands deep, which exhausts the
    parser's stack; the worker is still briefed (without an outline of that module) and acts."""
    deep = "x = a" + ".b" * 5000 + "\n"
    units = "from deep import x\n" + deep + UNITS
    team = ScriptedTeam(
        root_plans=[plan([fix_task()])],
        work={fix_task()["title"]: [write("units.py", UNITS_FIXED), finish()]},
    )
    files = {"units.py": units, "deep.py": deep, "test_units.py": TESTS, "README.md": "x\n"}
    engine, outcome, bodies, db, repo = await run_in(tmp_path, team, files, check="python3 -m unittest")
    assert outcome.status in ("done", "stopped"), outcome.reason
    assert worker_bodies(bodies), "the worker never asked for its first action"
    assert [r["name"] for r in actions(db)][:1] == ["write_file"]
