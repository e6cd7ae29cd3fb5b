"""How long ``formicary report`` takes and how big its page is, for a large synthetic session.

Builds one record (default: 8 cycles, 2,000 work tasks, as many commits and landing attempts, 20,000 model
calls), then times reading it (``load_report``) and drawing the page (``render_report``) over a few runs, and
the plotting library's import in a fresh process. Prints one JSON line. Run from the repository root:
``python -m bench.report`` or ``python bench/report.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(db_path: Path, cycles: int, tasks: int, calls: int) -> str:
    from formicary.store.writer import Writer

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    span = 6 * 3600.0

    def at(seconds: float) -> str:
        return (t0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    sid = "01BENCHREPORT0000000000000"
    w = Writer(db_path)
    w.insert("sessions", {"id": sid, "goal": "bench", "repo": "/r", "branch": "formicary/bench", "status": "done",
                          "started_at": at(0), "ended_at": at(span)})  # fmt: skip
    per_cycle = span / cycles
    for c in range(cycles):
        w.insert("cycles", {"id": f"C{c}", "session_id": sid, "number": c + 1, "reason": "continue",
                            "status": "done", "started_at": at(c * per_cycle), "ended_at": at((c + 1) * per_cycle)})  # fmt: skip
        w.insert("verdicts", {"id": f"V{c}", "session_id": sid, "cycle_id": f"C{c}", "decision": "continue",
                              "reason": "more", "created_at": at((c + 1) * per_cycle - 1)})  # fmt: skip
        w.insert("agents", {"id": f"A{c}", "session_id": sid, "cycle_id": f"C{c}", "role": "worker", "name": "w",
                            "model": "m", "status": "done", "started_at": at(c * per_cycle)})  # fmt: skip
    for i in range(tasks):
        c = i * cycles // tasks
        start = c * per_cycle + (i % 97) * per_cycle / 120
        end = start + 30 + (i * 37) % 900
        status = "failed" if i % 11 == 0 else "done"
        w.insert("tasks", {"id": f"T{i}", "session_id": sid, "cycle_id": f"C{c}", "kind": "work",
                           "title": f"task number {i} with a longish title", "status": status,
                           "created_at": at(start - 5), "started_at": at(start), "ended_at": at(end)})  # fmt: skip
        if status == "done":
            w.insert("commits", {"id": f"M{i}", "session_id": sid, "task_id": f"T{i}", "sha": "a" * 40,
                                 "branch": "t", "status": "integrated", "conflicts": i % 7 == 0,
                                 "created_at": at(end), "integrated_at": at(end + 1)})  # fmt: skip
        w.insert("integrations", {"id": f"I{i}", "session_id": sid, "task_id": f"T{i}", "attempt": 1,
                                  "result": ("landed", "moved", "conflict", "refused")[i % 4], "created_at": at(end)})  # fmt: skip
    for i in range(calls):
        w.insert("llm_calls", {"id": f"L{i}", "session_id": sid, "agent_id": f"A{i % cycles}",
                               "role": ("worker", "planner", "judge")[i % 3], "model": "m", "endpoint": "e",
                               "request": "[]", "prompt_tokens": 900, "completion_tokens": 80,
                               "created_at": at(i * span / calls)})  # fmt: skip
    w.flush()
    w.close()
    return sid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    from formicary.report_data import load_report
    from formicary.report_html import render_report
    from formicary.store.db import connect

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        sid = build(db_path, args.cycles, args.tasks, args.calls)
        load_s, render_s, size = [], [], 0
        for _ in range(args.runs):
            db = connect(db_path, readonly=True, migrate=False)
            started = time.perf_counter()
            data = load_report(db, sid)
            loaded = time.perf_counter()
            page = render_report(data)
            load_s.append(loaded - started)
            render_s.append(time.perf_counter() - loaded)
            size = len(page.encode())
            db.conn.close()
    imports = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pygal"], check=True)
        imports.append(time.perf_counter() - started)
    baseline = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "bench": "report",
                "tasks": args.tasks,
                "llm_calls": args.calls,
                "cycles": args.cycles,
                "runs": args.runs,
                "load_median_s": round(statistics.median(load_s), 3),
                "render_median_s": round(statistics.median(render_s), 3),
                "html_kib": size // 1024,
                "pygal_import_median_s": round(statistics.median(imports) - statistics.median(baseline), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
