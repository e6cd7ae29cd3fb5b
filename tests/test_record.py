"""The lean record: each model call stores what is new since its agent's previous call, compressed when large,
and every request the server received is rebuilt from the record byte for byte."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from formicary.agents.session.engine import Engine
from formicary.cli import main
from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.migrations import migrations
from formicary.store.packing import Zipped, unpack
from formicary.store.redact import REDACTED, Redactor
from formicary.store.writer import Writer
from tests.gitrepo import make_repo
from tests.scripted_server import ScriptedServer, message_text
from tests.scripted_team import finish, read, task
from tests.test_engine import settings_for, team

pytestmark = pytest.mark.anyio

BIG = "".join(f"line {i}: the same words again and again\n" for i in range(150))


def with_long_task(base):
    """The engine test's team plus a task whose reads overflow a small context window (trimmed mid-way)."""

    def respond(body):
        messages = body.get("messages") or []
        if messages and "TASK: Long read" in message_text(messages[1]):
            steps = re.findall(r"OBSERVATION \(step (\d+)", message_text(messages[-1]))
            step = int(steps[-1]) if steps else 0
            return json.dumps(finish("read it all") if step >= 6 else read("big.txt"))
        return base(body)

    base.root_plans[0]["tasks"].append(task("Long read", files=["big.txt"]))
    return respond


async def test_every_request_is_rebuilt_byte_for_byte(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "shared.txt": "base\n", "big.txt": BIG})
    db_path = tmp_path / "f.db"
    with ScriptedServer(responder=with_long_task(team()), latency=0.02) as server:
        settings = settings_for(server)
        settings.model.context_length = 6000  # big.txt is ~6 KB: a few reads and the oldest steps go
        engine = Engine.create(settings, repo, "Add the files", db_path=db_path)
        outcome = await engine.run()
        sent = sorted(json.dumps(body["messages"], ensure_ascii=False) for body in server.requests)
    assert outcome.status == "done", outcome.reason

    db = store_db.connect(db_path)
    rows = list(db.query("SELECT * FROM llm_calls"))
    assert len(rows) == len(sent)
    rebuilt = []
    for agent_id in {r["agent_id"] for r in rows}:
        calls = queries.agent_calls(db, agent_id)
        rebuilt += [json.dumps(c["messages"], ensure_ascii=False) for c in calls]
        assert queries.call_messages(db, calls[-1]["id"]) == calls[-1]["messages"]
    assert sorted(rebuilt) == sent

    stored = sum(len(r["request"]) for r in rows)
    assert stored * 4 < sum(len(s) for s in sent), "the record should hold far less than every full request"
    by_id = {r["id"]: r for r in rows}
    trimmed = [
        r for r in rows if r["parent_id"] and r["kept"] < len(queries.call_messages(db, r["parent_id"]))
    ]
    assert trimmed, "the long task's conversation was trimmed: a call that keeps less than its parent sent"
    assert all(by_id[r["parent_id"]]["agent_id"] == r["agent_id"] for r in rows if r["parent_id"])
    assert any(isinstance(r["request"], bytes) for r in rows), "large requests are stored compressed"

    agent = trimmed[0]["agent_id"]
    # an action's long observation is stored compressed and read back as text
    raw = [r["observation"] for r in db.query("SELECT observation FROM actions WHERE agent_id = ?", [agent])]
    assert any(isinstance(o, bytes) for o in raw)
    shown_actions = queries.last_actions_of(db, agent)
    assert any("line 149: the same words" in (a["observation"] or "") for a in shown_actions)

    # the CLI shows a call's whole conversation, and refuses an agent it cannot name in one line
    shown = CliRunner().invoke(main, ["calls", agent[-10:], "--db", str(db_path)])
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.output.splitlines()]
    assert [c["messages"] for c in lines] == [c["messages"] for c in queries.agent_calls(db, agent)]
    missing = CliRunner().invoke(main, ["calls", "NOSUCHAGENT", "--db", str(db_path)])
    assert missing.exit_code != 0 and "no agent matches" in missing.output


def test_records_from_before_the_lean_record_still_read(tmp_path):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m005_lean_calls")
    whole = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    old["llm_calls"].insert(
        {
            "id": "C1",
            "agent_id": "A1",
            "role": "worker",
            "model": "m",
            "endpoint": "e",
            "request": json.dumps(whole),
            "response": '{"x": 1}',
            "created_at": "2026-01-01T00:00:00.000+00:00",
        }
    )
    old.conn.commit()
    old.conn.close()
    db = store_db.connect(path)  # migrates
    [call] = queries.agent_calls(db, "A1")
    assert call["messages"] == whole and call["response"] == '{"x": 1}'
    assert queries.call_messages(db, "C1") == whole


def test_a_missing_parent_is_reported_not_guessed(tmp_path):
    db = store_db.connect(tmp_path / "f.db")
    db["llm_calls"].insert(
        {
            "id": "C2",
            "agent_id": "A1",
            "role": "worker",
            "model": "m",
            "endpoint": "e",
            "parent_id": "C1",
            "kept": 2,
            "request": "[]",
            "created_at": "2026-01-01T00:00:00.000+00:00",
        }
    )
    with pytest.raises(LookupError, match="parent call C1"):
        queries.agent_calls(db, "A1")


def test_redaction_sees_compressed_text(tmp_path, monkeypatch):
    secret = "sk-" + "a1b2c3d4" * 4
    writer = Writer(tmp_path / "f.db", Redactor())
    text = BIG + f"the key is {secret}\n"
    writer.insert("events", {"id": "E1", "kind": "k", "data": Zipped(text), "created_at": "t"})
    writer.flush()
    writer.close()
    [stored] = [r[0] for r in sqlite3.connect(tmp_path / "f.db").execute("SELECT data FROM events")]
    assert isinstance(stored, bytes) and len(stored) < len(text) / 4
    assert secret.encode() not in stored
    back = unpack(stored)
    assert back is not None and secret not in back and REDACTED in back and back.startswith(BIG)
