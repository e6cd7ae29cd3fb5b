"""The record: migrations from empty and from every earlier schema, the one writer under load, redaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from formicary.store import db as store_db
from formicary.store.migrations import migrations
from formicary.store.redact import REDACTED, Redactor
from formicary.store.writer import StoreError, Writer

TABLES = {
    "sessions",
    "cycles",
    "tasks",
    "agents",
    "llm_calls",
    "actions",
    "commits",
    "verdicts",
    "events",
    "integrations",
    "controls",
}


def names() -> list[str]:
    return [m.name for m in migrations._migrations]


def test_migrate_from_empty(tmp_path):
    db = store_db.connect(tmp_path / "f.db")
    assert set(db.table_names()) | set(db.view_names()) >= TABLES
    assert store_db.schema_version(db) == names()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("stop_before", names()[1:])
def test_migrate_from_each_earlier_schema(tmp_path, stop_before):
    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path))
    migrations.apply(old, stop_before=stop_before)
    assert stop_before not in store_db.schema_version(old)
    old.conn.close()
    db = store_db.connect(path)
    assert store_db.schema_version(db) == names()
    assert set(db.table_names()) | set(db.view_names()) >= TABLES


def test_reopening_is_idempotent(tmp_path):
    store_db.connect(tmp_path / "f.db").conn.close()
    db = store_db.connect(tmp_path / "f.db")
    assert store_db.schema_version(db) == names()


def test_schema_doc_is_current():
    from formicary.store.schema_doc import render

    doc = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
    assert doc.read_text() == render(), "docs/schema.md is stale: run python -m formicary.store.schema_doc"


def test_writer_200_concurrent_producers_lose_nothing(tmp_path):
    writer = Writer(tmp_path / "f.db")
    per_thread = 250

    def produce(n: int) -> None:
        for i in range(per_thread):
            writer.event("s", "tick", agent_id=f"a{n}", n=i)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    assert db["events"].count == 200 * per_thread
    per_agent = {
        r["agent_id"]: r["n"] for r in db.query("SELECT agent_id, COUNT(*) n FROM events GROUP BY 1")
    }
    assert len(per_agent) == 200 and set(per_agent.values()) == {per_thread}
    assert writer.batches < 200 * per_thread  # it really batched


def test_a_bad_row_fails_alone_and_is_reported(tmp_path):
    writer = Writer(tmp_path / "f.db")
    writer.event("s", "before")
    writer.insert("no_such_table", {"x": 1})
    writer.event("s", "after")
    with pytest.raises(StoreError, match="no_such_table"):
        writer.flush()
    writer.close()
    kinds = [
        r["kind"] for r in store_db.connect(tmp_path / "f.db").query("SELECT kind FROM events ORDER BY seq")
    ]
    assert kinds == ["before", "after"]


def test_writer_refuses_an_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the record at"):
        Writer(blocker / "f.db")


def test_redaction_of_env_values_and_patterns(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890abcdef")
    monkeypatch.setenv("CUSTOM_VAR", "custom-secret-value")
    redact = Redactor(extra_env_names=["CUSTOM_VAR"])
    text = (
        "token tok-1234567890abcdef and custom-secret-value; Authorization: Bearer abcdefghijklmnop "
        "key sk-proj-ABCDEFGHIJKLMNOPQRSTUV ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZ12"
    )
    out = redact(text)
    for secret in (
        "tok-1234567890abcdef",
        "custom-secret-value",
        "abcdefghijklmnop",
        "sk-proj-ABCDEFGHIJ",
        "ghp_ABCDEFGHIJ",
    ):
        assert secret not in out
    assert out.count(REDACTED) >= 5
    assert redact("plain text stays") == "plain text stays"


def test_writer_redacts_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("FORMICARY_TEST_API_KEY", "supersecretvalue123")
    writer = Writer(tmp_path / "f.db")
    writer.event("s", "call", data_field="sent supersecretvalue123", nested={"k": "supersecretvalue123"})
    writer.flush()
    writer.close()
    raw = (
        (tmp_path / "f.db").read_bytes() + (tmp_path / "f.db-wal").read_bytes()
        if (tmp_path / "f.db-wal").exists()
        else (tmp_path / "f.db").read_bytes()
    )
    assert b"supersecretvalue123" not in raw
    row = next(store_db.connect(tmp_path / "f.db").query("SELECT data FROM events"))
    assert REDACTED in row["data"]


def test_redaction_prefilter_skips_only_texts_that_cannot_match():
    redact = Redactor()
    samples = [
        "Bearer abcdefghijklmnop",
        "BEARER abcdefghijklmnop",
        "Authorization: token-abcdefghij",
        'AUTHORIZATION="Bearer abcdefghijkl"',
        "key sk-" + "a" * 20,
        "ghp_" + "A" * 24,
        "gho_" + "B" * 24,
        "ghs_" + "C" * 24,
        "github_pat_" + "D" * 24,
        "xoxb-1234567890ab",
        "id AKIA" + "Q" * 16 + " end",
        "plain text with nothing secret " * 100,
    ]
    for text in samples[:-1]:
        assert "[REDACTED]" in redact(text), text
        assert not any(ch * 16 in redact(text) for ch in "aABCDQ"), text
    assert redact(samples[-1]) == samples[-1]
