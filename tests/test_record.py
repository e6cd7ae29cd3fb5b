"""The lean record: each model call stores what is new since its agent's previous call, compressed when large,
and every request the server received is rebuilt from the record byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import zlib

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
from formicary.store.writer import StoreError, Writer
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

    # the long task's worker (a worker that starts over also keeps less than its parent sent)
    agent = next(
        a
        for a in sorted({r["agent_id"] for r in trimmed})
        if db.execute("SELECT 1 FROM actions WHERE agent_id = ? AND target = 'big.txt'", [a]).fetchone()
    )
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
    assert queries.call_messages(db, call["id"]) == whole


def test_a_missing_parent_is_reported_not_guessed(tmp_path):
    """A call that keeps messages of a parent the record lacks fails to read, before m008 and after."""
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m008_compact_timeline")
    row = {
        "seq": 1,
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
    old["llm_calls"].insert(row)
    old.conn.commit()
    with pytest.raises(LookupError, match="parent call C1"):
        queries.agent_calls(old, "A1")
    old.conn.close()
    db = store_db.connect(path)  # migrates
    with pytest.raises(LookupError, match="its parent call is not in the record"):
        queries.agent_calls(db, "A1")
    # written after m008: the parent is the agent's previous call, and there is none
    db.execute(
        "INSERT INTO llm_calls (agent_id, role, model, endpoint, parent_id, kept, request, created_at) "
        "VALUES ('A2', 'worker', 'm', 'e', 'C1', 2, '[]', 0)"
    )
    with pytest.raises(LookupError, match="its parent call is not in the record"):
        queries.agent_calls(db, "A2")


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


def _call(
    agent: str, call_id: str, messages: list[dict], reply: str, *, parent: str | None, kept: int
) -> dict:
    """An ``llm_calls`` row as the model client writes it (compressed against the agent's context)."""
    return {
        "id": call_id,
        "session_id": "S1",
        "agent_id": agent,
        "role": "worker",
        "model": "m",
        "endpoint": "e",
        "parent_id": parent,
        "kept": kept,
        "request": Zipped(json.dumps(messages[kept:], ensure_ascii=False), against=agent, shared=None),
        "response": Zipped(reply, remember=(agent, "reply"), shared="reply:worker"),
        "created_at": store_db.now_ms(),
    }


def _action(agent: str, step: int, observation: str, **extra) -> dict:
    return {
        "session_id": "S1",
        "agent_id": agent,
        "task_id": "T1",
        "step": step,
        "name": "read_file",
        "arguments": Zipped(json.dumps({"path": "big.txt"}), against=agent),
        "observation": Zipped(observation, remember=(agent, "observation")),
        "created_at": "2026-01-01T00:00:00.000+00:00",
        "target": "big.txt",
    } | extra


def test_texts_compressed_against_context_read_back_even_after_a_failed_batch(tmp_path):
    """A request repeats the observation before it, so it is stored as a few bytes against it; when a row of a
    batch fails, what was compressed against it is rewritten without, so nothing becomes unreadable."""
    writer = Writer(tmp_path / "f.db")
    system = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    reply1 = '{"action": "read big.txt"}'
    writer.insert("llm_calls", _call("A1", "C1", system, reply1, parent=None, kept=0))
    seen = "".join(hashlib.sha1(str(i).encode()).hexdigest() + "\n" for i in range(100))  # compresses badly
    writer.insert("actions", _action("A1", 1, seen))
    convo2 = [
        *system,
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": "OBSERVATION\n" + seen},
    ]
    writer.insert("llm_calls", _call("A1", "C2", convo2, '{"action": "again"}', parent="C1", kept=3))
    writer.flush()
    # one batch: an action that fails (no such column), then a call compressed against the context it would set
    other = BIG.replace("again", "once more")
    writer.insert("actions", _action("A1", 2, other, nope=1))
    convo3 = [
        *convo2,
        {"role": "assistant", "content": '{"action": "again"}'},
        {"role": "user", "content": other},
    ]
    writer.insert("llm_calls", _call("A1", "C3", convo3, '{"action": "done"}', parent="C2", kept=5))
    with pytest.raises(StoreError, match="nope"):
        writer.flush()
    writer.close()

    db = store_db.connect(tmp_path / "f.db")
    raw = [r["request"] for r in db.query("SELECT request FROM llm_calls ORDER BY seq")]
    alone = len(zlib.compress(json.dumps(convo2[3:], ensure_ascii=False).encode()))
    assert isinstance(raw[1], bytes) and len(raw[1]) * 3 < alone, "the repeated observation costs little"
    assert [c["messages"] for c in queries.agent_calls(db, "A1")] == [system, convo2, convo3]
    assert [a["observation"] for a in queries.actions(db, "A1")] == [seen]


def test_a_record_from_before_m007_keeps_its_timeline(tmp_path):
    """Upgrading: the old events stay (once each), old calls and actions read as before, new rows follow them."""
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m007_events_from_rows")
    old["events"].insert_all(
        [
            {"id": "E1", "session_id": "S1", "kind": "llm_call", "agent_id": "A1", "data": '{"role": "worker"}',
             "created_at": "t1"},
            {"id": "E2", "session_id": "S1", "kind": "agent_step", "agent_id": "A1", "task_id": "T1",
             "data": '{"step": 1, "action": "read_file", "observation": "old"}', "created_at": "t2"},
        ]
    )  # fmt: skip
    old["llm_calls"].insert(
        {"id": "C1", "session_id": "S1", "agent_id": "A1", "role": "worker", "model": "m", "endpoint": "e",
         "request": '[{"role": "system", "content": "s"}]', "response": "r", "kept": 0, "created_at": "t1"}
    )  # fmt: skip
    old["actions"].insert(
        {"id": "X1", "session_id": "S1", "agent_id": "A1", "task_id": "T1", "step": 1, "name": "read_file",
         "arguments": '{"path": "a"}', "observation": "old", "created_at": "t2"}
    )  # fmt: skip
    old.conn.commit()
    old.conn.close()

    writer = Writer(path)  # migrates
    writer.insert("actions", _action("A1", 2, "new"))
    writer.event("S1", "warning", message="after the upgrade")
    writer.flush()
    writer.close()
    db = store_db.connect(path)
    kinds = [(e["kind"], e["data"].get("observation")) for e in queries.events_since(db, "S1")]
    assert kinds == [("llm_call", None), ("agent_step", "old"), ("agent_step", "new"), ("warning", None)]
    assert queries.agent_calls(db, "A1")[0]["messages"] == [{"role": "system", "content": "s"}]
    assert [a["observation"] for a in queries.actions(db, "A1")] == ["old", "new"]
    assert queries.max_event_seq(db, "S1") == max(e["seq"] for e in queries.events_since(db, "S1"))


def test_call_and_action_times_read_as_iso_text(tmp_path):
    """Calls and actions store their time as milliseconds; every reader still gets :func:`now`'s ISO text."""
    writer = Writer(tmp_path / "f.db")
    at = store_db.now_ms()
    writer.insert("actions", _action("A1", 1, "seen", created_at=at))
    writer.insert(
        "llm_calls", _call("A1", "C1", [{"role": "user", "content": "u"}], "r", parent=None, kept=0)
    )
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert db.execute("SELECT typeof(created_at) FROM actions").fetchone()[0] == "integer"
    text = store_db.iso(at)
    assert text is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text)
    [step, _call_event] = queries.events_since(db, "S1")
    assert step["kind"] == "agent_step" and step["created_at"] == text
    assert queries.actions(db, "A1")[0]["created_at"] == text


def test_a_record_from_before_m007_reads_without_migrating(tmp_path):
    """The TUI and the CLI open a record read-only without migrating it: an older one still reads."""
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before="m007_events_from_rows")
    old["events"].insert({"id": "E1", "session_id": "S1", "kind": "warning", "data": "{}", "created_at": "t"})
    old["llm_calls"].insert(
        {"id": "C1", "session_id": "S1", "agent_id": "A1", "role": "worker", "model": "m", "endpoint": "e",
         "request": '[{"role": "system", "content": "s"}]', "response": "r", "kept": 0, "created_at": "t1"}
    )  # fmt: skip
    old["actions"].insert(
        {"id": "X1", "session_id": "S1", "agent_id": "A1", "task_id": "T1", "step": 1, "name": "read_file",
         "arguments": '{"path": "a"}', "observation": "old", "created_at": "t2"}
    )  # fmt: skip
    old.conn.commit()
    old.conn.close()
    db = store_db.connect(path, readonly=True, migrate=False)
    assert queries.max_event_seq(db, "S1") == 1
    assert [e["kind"] for e in queries.events_since(db, "S1")] == ["warning"]
    assert [a["observation"] for a in queries.last_actions_of(db, "A1")] == ["old"]
    assert queries.agent_calls(db, "A1")[0]["messages"] == [{"role": "system", "content": "s"}]
