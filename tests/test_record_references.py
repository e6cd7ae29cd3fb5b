"""m010: a text the record holds already is not stored again. A request that only carries the latest step's
observation, and an action's arguments that its reply carried, are one byte; a text equal to one stored before
(another worker read the same file) is a reference; one close to the key's previous text (the next worker's
first request) is compressed against it. Every one reads back as it was written."""

from __future__ import annotations

import json

from formicary.store import db as store_db
from formicary.store import queries
from formicary.store.packing import ARGUMENTS, LIKE, OBSERVATION, OBSERVED, REPLY, SAME, Zipped
from formicary.store.templates import observation_request
from formicary.store.writer import Writer

SYSTEM = {"role": "system", "content": "You are a worker. " * 40}
LISTING = "".join(f"src/file{i:03}.txt\n" for i in range(120))
FILE = "src/a.txt (lines 1-60 of 60)\n" + "".join(f"{i:6}\tline {i} of a.txt\n" for i in range(1, 61))


def _task(n: int) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": f"TASK: number {n}\nREPOSITORY MAP:\n{LISTING}"}]


def _reply(action: dict) -> str:
    return json.dumps({"thought": "next", "action": action})


def _call(writer: Writer, agent: str, seq_parent: bool, messages: list, kept: int, reply: str) -> None:
    writer.insert(
        "llm_calls",
        {
            "session_id": "S1",
            "agent_id": agent,
            "role": "worker",
            "model": "m",
            "endpoint": "http://x/v1",
            "schema_name": "action",
            "parent_id": "p" if seq_parent else None,
            "kept": kept,
            "request": Zipped(
                json.dumps(messages[kept:], ensure_ascii=False),
                against=agent,
                shared=None if kept else "request:worker",
            ),
            "response": Zipped(reply, remember=(agent, REPLY), shared="reply:worker"),
            "created_at": store_db.now_ms(),
        },
    )


def _step(writer: Writer, agent: str, step: int, name: str, args: dict, observation: str) -> None:
    writer.insert(
        "actions",
        {
            "session_id": "S1",
            "agent_id": agent,
            "task_id": "T" + agent,
            "step": step,
            "name": name,
            "arguments": Zipped(json.dumps(args, ensure_ascii=False), against=agent),
            "observation": Zipped(
                observation, remember=(agent, OBSERVATION), shared=f"observation:{name}", step=(step, name)
            ),
            "created_at": store_db.now_ms(),
            "target": args.get("path") or args.get("summary", ""),
        },
    )


def _worker(writer: Writer, agent: str, n: int, *, different_request: bool = False) -> list[list[dict]]:
    """A worker that reads a.txt, then finishes; its conversation as it sent it, call by call."""
    read = {"name": "read_file", "path": "src/a.txt"}
    done = {"name": "finish", "summary": f"worker {n} read it"}
    sent = [_task(n)]
    _call(writer, agent, False, sent[0], 0, _reply(read))
    _step(writer, agent, 1, "read_file", {"path": "src/a.txt"}, FILE)
    observed = {"role": "user", "content": f"OBSERVATION (step 1, read_file):\n{FILE}"}
    extra = [{"role": "user", "content": "a note"}] if different_request else []
    sent.append([*sent[0], {"role": "assistant", "content": _reply(read)}, observed, *extra])
    _call(writer, agent, True, sent[1], 3, _reply(done))
    _step(writer, agent, 2, "finish", {"summary": f"worker {n} read it"}, "finished")
    return sent


def test_texts_the_record_holds_are_stored_once_and_read_back(tmp_path):
    path = tmp_path / "f.db"
    writer = Writer(path)
    sent = {agent: _worker(writer, agent, int(agent[1])) for agent in ("A1", "A2", "A3")}
    sent["A4"] = _worker(writer, "A4", 4, different_request=True)
    writer.flush()
    writer.close()

    db = store_db.connect(path)
    for agent, conversations in sent.items():
        assert [c["messages"] for c in queries.agent_calls(db, agent)] == conversations
        read, done = queries.actions(db, agent)
        assert (read["observation"], json.loads(read["arguments"])) == (FILE, {"path": "src/a.txt"})
        assert (read["target"], done["target"]) == ("src/a.txt", f"worker {agent[1]} read it")
    requests = [r[0] for r in db.execute("SELECT request FROM calls ORDER BY seq")]
    # a request that adds only the observation of the agent's latest step: one byte (A4's adds a note too)
    assert requests[1::2][:3] == [bytes([OBSERVED])] * 3
    assert requests[7][0] != OBSERVED
    # the next worker's first request is compressed against the last one's (they differ in the task number)
    assert requests[2][0] == LIKE and len(requests[2]) < min(64, len(requests[0]) // 2)
    observations = [r[0] for r in db.execute("SELECT observation FROM steps ORDER BY seq")]
    assert [o[0] for o in observations[2::2]] == [SAME] * 3, "the same file read by other workers"
    arguments = [r[0] for r in db.execute("SELECT arguments FROM steps ORDER BY seq")]
    assert arguments == [bytes([ARGUMENTS])] * 8, "the arguments of each action its reply carried"
    # the timeline shows the same as before: an agent_step's observation and target, read back
    steps = [e for e in queries.events_since(db, "S1") if e["kind"] == "agent_step"]
    assert [e["data"]["target"] for e in steps[:2]] == ["src/a.txt", "worker 1 read it"]
    assert steps[2]["data"]["observation"] == FILE[:300]
    assert queries.agent_last_actions(db, ["A2"])["A2"]["arguments"] == '{"summary": "worker 2 read it"}'


def test_a_derivation_that_does_not_hold_stores_the_text(tmp_path):
    """A request whose observation message differs from the step's (the worker wrote it otherwise) is stored,
    not rebuilt: the check is on the text itself."""
    path = tmp_path / "f.db"
    writer = Writer(path)
    _call(writer, "A1", False, _task(1), 0, _reply({"name": "read_file", "path": "src/a.txt"}))
    _step(writer, "A1", 1, "read_file", {"path": "src/a.txt", "start": 1}, FILE)  # not what the reply said
    other = json.dumps([{"role": "user", "content": "OBSERVATION (step 2, read_file):\n" + FILE}])
    assert other != observation_request(1, "read_file", FILE)
    writer.insert(
        "llm_calls",
        {"session_id": "S1", "agent_id": "A1", "role": "worker", "model": "m", "endpoint": "e",
         "parent_id": "p", "kept": 3, "request": Zipped(other, against="A1"), "created_at": store_db.now_ms()},
    )  # fmt: skip
    writer.flush()
    writer.close()
    db = store_db.connect(path)
    stored = [r[0] for r in db.execute("SELECT request FROM calls ORDER BY seq")]
    assert stored[1][0] not in (OBSERVED, ARGUMENTS)
    assert db.execute("SELECT arguments FROM steps").fetchone()[0][0] != ARGUMENTS
    assert queries.actions(db, "A1")[0]["arguments"] == '{"path": "src/a.txt", "start": 1}'
    assert json.loads(queries.agent_calls(db, "A1")[1]["request"]) == json.loads(other)
