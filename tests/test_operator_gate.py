"""The operator's view of the landing gate: the summary's check at start and end and its refusals, the task
tree's gate marks and the report's refusals, from a real gated session (scripted workers, a real check)."""

from __future__ import annotations

import pytest

from formicary.agents.session.engine import Engine
from formicary.report_data import load_report
from formicary.store.db import connect
from formicary.summary import load_summary, render
from formicary.view.follow import SessionModel
from formicary.widgets.task_tree import task_label
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, read, task, write
from tests.test_gate import CALC, gate_settings, project

pytestmark = pytest.mark.anyio


async def test_summary_tree_and_report_show_the_gate(tmp_path):
    repo = project(tmp_path)  # its check fails from the start: stats.mean is wrong
    broken = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"
    fixed = CALC + "\n\ndef mul(a, b):\n    return a * b\n"
    team = ScriptedTeam(
        root_plans=[plan([task("Add mul")])],
        work={"Add mul": [write("calc.py", broken), finish("mul")]},
        on_refusal={"Add mul": [read("calc.py"), write("calc.py", fixed), finish("mul, sub kept")]},
    )
    db_path = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        engine = Engine.create(gate_settings(server), repo, "add mul", db_path=db_path)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    db = connect(db_path, readonly=True, migrate=False)
    summary = load_summary(db, engine.session_id)
    text = "\n".join(render(summary))
    assert summary.check_start is not None and summary.check_start.passed is False
    assert summary.check_end is not None and summary.check_end.passed is False
    assert "check     start: FAILED · end: FAILED" in text and "(python3 -m unittest, config)" in text
    assert "gate      1 passed, 1 refused" in text

    model = SessionModel(engine.session_id)
    first = model.load(db)
    work = next(t for t in first.tasks if t.title == "Add mul")
    assert (work.gate, work.refusals) == ("passed", 1)
    assert "gate ✔ after 1 refused" in task_label(work).plain
    planner = next(t for t in first.tasks if t.kind != "work")
    assert "gate" not in task_label(planner).plain

    report = load_report(db, engine.session_id)
    assert sum(c.get("gate refused", 0) for c in report.landing.values()) == 1
    db.conn.close()


def test_a_gate_event_relabels_the_task(tmp_path):
    from formicary.store.writer import Writer
    from tests.tui_record import S1, Recorder, build_record

    db_path = tmp_path / "f.db"
    build_record(db_path, tmp_path / "repo")
    db = connect(db_path, readonly=True, migrate=False)
    model = SessionModel(S1)
    model.load(db)
    w = Writer(db_path)
    r = Recorder(w, S1)
    r.n = 3000
    for n, verdict in enumerate(("refused", "refused")):
        w.insert("gates", {"id": f"G{n}", "session_id": S1, "task_id": "T08", "verdict": verdict,
                           "created_at": "2025-01-15T10:09:00.000+00:00"})  # fmt: skip
        r.event(540 + n, "gate", agent="AG07", task="T08", verdict=verdict, reason="1 test newly failing")
    w.flush()
    w.close()
    from formicary.store import queries as q

    delta = model.apply(db, q.events_since(db, S1, model.seq))
    changed = {t.id: t for t in delta.tasks}
    assert (changed["T08"].gate, changed["T08"].refusals) == ("refused", 2)
    assert "gate ✘ refused ×2" in task_label(changed["T08"]).plain
    again = SessionModel(S1)
    assert next(t for t in again.load(db).tasks if t.id == "T08").refusals == 2
    db.conn.close()
