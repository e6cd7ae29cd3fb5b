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


def test_later_texts_of_every_shape_compress_against_the_learned_dictionary(tmp_path):
    writer = Writer(tmp_path / "f.db")
    texts = [_reply(("read", "finish", "run")[i % 3], i) for i in range(60)]
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
    versions = db.execute("SELECT COUNT(*) FROM dictionaries").fetchone()[0]
    assert versions == 6, "learned at the 1st, 2nd, 4th, 8th, 16th and 32nd text"
    first_finish, late_finish = len(stored[1]), len(stored[58])  # both finish replies
    assert isinstance(stored[-1], bytes) and late_finish * 2 < first_finish, (first_finish, late_finish)
