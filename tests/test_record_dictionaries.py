"""Shared dictionaries learned from the first texts of a kind: later texts of any usual shape compress small,
and every text, compressed against whichever version was current, reads back."""

from __future__ import annotations

import json

from formicary.store import db as store_db
from formicary.store.packing import Zipped, unpack
from formicary.store.queries import dictionaries
from formicary.store.writer import Writer


def _reply(kind: str, i: int) -> str:
    if kind == "read":
        action = {"name": "read_file", "path": f"src/file{i:03d}.py", "start": 0, "end": 0}
    elif kind == "finish":
        action = {"name": "finish", "summary": f"task {i} wrote the module and its tests, all of them pass"}
    else:
        action = {"name": "run", "command": f"python -m pytest -q tests/test_{i:03d}.py --maxfail=1"}
    return json.dumps({"thought": f"next I {kind}", "action": action})


def test_a_shape_first_seen_late_is_learned(tmp_path):
    """Every worker starts with reads: the first replies are all reads, and the finish replies come much later."""
    writer = Writer(tmp_path / "f.db")
    texts = [_reply("read", i) for i in range(40)] + [_reply(("finish", "run")[i % 2], i) for i in range(40)]
    for i, text in enumerate(texts):
        writer.insert(
            "events", {"kind": "reply", "data": Zipped(text, shared="reply:worker"), "created_at": i}
        )
    writer.flush()
    writer.close()
    db = store_db.connect(tmp_path / "f.db")
    stored = [r[0] for r in db.execute("SELECT data FROM log ORDER BY seq")]
    shared = dictionaries(db)
    assert [unpack(v, shared=shared) for v in stored] == texts
    first_finish, late_finish = len(stored[40]), len(stored[78])  # both finish replies
    assert isinstance(stored[78], bytes) and late_finish * 2 < first_finish, (first_finish, late_finish)
    versions = db.execute("SELECT COUNT(*) FROM dictionaries").fetchone()[0]
    assert 3 <= versions <= 6, "learned from the first texts, then from those it compressed poorly"
