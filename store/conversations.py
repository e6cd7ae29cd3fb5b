"""Reading the record's stored texts: shared dictionaries, referenced texts, each agent's context, and the
conversations its model calls sent, rebuilt from the lean record (see :mod:`.packing`, :mod:`.derived`)."""

from __future__ import annotations

import bisect
import json
import sqlite3
from typing import Any

from sqlite_utils import Database

from .db import iso
from .derived import SOURCES, SOURCES_M016
from .packing import OBSERVATION, REPLY, Context, Dictionaries, needs_dictionary, unpack
from .schema_m013 import UNBOUNDED


def step_range(db: Database | Any, agent_ids: list[str]) -> tuple[str, list[int]]:
    """Where in the timeline the steps of these agents lie, as a condition on ``seq`` and its parameters:
    ``steps`` is not indexed by agent since m013, their ``agent_rows`` say where they started and ended (only
    workers take steps: a planner's long life adds nothing to scan). No condition when one of them does not say
    (a record from before, read without migrating it, is indexed)."""
    wanted = sorted(set(agent_ids))
    if not wanted:
        return "", []
    worker = "r.role = (SELECT id FROM names WHERE name = 'worker')"
    try:
        row = db.execute(
            f"SELECT COUNT(*), MIN(CASE WHEN {worker} THEN COALESCE(r.first_seq, ?) END), "
            f"MAX(CASE WHEN {worker} THEN COALESCE(r.last_seq, ?) END) FROM names n "
            f"JOIN agent_rows r ON r.id = n.id WHERE n.name IN ({', '.join('?' * len(wanted))})",
            [-UNBOUNDED, UNBOUNDED, *wanted],
        ).fetchone()
    except sqlite3.OperationalError:  # before m011/m013
        return "", []
    if row[0] < len(wanted):
        return "", []
    if row[1] is None:  # no worker among them
        return " AND seq BETWEEN ? AND ?", [1, 0]
    return " AND seq BETWEEN ? AND ?", [int(row[1]), int(row[2])]


class RecordTexts:
    """Finds the record's shared dictionaries by Adler-32 and the texts a reference names (see
    :mod:`.packing`, :mod:`.derived`): pass to ``unpack``. Each is read once."""

    def __init__(self, db: Database | Any) -> None:
        self.db = db
        self.found: dict[int, bytes | None] = {}
        self.texts: dict[int, str | None] = {}
        self.sources: dict[int, str] | None = None

    def __call__(self, adler: int) -> bytes | None:
        if adler not in self.found:
            row = self.db.execute("SELECT body FROM dictionaries WHERE id = ?", [adler]).fetchone()
            self.found[adler] = row[0] if row else None
        return self.found[adler]

    def text(self, ref: int) -> str | None:
        if ref not in self.texts:
            source = self._sources().get(ref & 3)
            row = self.db.execute(source, [ref >> 2]).fetchone() if source else None
            self.texts[ref] = unpack(row[0], shared=self) if row else None
        return self.texts[ref]

    def _sources(self) -> dict[int, str]:
        if self.sources is None:
            self.sources = SOURCES_M016 if holds_steps(self.db) else SOURCES
        return self.sources


def holds_steps(db: Database | Any) -> bool:
    """Whether a call's row may hold its step (m016)."""
    try:
        return any(row[1] == "step" for row in db.execute("PRAGMA table_info(calls)").fetchall())
    except sqlite3.Error:
        return False


def dictionaries(db: Database | Any) -> Dictionaries:
    """The record's shared dictionaries and referenced texts (:class:`RecordTexts`): pass to ``unpack``."""
    return RecordTexts(db)


class Contexts:
    """What an agent's texts were compressed against (see :mod:`.packing`): its replies and observations in
    timeline order, read once, so the dictionary in effect before any row is a lookup."""

    def __init__(self, db: Database, agent_id: str) -> None:
        self.shared = shared = dictionaries(db)
        parts: list[tuple[int, str, str, tuple[int, str] | None]] = [
            (seq, REPLY, unpack(text, shared=shared) or "", None)
            for seq, text in db.execute(
                "SELECT seq, response FROM llm_calls WHERE agent_id = ? AND response IS NOT NULL "
                "AND response != ''",
                [agent_id],
            ).fetchall()
        ]
        within, bounds = step_range(db, [agent_id])
        parts += [
            (seq, OBSERVATION, unpack(text, shared=shared) or "", (step, name))
            for seq, text, step, name in db.execute(
                "SELECT seq, observation, step, name FROM actions WHERE agent_id = ? AND observation IS NOT NULL"
                + within,
                [agent_id, *bounds],
            ).fetchall()
        ]
        parts.sort()
        self.seqs = [p[0] for p in parts]
        self.parts = parts

    def before(self, seq: int) -> Context | None:
        """The context of a row at ``seq``: the agent's latest reply and observation before it."""
        reply = observation = step = None
        i = bisect.bisect_left(self.seqs, seq) - 1
        while i >= 0 and (reply is None or observation is None):
            _, part, text, answers = self.parts[i]
            if part == REPLY and reply is None:
                reply = text
            elif part == OBSERVATION and observation is None:
                observation, step = text, answers
            i -= 1
        if reply is None and observation is None:
            return None
        return Context(reply, observation, *(step or (None, None)))


def _context_before(db: Database, agent_id: str, seq: int, shared: Dictionaries) -> Context | None:
    """One row's context, looked up alone (a row read without its agent's history)."""
    reply = db.execute(
        "SELECT response FROM llm_calls WHERE agent_id = ? AND seq < ? AND response IS NOT NULL "
        "AND response != '' ORDER BY seq DESC LIMIT 1",
        [agent_id, seq],
    ).fetchone()
    within, bounds = step_range(db, [agent_id])
    observation = db.execute(
        f"SELECT observation, step, name FROM actions WHERE agent_id = ? AND seq < ?{within} "
        "AND observation IS NOT NULL ORDER BY seq DESC LIMIT 1",
        [agent_id, seq, *bounds],
    ).fetchone()
    if reply is None and observation is None:
        return None
    return Context(
        unpack(reply[0], shared=shared) if reply else None,
        unpack(observation[0], shared=shared) if observation else None,
        *(observation[1:] if observation else (None, None)),
    )


def read_texts(
    row: dict[str, Any], *columns: str, db: Database | None = None, contexts: Contexts | None = None
) -> dict[str, Any]:
    """``row`` with its compressed text columns (see :mod:`.packing`) as text; a text compressed against its
    agent's context is read with it (from ``contexts``, else looked up in ``db``). Its time as ISO text."""
    if "created_at" in row:
        row["created_at"] = iso(row["created_at"])
    shared = contexts.shared if contexts is not None else dictionaries(db) if db is not None else None
    for column in columns:
        value = row.get(column)
        if not isinstance(value, bytes):
            continue
        dictionary = None
        if needs_dictionary(value):
            if contexts is not None:
                dictionary = contexts.before(row["seq"])
            elif db is not None and shared is not None:
                dictionary = _context_before(db, row["agent_id"], row["seq"], shared)
        row[column] = unpack(value, dictionary, shared)
    return row


def action_texts(db: Database, agent_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An agent's ``actions`` rows with their texts read (its context loaded only when a text needs it)."""
    columns = ("arguments", "observation")
    needed = any(needs_dictionary(row.get(c)) for row in rows for c in columns)
    contexts = Contexts(db, agent_id) if needed else None
    return [read_texts(row, *columns, db=db, contexts=contexts) for row in rows]


def _conversation(
    row: dict[str, Any],
    rebuilt: dict[str, list[dict[str, Any]]],
    contexts: Contexts | None = None,
    shared: Dictionaries | None = None,
) -> list[dict[str, Any]]:
    """The conversation ``row`` sent: what its parent sent, then the parent's reply, cut to ``kept``, then
    what the row holds (``rebuilt`` maps a call id to what it sent followed by its reply)."""
    request = row["request"]
    dictionary = contexts.before(row["seq"]) if contexts is not None and needs_dictionary(request) else None
    new = json.loads(unpack(request, dictionary, shared) or "[]")
    if row.get("kept") is None:  # recorded before the lean record: the whole conversation
        return new
    if not row["kept"]:
        return new
    base = rebuilt.get(row["parent_id"])
    if base is None:
        parent = f" {row['parent_id']}" if row["parent_id"] is not None else ""
        raise LookupError(f"model call {row['id']}: its parent call{parent} is not in the record")
    if row["kept"] > len(base):
        raise LookupError(f"model call {row['id']}: keeps more messages than its parent call sent")
    return base[: row["kept"]] + new


def _with_reply(messages: list[dict[str, Any]], response: str | None) -> list[dict[str, Any]]:
    return [*messages, {"role": "assistant", "content": response}] if response else messages


def agent_calls(db: Database, agent_id: str) -> list[dict[str, Any]]:
    """An agent's model calls in the order they were made, each with ``messages``, the whole conversation it
    sent, rebuilt from the lean record (each row holds only what was new since the agent's previous call), and
    ``response`` as text."""
    order = "seq > 0, abs(seq)" if log_table(db) == "event_log" else "created_at, id"  # (before m007: no seq)
    rows = list(db.query(f"SELECT * FROM llm_calls WHERE agent_id = ? ORDER BY {order}", [agent_id]))
    by_id = {row["id"]: row for row in rows}
    contexts = Contexts(db, agent_id) if any(needs_dictionary(row["request"]) for row in rows) else None
    shared = dictionaries(db)
    rebuilt: dict[str, list[dict[str, Any]]] = {}  # what each call sent, then its reply
    sent: dict[str, list[dict[str, Any]]] = {}
    ordered: list[dict[str, Any]] = []

    def build(row: dict[str, Any]) -> None:
        chain = [row]  # parents first: a call is rebuilt from its parent's conversation
        while (
            chain[-1].get("kept")
            and chain[-1]["parent_id"] in by_id
            and chain[-1]["parent_id"] not in rebuilt
        ):
            chain.append(by_id[chain[-1]["parent_id"]])
        for link in reversed(chain):
            if link["id"] not in rebuilt:
                sent[link["id"]] = _conversation(link, rebuilt, contexts, shared)
                rebuilt[link["id"]] = _with_reply(sent[link["id"]], unpack(link["response"], shared=shared))

    for row in rows:
        build(row)
        request = row["request"]
        ordered.append(
            row
            | {
                "created_at": iso(row["created_at"]),
                "messages": sent[row["id"]],
                "response": unpack(row["response"], shared=shared),
                "request": unpack(request, contexts.before(row["seq"]) if contexts else None, shared),
            }
        )
    return ordered


def call_messages(db: Database, call_id: str) -> list[dict[str, Any]]:
    """The whole conversation one model call sent, rebuilt from the record (call ids are not indexed: a scan)."""
    row = db.execute("SELECT agent_id FROM llm_calls WHERE id = ?", [call_id]).fetchone()
    if row is None:
        raise LookupError(f"no model call {call_id} in the record")
    if row[0] is None:  # no agent: the call holds its whole conversation
        found = next(db.query("SELECT * FROM llm_calls WHERE id = ?", [call_id]))
        return _conversation(found, {}, shared=dictionaries(db))
    for call in agent_calls(db, row[0]):
        if call["id"] == call_id:
            return call["messages"]
    raise LookupError(f"no model call {call_id} in the record")


def log_table(db: Database) -> str:
    """Where the timeline's own kinds are (every kind but ``agent_step`` and ``llm_call``): reading them there
    skips the ``events`` view's rows of every call and action (``events`` in a record from before m007)."""
    names = db.table_names()
    return "event_log" if "event_log" in names or "log" in names else "events"
