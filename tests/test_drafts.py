"""Stub bodies drafted by fill-in-the-middle (a completion of the model's FIM prompt on llama-server), tested
before the first chat call.

The scripted server answers a FIM completion through the same responder as chat (schema name ``infill``); the repository,
its tests, the check and the record are real.
"""

from __future__ import annotations

import json

import anyio
import pytest

from formicary.agents.roles.drafts import NOTE_CHARS, body_of, failure_note
from formicary.agents.session.engine import Engine
from formicary.agents.tools.pyedit import body_gap, is_stub_body, same_code
from formicary.store import db as store_db
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer, schema_name
from tests.scripted_team import plan
from tests.test_worker_steps import (
    TESTS,
    UNITS,
    UNITS_FIXED,
    actions,
    fix_task,
    settings_for,
    units_repo,
    write_fn,
)

pytestmark = pytest.mark.anyio


def responder(drafts: list[str], chat_body: str = "return c * 9 / 5 + 32"):
    """Answers the i-th draft with ``drafts[i]`` (the last one after that), every worker chat step with
    ``chat_body`` written by write_function."""
    infills: list[dict] = []

    def respond(body):
        name = schema_name(body)
        if name == "plan":
            return json.dumps(plan([fix_task()]))
        if name == "verdict":
            return json.dumps({"decision": "done", "reason": "ok", "notes": ""})
        if name == "infill":
            infills.append(body)
            return drafts[min(len(infills), len(drafts)) - 1]
        return json.dumps(write_fn(chat_body))

    respond.infills = infills  # type: ignore[attr-defined]
    return respond


async def run(tmp_path, respond, *, infill=True, units=None, tests=None, files=None, slots=1, **limits):
    """A one-cycle session on the units repository (its ``units.py``/``test_units.py`` replaced when given, more
    ``files`` added)."""
    repo = (
        units_repo(tmp_path)
        if units is None and tests is None and files is None
        else make_repo(
            tmp_path / "repo", {"units.py": units or UNITS, "test_units.py": tests or TESTS, **(files or {})}
        )
    )
    db = tmp_path / "f.db"
    with ScriptedServer(responder=respond, infill=infill) as server:
        settings = settings_for(server, check="python3 -m unittest", llama_cpp=True, slots=slots, **limits)
        engine = Engine.create(settings, repo, "Fix units", db_path=db)
        await engine.run()
        bodies = list(server.requests)
    return engine, bodies, db, repo


async def test_a_passing_draft_lands_without_a_chat_call(tmp_path):
    # the cold draft is wrong; the second, hotter one is right but runs on past the function (cut off)
    respond = responder(["    return c * 2\n", "    return c * 9 / 5 + 32\n\n\ndef more():\n    pass\n"])
    engine, bodies, db, repo = await run(tmp_path, respond)
    assert [b for b in bodies if schema_name(b) == "action"] == []
    infills = respond.infills
    assert len(infills) == 2 and infills[0]["temperature"] == 0 and infills[1]["temperature"] > 0
    assert infills[0]["input_prefix"].endswith('    """Celsius to Fahrenheit."""\n')
    assert "replaces this one" not in infills[0]["input_prefix"]  # a stub: nothing to show
    assert infills[0]["input_suffix"] == ""  # c_to_f ends the file
    # the failed draft was undone, and the next one is told how it failed, after the file (its cache kept)
    assert infills[1]["input_prefix"] == infills[0]["input_prefix"]
    note = "\n# A draft of c_to_f() failed test_c_to_f: AssertionError: 200 != 212\n"
    assert infills[1]["input_suffix"] == infills[0]["input_suffix"] + note
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED
    rows = actions(db)
    assert [r["name"] for r in rows] == ["write_function", "write_function", "finish"]
    assert "FAILED" in rows[0]["observation"] and "PASSED" in rows[1]["observation"]
    record = store_db.connect(db)
    kinds = [r["schema_name"] for r in record.query("SELECT schema_name FROM llm_calls ORDER BY created_at")]
    assert kinds.count("infill") == 2
    status = [r["data"] for r in record.query("SELECT data FROM events WHERE kind = 'status'")]
    assert any("draft 2 of c_to_f() by fill-in-the-middle passed its tests" in d for d in status)


async def test_drafts_are_one_request_each_drawn_at_once_on_idle_slots(tmp_path):
    """Never several samples in one request (``n_cmpl``: on llama-server such a request sometimes never answers):
    each draft is its own request. With 4 slots and one worker, the worker's own draft and three more are drawn
    at once, one per slot, each hotter; each is tested as it arrives, a repeated one is not tested, the one that
    passes lands, and each draft is its own call in the record."""
    wrong = ["    return c * 2\n", "    return c\n", "    return c * 2\n"]
    respond = responder([*wrong, "    return c * 9 / 5 + 32\n"])
    engine, bodies, db, repo = await run(tmp_path, respond, slots=4)
    requests = [b for b in bodies if schema_name(b) == "infill"]
    assert len(requests) == 4 and not any("n_cmpl" in b or "n" in b for b in bodies)
    assert sorted(b["temperature"] for b in requests) == [0, 0.7, 0.9, 1.0]
    assert len({b["id_slot"] for b in requests}) == 4  # one round, every idle slot
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED
    rows = actions(db)
    assert [r["name"] for r in rows] == ["write_function", "write_function", "write_function", "finish"]
    record = store_db.connect(db)
    kinds = [r["schema_name"] for r in record.query("SELECT schema_name FROM llm_calls")]
    assert kinds.count("infill") == 4


async def test_drafts_on_one_slot_are_one_at_a_time_on_the_slot_that_holds_the_file(tmp_path):
    respond = responder(["    return c * 2\n", "    return c\n", "    return c * 9 / 5 + 32\n"])
    engine, bodies, db, repo = await run(tmp_path, respond, slots=1)
    requests = [b for b in bodies if schema_name(b) == "infill"]
    assert [b["temperature"] for b in requests] == [0, 0.7, 0.9]
    assert len({b["id_slot"] for b in requests}) == 1
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_when_no_draft_passes_the_chat_loop_starts_from_the_stub(tmp_path):
    respond = responder(["    return c * 2\n", "    return c\n", "    pass\n"])
    engine, bodies, db, repo = await run(tmp_path, respond, drafts_per_stub=3)
    chats = [b for b in bodies if schema_name(b) == "action"]
    assert len(respond.infills) == 3
    assert chats and not any(m["role"] == "assistant" for m in chats[0]["messages"])  # no failed draft in it
    status = [r["data"] for r in store_db.connect(db).query("SELECT data FROM events WHERE kind = 'status'")]
    assert any("3 drafts of c_to_f() by fill-in-the-middle, none passed its tests; the chat loop takes" in d
               for d in status)  # fmt: skip
    rows = actions(db)
    assert [r["name"] for r in rows][:2] == ["write_function", "write_function"]  # the stub draft is skipped
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_a_server_without_infill_is_asked_once_then_chat_goes_on(tmp_path):
    respond = responder(["    return c * 9 / 5 + 32\n"])
    engine, bodies, db, repo = await run(tmp_path, respond, infill=False)
    assert respond.infills == []
    assert len([b for b in bodies if schema_name(b) == "action"]) == 1
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_drafts_off(tmp_path):
    respond = responder(["    return c * 9 / 5 + 32\n"])
    await run(tmp_path, respond, drafts_per_stub=0)
    assert respond.infills == []


def test_body_gap_splits_around_the_stub_body():
    prefix, suffix, head, indent = body_gap(UNITS, "c_to_f")
    assert prefix + "    return None\n" + suffix == UNITS
    assert head == 'def c_to_f(c):\n    """Celsius to Fahrenheit."""' and indent == 4
    assert body_gap(UNITS, "double") is None  # not a stub
    assert body_gap(UNITS, "double", 1)[0].endswith('"""Return twice ``x``."""\n')  # short enough to redraft
    long = "def f(x):\n" + "    x += 1\n" * 21 + "    return x\n"
    assert body_gap(long, "f", 20) is None and body_gap(long, "f", 22) is not None
    assert body_gap(UNITS, "missing") is None
    assert body_gap("def f(:\n", "f") is None


def test_body_gap_of_a_decorated_method():
    source = 'class A:\n    @staticmethod\n    def f(x):\n        """Doc."""\n        raise NotImplementedError\n\n    def g(self):\n        return 1\n'
    prefix, suffix, head, indent = body_gap(source, "A.f")
    assert head == '    @staticmethod\n    def f(x):\n        """Doc."""' and indent == 8
    assert suffix.startswith("\n    def g(self):")
    assert body_gap("def f(): pass\n", "f") is None  # on the def line: nothing to fill in


def test_body_of_stops_where_the_function_ends():
    assert body_of("    x = 1\n\n    return x\n\n\ndef g():\n    pass\n", 4) == "    x = 1\n\n    return x"
    assert body_of("return x\n", 4) is None  # not indented as a body
    assert body_of("\n\n", 4) is None
    assert is_stub_body("def f():", "    pass") and is_stub_body(
        "def f():", "    raise NotImplementedError()"
    )
    assert not is_stub_body("def f():", "    return 1")


TWO_TESTS = """import unittest

from units import c_to_f


class UnitsTest(unittest.TestCase):
    def test_freezing(self):
        self.assertEqual(c_to_f(0), 32)

    def test_boiling(self):
        self.assertEqual(c_to_f(100), 212)
"""


async def test_the_draft_that_did_most_is_the_chat_loops_first_edit(tmp_path):
    """No draft passes; the one that made one of the two tests pass stays, as the worker's first edit."""
    respond = responder(["    return 0\n", "    return 32\n", "    return c\n"])
    engine, bodies, _, repo = await run(tmp_path, respond, tests=TWO_TESTS, drafts_per_stub=3)
    chats = [b for b in bodies if schema_name(b) == "action"]
    assert len(respond.infills) == 3
    first_chat = chats[0]["messages"]
    assert first_chat[2]["role"] == "assistant" and "return 32" in first_chat[2]["content"]
    assert "FAILED" in first_chat[3]["content"]
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


def test_same_code_is_judged_by_syntax_tree():
    head = 'def f(x):\n    """Doc."""'
    assert same_code(head, "    return 'a'  # note", '    return "a"')
    assert not same_code(head, "    return 'a'", "    return 'b'")


async def test_a_short_failing_function_is_redrafted_and_its_own_code_is_not_tried_again(tmp_path):
    """After partial work landed, the re-planned function is no stub: short, it is drafted afresh; a draft that
    is its current code (other quotes or spacing) is skipped, not sent to write_function (which would refuse it
    and make the worker start over)."""
    wrong = UNITS.replace("    return None\n", "    return c * 2\n")
    respond = responder(["    return c*2\n", "    return c * 9 / 5 + 32\n"])
    engine, _, db, repo = await run(tmp_path, respond, units=wrong, tests=TWO_TESTS)
    assert len(respond.infills) == 2
    shown = respond.infills[0]["input_prefix"]  # a bug fix: each draft sees the body it replaces
    assert "# The body below replaces this one, which fails its tests:\n#     return c * 2\n" in shown
    assert [r["name"] for r in actions(db)] == ["write_function", "finish"]
    status = [r["data"] for r in store_db.connect(db).query("SELECT data FROM events WHERE kind = 'status'")]
    assert not any("started its task again" in d for d in status)
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


async def test_a_draft_that_never_answers_is_given_up_and_the_chat_loop_lands_the_fix(tmp_path, monkeypatch):
    """A draft that never answers (a server stuck behind other slots' prompts): the draft's own timeout ends it
    (no retry), drafting stops, and the chat loop goes on; the hang costs one draft, not the task."""
    from formicary.agents.model import client as client_module

    monkeypatch.setattr(client_module, "INFILL_TIMEOUT", 1.0)
    respond = responder([])
    plain = respond

    def hanging(body):
        if schema_name(body) == "infill":
            plain.infills.append(body)
            return {"fail": "hang"}
        return plain(body)

    hanging.infills = plain.infills  # type: ignore[attr-defined]
    with anyio.fail_after(
        15
    ):  # the role's timeout here is 20 s: without the draft's own, the hang outlasts this
        engine, bodies, db, repo = await run(tmp_path, hanging)
    assert len(plain.infills) == 1  # given up once, not retried
    status = [r["data"] for r in store_db.connect(db).query("SELECT data FROM events WHERE kind = 'status'")]
    assert any("a draft of c_to_f() failed" in d and "drafting stops" in d for d in status)
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == UNITS_FIXED


def test_a_failure_note_is_the_first_failing_test_and_its_error_in_one_line():
    pytest_out = (
        "_______________ test_ordinal[11-11th] _______________\n"
        "    def test_ordinal(number, ordinalized):\n>       assert ordinalized == number + ordinal(number)\n"
        "E       AssertionError: assert '11th' == '11st'\nE         - 11st\n"
        "FAILED test_inflection.py::test_ordinal[11-11th]\n1 failed, 3 passed\n"
    )
    assert failure_note(pytest_out) == "test_ordinal[11-11th]: AssertionError: assert '11th' == '11st' - 11st"
    unittest_out = "F\n=====\nFAIL: test_boils (test_units.T.test_boils)\n---\nAssertionError: 200 != 212\n"
    assert failure_note(unittest_out) == "test_boils: AssertionError: 200 != 212"
    assert failure_note("Ran 3 tests\nOK\n") is None
    assert len(failure_note("E   " + "x" * 1000) or "") == NOTE_CHARS


async def test_a_working_function_is_not_redrafted_for_another_functions_failing_tests(tmp_path):
    """Seen on an unseen bug-fix goal: a task planned for a working slugify() (the failing tests were
    word_count()'s) redrafted it twelve times. Only a stub, or a function the failures name, is drafted."""
    working = UNITS.replace("    return None\n", "    return c * 9 / 5 + 32\n").replace("2 * x", "3 * x")
    respond = responder(["    return c * 9 / 5 + 32\n"])
    await run(tmp_path, respond, units=working, steps_per_worker=2)
    assert respond.infills == []
