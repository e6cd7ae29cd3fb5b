"""The one writer of the SQLite record.

Every producer (agents, integration, controls) calls :meth:`Writer.insert`, :meth:`Writer.update` or
:meth:`Writer.event`; the call only queues. One thread owns the write connection, drains the queue and commits
each drained batch in one transaction (batched WAL writes run ~4x faster than a commit per row here). Text is
redacted before it is written (a :class:`~.packing.Zipped` text is compressed after). :meth:`Writer.flush`
waits until everything queued so far is on disk.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pairing
from .db import connect, now_ms
from .derived import COLUMNS, References, derive
from .packing import REPLY, WINDOW, Context, Zipped, pack, shared_dictionary
from .pairing import Pairs, paired
from .redact import Redactor
from .schema_m016 import LAST_SEQ

MAX_BATCH = 2000
BUSY_BATCH = 16
"""A batch this large means producers are busy: the writer then pauses :data:`BUSY_PAUSE` before draining
again, so the next rows wait in the queue instead of each ``put`` waking this thread (a GIL hand-off per row,
~8% of the engine's CPU with 256 workers) and batches grow."""
BUSY_PAUSE = 0.02
SAMPLES = 32
"""Texts of each shared key its dictionary is learned from (see :meth:`Writer._sample`): the first
:data:`FIRST_SAMPLES`, then those that compress to more than :data:`NOVEL` of their size."""
FIRST_SAMPLES = 4
NOVEL = 0.4
CONTEXTS_KEPT = 4096
"""Agents whose latest reply and observation the writer keeps, to compress what they send next against them
or rebuild it from them (the model client keeps as many conversations)."""
CONTEXT_CHARS = 4 * WINDOW
"""A longer reply or observation is kept as its end (all a dictionary uses): nothing is rebuilt from it."""


class StoreError(RuntimeError):
    """A write the record refused; raised by :meth:`Writer.flush` so no failure goes unseen."""


SEQUENCED = frozenset({"event_log", "actions", "llm_calls"})
"""Tables whose rows are events: each new row takes the next ``seq`` of the one timeline (see ``events``)."""
TABLE_FOR = {"events": "event_log"}
SHAS = {"commits": frozenset({"sha", "integrated_sha"}), "integrations": frozenset({"old_tip", "new_tip"})}
"""Columns holding a git object id, stored as its bytes (half the size) when they read back as the same hex."""
"""``events`` is a view over the timeline's tables; a row written to it goes to ``event_log``."""
LANDED = ("sha", "integrated_sha", "retries", "conflicts")
"""What a landed commit's row says that its ``commit_landed`` event repeats (see :meth:`Writer.landed`)."""
LANDED_KEPT = 4096


@dataclass
class _Op:
    sql: str
    params: tuple[Any, ...]
    sequenced: bool = False
    """The last parameter is the row's ``seq``, assigned when it is written."""
    codes: tuple[int | None, ...] = ()
    """Per parameter, the code a reference to it carries (``derived.COLUMNS``), when it can be referred to."""
    split: int = 0
    """A call and its step (see :mod:`.pairing`): the step's parameters from here on; the pair takes two places
    in the timeline, the call's and, next, the step's."""


@dataclass
class _Barrier:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


def _to_db(value: Any, redact: Redactor) -> Any:
    if value is None or isinstance(value, int | float | bytes):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Zipped):  # redacted first, then packed: redaction sees every text
        return pack(redact(value.text))
    return redact(json.dumps(value, default=str, ensure_ascii=False))


def _sha_bytes(value: Any) -> Any:
    """A SHA-1 or SHA-256 in lower-case hex as its bytes (the views give the hex back); anything else as it is."""
    if isinstance(value, str) and len(value) in (40, 64):
        try:
            data = bytes.fromhex(value)
        except ValueError:
            return value
        return data if data.hex() == value else value
    return value


class Writer:
    """Owns the single write connection; thread-safe, non-blocking for producers."""

    def __init__(self, path: Path | str, redactor: Redactor | None = None) -> None:
        self.path = Path(path)
        self.redact = redactor or Redactor()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._failures: list[str] = []
        self._reported = 0
        self._sql_cache: dict[tuple[str, tuple[str, ...]], str] = {}
        self._contexts: dict[str, tuple[Context, bool, bool]] = {}
        """Per agent, its latest stored reply and observation (redacted; see :mod:`.packing`), and whether each
        is whole."""
        self._references = References()
        self._shared: dict[str, bytes] = {}
        """Per key, the shared dictionary texts of that key are compressed against."""
        self._new_shared: list[bytes] = []
        self._samples: dict[str, list[str]] = {}
        """Per key, the first texts of that key (:meth:`_sample`)."""
        """Shared dictionaries adopted since the last batch was written: written with it."""
        self._pairs = Pairs(self._alone)
        self._landed: dict[str, dict[str, Any]] = {}
        """Per task, what its landed commit's row (queued, not yet announced) says: :meth:`landed`."""
        self.rows_written = 0
        self.batches = 0
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="formicary-store-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    # -- producers ---------------------------------------------------------------------------------

    def insert(self, table: str, row: dict[str, Any], *, replace: bool = False) -> None:
        table = TABLE_FOR.get(table, table)
        if not replace and "seq" not in row:  # a worker's call waits for its step (see .pairing)
            if table in SEQUENCED:  # one held too long goes first
                self._pairs.release(older_than=pairing.HOLD_S)
            if table == "llm_calls":
                if self._pairs.hold(row):
                    return
            elif table == "actions":
                call = self._pairs.step(row)
                if call is not None:
                    self._queue_row("call_steps", paired(call, row), split=len(call))
                    return
            elif table in SEQUENCED and row.get("agent_id"):
                self._pairs.release(row["agent_id"])
            elif table == "agents" and row.get("id"):
                self._pairs.agent_started(row)
        self._queue_row(table, row, replace=replace)

    def _alone(self, call: dict[str, Any]) -> None:
        self._queue_row("llm_calls", call)

    def _queue_row(self, table: str, row: dict[str, Any], *, replace: bool = False, split: int = 0) -> None:
        sequenced = (table in SEQUENCED or split > 0) and "seq" not in row
        cols = (*row, "seq") if sequenced else tuple(row)
        key = (("R:" if replace else "I:") + table, cols)
        sql = self._sql_cache.get(key)
        if sql is None:
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            sql = f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            self._sql_cache[key] = sql
        if table == "commits" and row.get("status") == "integrated" and row.get("task_id"):
            self._landed[row["task_id"]] = {key: row.get(key) for key in LANDED}
            if len(self._landed) > LANDED_KEPT:
                self._landed.pop(next(iter(self._landed)))
        shas = SHAS.get(table)
        if shas is not None:
            row = {c: _sha_bytes(v) if c in shas else v for c, v in row.items()}
        params = (*row.values(), None) if sequenced else tuple(row.values())
        if split:  # a call's texts, then its step's
            codes = tuple(COLUMNS.get(("llm_calls", c)) for c in list(row)[:split]) + tuple(
                COLUMNS.get(("actions", c.removeprefix("step_"))) for c in list(row)[split:]
            )
        else:
            codes = tuple(COLUMNS.get((table, c)) for c in row) if sequenced else ()
        self._queue.put(_Op(sql, params, sequenced, codes, split))

    def landed(self, task_id: str | None, *, forget: bool = False) -> dict[str, Any]:
        """What the landed commit row queued for ``task_id`` says (:data:`LANDED`; empty when none was): the
        landing's event and the task's handoff need not repeat it (``forget``: the last to ask, the handoff)."""
        if not task_id:
            return {}
        return (self._landed.pop(task_id, None) if forget else self._landed.get(task_id)) or {}

    def update(self, table: str, pk: str, changes: dict[str, Any], *, pk_column: str = "id") -> None:
        if table == "agents":  # an agent's end: its call waits no more
            self._pairs.release(pk)
        sets = ", ".join(f"{c} = ?" for c in changes)
        self._queue.put(_Op(f"UPDATE {table} SET {sets} WHERE {pk_column} = ?", (*changes.values(), pk)))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue a raw statement (counters such as ``steps = steps + 1``)."""
        self._queue.put(_Op(sql, params))

    def event(
        self,
        session_id: str | None,
        kind: str,
        /,
        *,
        agent_id: str | None = None,
        task_id: str | None = None,
        **data: Any,
    ) -> None:
        """Append to the timeline every UI follows."""
        self.insert(
            "event_log",
            {
                "session_id": session_id,
                "kind": kind,
                "agent_id": agent_id,
                "task_id": task_id,
                "data": data or None,
                "created_at": now_ms(),
            },
        )

    def flush(self, timeout: float | None = 60) -> None:
        """Block until every queued write is committed; raise :class:`StoreError` on new failures."""
        self._pairs.release()
        barrier = _Barrier()
        self._queue.put(barrier)
        if not barrier.done.wait(timeout):
            raise StoreError(f"store writer did not flush within {timeout}s")
        if len(self._failures) > self._reported:
            new = self._failures[self._reported :]
            self._reported = len(self._failures)
            raise StoreError(f"{len(new)} write(s) failed; first: {new[0]}")

    async def aflush(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.flush)

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        if self._thread.is_alive():
            self._pairs.release()
            self._queue.put(_STOP)
            self._thread.join()

    @property
    def failures(self) -> list[str]:
        return list(self._failures)

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            db = connect(self.path)
        except (OSError, sqlite3.Error) as exc:  # surfaced to the constructor as one line
            self._open_error = StoreError(f"cannot open the record at {self.path}: {exc}")
            self._opened.set()
            return
        except BaseException as exc:
            self._open_error = exc
            self._opened.set()
            return
        conn: sqlite3.Connection = db.conn
        self._opened.set()
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=pairing.HOLD_S)
            except queue.Empty:
                self._pairs.release(older_than=pairing.HOLD_S)
                continue
            batch: list[_Op] = []
            barriers: list[_Barrier] = []
            while True:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(conn, batch)
            for b in barriers:
                b.done.set()
            self._pairs.release(older_than=pairing.HOLD_S)
            if len(batch) >= BUSY_BATCH and not stopping:
                time.sleep(BUSY_PAUSE)
        conn.close()

    def _prepare(self, op: _Op, seq: int | None = None, *, contexts: bool = True) -> tuple[Any, ...]:
        """``op``'s parameters as stored (``seq``: the row's place in the timeline, when known). A text
        ``against`` an agent is rebuilt from or compressed with that agent's context as it is before this row;
        the texts this row ``remember``s update the context after it. A text of a shared key may refer to an
        equal or similar one stored before (see :mod:`.derived`). A call and its step are two rows in this:
        the step's texts come after the call's reply, at the next place."""
        params: list[Any] = []
        if op.split:
            self._prepare_part(op, 0, op.split, seq, contexts, params)
            after = seq + 1 if seq is not None else None
            self._prepare_part(op, op.split, len(op.params), after, contexts, params)
        else:
            self._prepare_part(op, 0, len(op.params), seq, contexts, params)
        if seq is not None and op.sequenced:
            params[-1] = seq
        return tuple(params)

    def _prepare_part(
        self, op: _Op, start: int, end: int, seq: int | None, contexts: bool, params: list[Any]
    ) -> None:
        learned: list[tuple[tuple[str, str], str, tuple[int, str] | None]] = []
        for i in range(start, end):
            value = op.params[i]
            if isinstance(value, Zipped) and (value.against or value.remember or value.shared):
                text = self.redact(value.text)
                if value.remember:
                    learned.append((value.remember, text, value.step))
                if value.shared and contexts:
                    packed = pack(text, self._shared.get(value.shared), shared=True)
                    self._sample(value.shared, text, len(packed) / max(1, len(text)))
                    code = op.codes[i] if op.codes else None
                    if seq is not None and code is not None:
                        packed = self._references.pack(value.shared, text, seq * 4 + code, packed)
                elif value.against and contexts:
                    context, *whole = self._contexts.get(value.against) or (None, False, False)
                    packed = derive(text, context, *whole) or pack(
                        text, context.dictionary() if context else None
                    )
                else:
                    packed = pack(text)
                params.append(packed)
            else:
                params.append(_to_db(value, self.redact))
        for (agent, part), text, step in learned:
            whole = len(text) <= CONTEXT_CHARS
            text = text[-CONTEXT_CHARS:]
            context, reply_whole, observation_whole = self._contexts.pop(agent, (Context(), False, False))
            if part == REPLY:
                context, reply_whole = Context(text, context.observation, context.step, context.action), whole
            else:
                context, observation_whole = Context(context.reply, text, *(step or (None, None))), whole
            self._contexts[agent] = (context, reply_whole, observation_whole)
            if len(self._contexts) > CONTEXTS_KEPT:
                self._contexts.pop(next(iter(self._contexts)))

    def _sample(self, key: str, text: str, ratio: float) -> None:
        """Keep ``text`` as a sample of its key's texts when it is one of the first or compressed poorly against
        the key's dictionary (``ratio``: stored over raw size), a shape the dictionary does not know yet (a
        worker's finish reply, where its first replies were all reads). At the 1st, 2nd, 4th ... 32nd sample the
        key gets a new dictionary made of them all, written with this batch (the texts compressed before keep
        theirs: each names its own)."""
        texts = self._samples.setdefault(key, [])
        if len(texts) >= SAMPLES or (len(texts) >= FIRST_SAMPLES and ratio < NOVEL):
            return
        texts.append(text)
        if len(texts) & (len(texts) - 1) == 0:
            self._shared[key] = body = shared_dictionary(texts)
            self._new_shared.append(body)

    @staticmethod
    def _execute(
        conn: sqlite3.Connection, ops: list[_Op], params: list[tuple[Any, ...]], new_shared: list[bytes]
    ) -> None:
        """Execute ``ops`` in the open transaction; a timeline row not yet numbered takes the next ``seq`` (read
        inside the transaction, so another process writing the same record cannot interleave)."""
        for body in new_shared:
            conn.execute(
                "INSERT OR IGNORE INTO dictionaries (id, body) VALUES (?, ?)", (zlib.adler32(body), body)
            )
        for op, p in zip(ops, params, strict=True):
            if op.sequenced and p[-1] is None:
                p = (*p[:-1], conn.execute(LAST_SEQ).fetchone()[0] + 1)
            conn.execute(op.sql, p)

    def _write(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            # the timeline's rows are numbered first: a text may refer to another by its place
            seq = conn.execute(LAST_SEQ).fetchone()[0]
            params = []
            for op in batch:
                if op.sequenced:
                    seq += 1
                params.append(self._prepare(op, seq if op.sequenced else None))
                if op.split:
                    seq += 1
            new_shared, self._new_shared = self._new_shared, []
            self._execute(conn, batch, params, new_shared)
            conn.execute("COMMIT")
            self.rows_written += len(batch)
            self.batches += 1
            return
        except sqlite3.Error:
            conn.execute("ROLLBACK") if conn.in_transaction else None
        except BaseException:
            conn.execute("ROLLBACK") if conn.in_transaction else None
            raise
        # One bad row must not take its batch with it: write one by one and keep what fails. The contexts and
        # references the batch's texts were stored against may include a row that fails: forget them all.
        self._contexts.clear()
        self._shared.clear()
        self._samples.clear()
        self._references.clear()
        params = [self._prepare(op, contexts=False) for op in batch]
        self._contexts.clear()
        self._new_shared.clear()
        for op, p in zip(batch, params, strict=True):
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._execute(conn, [op], [p], [])
                conn.execute("COMMIT")
                self.rows_written += 1
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                message = f"{exc} in {op.sql[:120]}"
                self._failures.append(message)
                print(f"formicary: store write failed: {message}", file=sys.stderr)
