"""Benchmark: how close the real engine gets to the model-bound ideal with many workers; prints ONE JSON line.

The real engine (``Engine.create`` + ``run``) runs one cycle against the scripted server in its own process
(``tests.bench_team``: a fixed ``--latency`` per call; its CPU is reported apart from the engine's), on a real
temporary repository of ``--files`` generated files. The root planner queues enough tasks to keep every worker
busy (planner depth 0). A task is ``--actions`` model calls, ``finish`` counted as one of them: two reads of
repository files, then whole-file writes of the task's file alternating with reads, then finish; then a
commit and its integration onto the shared branch. ``--work edit`` (the default): task i rewrites the existing
generated file i mod ``--files`` (default: twice the workers, so that task i + files starts after task i
landed and tasks do not conflict; the conflict path is measured elsewhere); the tree keeps its size, like real
work. ``--work add``: each task adds a new file of its own, the workload before: the tree grows by one file a
task, every parked worktree checks all of them out (at 1,024 workers that fills /dev/shm's inodes). Sandbox mode is "none": no task runs a command. The warm-up
starts once every worker has its worktree (``first_wave_s``: every worktree's files are written then, ~45 s at
1,024 workers here, so a blind warm-up would measure the first wave); after ``--warmup``
seconds more (at least one task duration: the first wave's tasks have finished) the engine is measured for at
least ``--window`` seconds, then stopped gracefully.

``efficiency`` = tasks completed per second in the window ÷ the ideal ``workers / (actions × latency)``. With a
fixed latency, the tasks that started together keep finishing in waves one task duration apart, so the window is
stretched to a whole number of mean task durations (``window_task_durations``). ``efficiency_by_duration`` is the same figure by
Little's law (workers ÷ mean task duration), a cross-check insensitive to waves. CPU is reported for the engine
process (all threads) and its reaped children (git) apart, per model call and per task; ``task_time`` and
``where`` break a task's wall time down, ``git`` counts git processes per task, ``cores_other_processes`` is what
the rest of the machine used meanwhile (a busy neighbour lowers the figure). ``record_bytes_per_call`` is how
much the whole record (every table, in SQLite pages) grew in the window per model call, ``record_gb_per_hour``
that growth per hour, ``record_gb_per_hour_full_speed`` per hour at the ideal rate (``workers / latency`` calls a
second, whatever rate this run reached).

Worktrees live where the engine puts them (on disk, in the data folder, here a temporary one);
``--worktrees tmpfs`` puts them in /dev/shm instead, and ``--fresh-worktrees`` makes a new worktree per task (the
engine's mode before it reused them), to compare: a fresh worktree writes and then deletes every file of the
repository, ~0.85 ms of CPU per file on this kind of VM's disk, serialized behind the worktree lock.

The landing gate runs as in the product with ``--check none`` (the default here: the parse gate, which the
tasks' text files pass without a merge or a process); ``--check true`` runs a trivial check (unsandboxed) on
every merged tree, so every landing pays a checkout and a re-gate whenever the tip moved; ``--no-gate`` lands
without it. ``gate`` reports decisions, check runs, re-gates and milliseconds per landing.

Run from the repository root: python -m bench.efficiency (or python bench/efficiency.py)
    [--workers 256] [--latency 2] [--actions 10] [--window 120] [--warmup 40] [--check none] [--no-gate]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.* when run as a script

from bench.efficiency_probe import (  # noqa: E402
    Probe,
    TimedLock,
    lock_stats,
    machine_busy,
    quantiles,
    thread_cpu,
)
from formicary.agents.roles import worker_loop as worker_module  # noqa: E402
from formicary.agents.session.engine import Engine  # noqa: E402
from formicary.config import Settings  # noqa: E402
from formicary.store.db import connect  # noqa: E402
from tests.bench_team import bench_goal  # noqa: E402
from tests.gitrepo import make_repo  # noqa: E402
from tests.scripted_server import spawn_server_process, stop_server_process  # noqa: E402


def record_bytes(db_path: Path) -> int:
    """The record's size as committed (WAL frames included): its page count read on a fresh connection."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        pages, size = (
            conn.execute("PRAGMA page_count").fetchone()[0],
            conn.execute("PRAGMA page_size").fetchone()[0],
        )
        return int(pages * size)
    finally:
        conn.close()


def table_bytes(db_path: Path) -> dict[str, int]:
    """Bytes in pages of each table and index of the record (``dbstat``), to break its growth down."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {
            name: int(size)
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
        }
    finally:
        conn.close()


def rss_bytes() -> int:
    """This process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def snapshot(engine: Engine, server_pid: int) -> dict[str, float]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer = engine.writer
    return {
        "record_bytes": record_bytes(engine.db_path),
        "tables": table_bytes(engine.db_path),  # type: ignore[dict-item]
        "rss": rss_bytes(),
        "at": time.monotonic(),
        "utc": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "engine": time.process_time(),
        "loop": thread_cpu("self", os.getpid()),
        "writer": thread_cpu("self", writer._thread.native_id) if writer else 0.0,
        "children": children.ru_utime + children.ru_stime,
        "server": thread_cpu(server_pid),
        "machine": machine_busy(),
        "rows": writer.rows_written if writer else 0,
        "batches": writer.batches if writer else 0,
    }


FIRST_WAVE_MAX = 900.0  # seconds the first wave may take to start before the warm-up begins anyway


def settings_for(base_url: str, args: argparse.Namespace, tasks: int) -> Settings:
    return Settings.model_validate(
        {
            "model": {
                "base_url": base_url,
                "model": "scripted-model",
                "retries": 2,
                "timeout": max(60.0, args.latency * 20),
                "max_concurrency": args.workers + 8,
                "context_length": 65536,  # no trimming: the scripted worker counts its own steps
            },
            "limits": {
                "workers": args.workers,
                "cycles": 1,
                "planner_depth": 0,
                "tasks_per_cycle": tasks,
                "followups_per_planner": 0,
                "steps_per_worker": args.actions + 5,
                "tokens_per_worker": 10**8,
                "tokens": 10**12,
                "wall_time": 10**6,
            },
            "sandbox": {"mode": "none"},
            "check_command": args.check,
        }
    )


async def measure(args: argparse.Namespace, base: Path, base_url: str, server_pid: int) -> dict[str, Any]:
    ideal = args.workers / (args.actions * args.latency)
    tasks = args.tasks or int(ideal * (args.warmup + args.window) * 1.5 + args.workers * 4)
    repo = make_repo(base / "repo", {"README.md": "# benchmark repository\n"}, n_files=args.files)
    engine = Engine.create(
        settings_for(base_url, args, tasks),
        repo,
        bench_goal(tasks, args.actions, args.files, edit=args.work == "edit"),
        db_path=base / "f.db",
    )
    await engine.prepare()
    if args.no_gate:
        engine.gate = None
    rss_before = rss_bytes()
    if args.fresh_worktrees:
        engine.git.reuse_worktrees = False
    probe = Probe()
    engine.subscribe(probe)
    probe.count_git()
    git = engine.git
    assert git is not None
    wt_lock = git._worktree_lock = TimedLock(git._worktree_lock)  # type: ignore[assignment]
    gate = git.shared.gate = TimedLock(git.shared.gate)  # type: ignore[assignment]
    git.worktree = probe.timed_cm(git.worktree)  # type: ignore[method-assign]
    git.commit = probe.timed("commit", git.commit)  # type: ignore[method-assign]
    git.integrate = probe.timed("integrate", git.integrate)  # type: ignore[method-assign]
    engine.repo_map = probe.timed("repo_map", engine.repo_map)  # type: ignore[method-assign]
    worker_module.execute = probe.timed("actions", worker_module.execute)  # type: ignore[assignment]
    start = worker_module.WorkerLoop.start
    worker_module.WorkerLoop.start = probe.timed("worker_start", start)  # type: ignore[method-assign]
    outcome: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def go() -> None:
            outcome["o"] = await engine.run()
            tg.cancel_scope.cancel()
            if "b" not in outcome:
                raise RuntimeError(f"the session ended before the window did: {outcome['o']}")

        tg.start_soon(go)
        tg.start_soon(probe.sample_lag)
        began = time.monotonic()
        while probe.first_wave(args.workers) and time.monotonic() - began < FIRST_WAVE_MAX:
            await anyio.sleep(0.5)  # until every worker has had a worktree
        first_wave = time.monotonic() - began
        await anyio.sleep(args.warmup)
        a = snapshot(engine, server_pid)
        a["first_wave"] = first_wave
        await anyio.sleep(args.window)
        await anyio.sleep(probe.whole_periods(a["at"], args.window) - args.window)
        b = outcome["b"] = snapshot(engine, server_pid)
        engine.stop(reason="benchmark window over")
    b["rss_before"] = rss_before
    return report(args, engine, probe, a, b, ideal, tasks, wt_lock, gate, base / "f.db", outcome.get("o"))


def report(
    args: argparse.Namespace,
    engine: Engine,
    probe: Probe,
    a: dict[str, float],
    b: dict[str, float],
    ideal: float,
    planned: int,
    wt_lock: TimedLock,
    gate: TimedLock,
    db_path: Path,
    outcome: Any,
) -> dict[str, Any]:
    t0, t1 = a["at"], b["at"]
    window = t1 - t0

    def inside(items: list[tuple[float, Any]]) -> list[Any]:
        return [v for t, v in items if t0 <= t < t1]

    done = inside(probe.done)
    calls = inside(probe.calls)
    durations = [t - probe.started[task] for t, task in probe.done if t0 <= t < t1]
    n, ncalls = len(done), len(calls)
    rate = n / window
    mean_duration = statistics.mean(durations) if durations else 0.0
    little = args.workers / mean_duration if mean_duration else 0.0
    cpu = {k: b[k] - a[k] for k in ("engine", "loop", "writer", "children", "server", "machine")}
    total = cpu["engine"] + cpu["children"]

    def per(x: float, d: int) -> float:
        return round(x * 1000 / d, 2) if d else 0.0

    lat = [ms - args.latency * 1000 for ms in calls]
    lag = inside(probe.lag)
    phases = {k: inside(v) for k, v in probe.phases.items()}
    git_counts = {k: sum(t0 <= t < t1 for t in v) for k, v in probe.git.items()}
    db = connect(db_path, migrate=False)
    try:
        sid = [engine.session_id, a["utc"], b["utc"]]
        integ = [
            r["duration_ms"]
            for r in db.query(
                "SELECT duration_ms FROM commits WHERE session_id = ? AND status = 'integrated' "
                "AND integrated_at >= ? AND integrated_at < ?",
                sid,
            )
        ]
        req = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(request)), 0), COALESCE(SUM(LENGTH(response)), 0) "
            "FROM llm_calls WHERE session_id = ?",
            [engine.session_id],
        ).fetchone()
        by_table = {
            name: round(size / 2**20, 2)
            for name, size in db.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8"
            ).fetchall()
        }
        checks = {
            "llm_call_rows": req[0],
            "client_calls": engine.client.calls,
            "integrated_commit_rows": db.execute(
                "SELECT COUNT(*) FROM commits WHERE session_id = ? AND status = 'integrated'",
                [engine.session_id],
            ).fetchone()[0],
            "commits_landed": engine.state.commits,
            "store_failures": len(engine.writer.failures) if engine.writer else None,
        }
    finally:
        db.conn.close()
    p50, p95, _ = quantiles(integ)
    lag50, lag95, lag99 = quantiles(lag)
    where = {
        name: {
            "per_task_ms": round(sum(v) * 1000 / max(1, n), 1),
            "mean_ms": round(statistics.mean(v) * 1000, 1),
            "p95_ms": round(quantiles(v)[1] * 1000, 1),
        }
        for name, v in sorted(phases.items())
        if v
    }
    # A task's wall time, exactly, per task: the server's fixed latency, the client's overhead on top of it,
    # and the time outside model calls before the first (worktree, prompt), between calls (actions,
    # recording) and after the last (commit, integration, worktree release).
    ended = [task for t, task in probe.done if t0 <= t < t1 and probe.call_spans[task]]
    ends = {task: t for t, task in probe.done}

    def split(task: str) -> tuple[float, float, float, float]:
        spans = probe.call_spans[task]
        gaps = sum(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False))
        return probe.model_s[task], spans[0][0] - probe.started[task], gaps, ends[task] - spans[-1][1]

    splits = [split(task) for task in ended]

    def mean_of(i: int, minus: float = 0.0) -> float | None:
        return round(statistics.mean(x[i] for x in splits) - minus, 2) if splits else None

    breakdown = {
        "model_server_s": round(args.actions * args.latency, 2),
        "model_call_overhead_s": mean_of(0, args.actions * args.latency),
        "before_first_call_s": mean_of(1),
        "between_calls_s": mean_of(2),
        "after_last_call_s": mean_of(3),
    }
    # The record's growth in the window: every table (calls, actions, events, commits...) in pages as stored,
    # per model call, and per hour (the plan and task rows written at the start are not in it).
    per_call = (b["record_bytes"] - a["record_bytes"]) / max(1, ncalls)
    grown = {k: v - a["tables"].get(k, 0) for k, v in b["tables"].items()}  # type: ignore[union-attr]
    grown_by_table = {
        k: round(v / max(1, ncalls)) for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v
    }
    return {
        "bench": "efficiency",
        "workers": args.workers,
        "efficiency": round(rate / ideal, 3),
        "record_bytes_per_call": round(per_call),
        # Memory per worker: the engine's growth from before the first worker to the window's end, every worker
        # busy or waiting on its model call (a worker idles in that wait), divided by the workers.
        "rss_mb": round(b["rss"] / 2**20, 1),
        "rss_kb_per_worker": round((b["rss"] - b["rss_before"]) / 1024 / args.workers, 1),
        "record_gb_per_hour": round(per_call * ncalls / window * 3600 / 1e9, 3),
        # at full speed (every worker's calls back to back: workers / latency calls per second), not at the
        # rate this run reached: what a machine that keeps up would write
        "record_gb_per_hour_full_speed": round(per_call * args.workers / args.latency * 3600 / 1e9, 3),
        "record_bytes_by_table": grown_by_table,
        "efficiency_by_duration": round(little / ideal, 3),
        "tasks_per_s": round(rate, 3),
        "ideal_tasks_per_s": round(ideal, 3),
        "tasks": n,
        "window_s": round(window, 1),
        "window_task_durations": round(window / mean_duration, 2) if mean_duration else None,
        "warmup_s": args.warmup,
        "first_wave_s": round(a["first_wave"], 1),
        "calls": ncalls,
        "cpu_ms_per_call": per(total, ncalls),
        "cpu_ms_per_task": per(total, n),
        "cpu": {
            "engine_ms_per_call": per(cpu["engine"], ncalls),
            "children_ms_per_call": per(cpu["children"], ncalls),
            "engine_ms_per_task": per(cpu["engine"], n),
            "children_ms_per_task": per(cpu["children"], n),
            "cores_engine": round(cpu["engine"] / window, 2),
            "cores_event_loop_thread": round(cpu["loop"] / window, 2),
            "cores_writer_thread": round(cpu["writer"] / window, 2),
            "cores_git_children": round(cpu["children"] / window, 2),
            "cores_scripted_server": round(cpu["server"] / window, 2),
            "cores_machine_busy": round(cpu["machine"] / window, 2),
            "cores_other_processes": round((cpu["machine"] - total - cpu["server"]) / window, 2),
        },
        "integration_p50_ms": round(p50, 1),
        "integration_p95_ms": round(p95, 1),
        "task_duration_mean_s": round(mean_duration, 2),
        "tasks_per_10s": [
            sum(t0 + k * 10 <= t < min(t1, t0 + k * 10 + 10) for t, _ in probe.done)
            for k in range(int(window // 10))
        ],
        "call_overhead_ms": {
            "mean": round(statistics.mean(lat), 1) if lat else None,
            "p95": round(quantiles(lat)[1], 1),
        },
        "event_loop_lag_ms": {
            "p50": round(lag50 * 1000, 1),
            "p95": round(lag95 * 1000, 1),
            "p99": round(lag99 * 1000, 1),
        },
        "task_time": breakdown,
        "where": where,
        "worktree_lock": lock_stats(wt_lock, t0, t1, window),
        "integration_gate": lock_stats(gate, t0, t1, window),
        "git_processes_per_task": round(sum(git_counts.values()) / n, 2) if n else None,
        "git": {
            k: {
                "per_task": round(c / n, 2),
                "avg_ms": round(probe.git_wall[k] / max(1, len(probe.git[k])) * 1000, 1),
            }
            for k, c in sorted(git_counts.items(), key=lambda kv: -kv[1])
            if c and n
        },
        "store": {
            "rows_per_s": round((b["rows"] - a["rows"]) / window),
            "rows_per_call": round((b["rows"] - a["rows"]) / ncalls, 1) if ncalls else None,
            "batches_per_s": round((b["batches"] - a["batches"]) / window, 1),
            "request_kb_per_call": round(req[1] / 1024 / max(1, req[0]), 2),
            "response_kb_per_call": round(req[2] / 1024 / max(1, req[0]), 2),
            "db_mb": round(db_path.stat().st_size / 2**20, 1),
            "mb_by_table": by_table,
        },
        "checks": checks,
        "latency_s": args.latency,
        "actions": args.actions,
        "finish_counts_as_action": True,
        "repo_files": args.files + 1,
        "work": args.work,
        "tasks_planned": planned,
        "sandbox": "none",
        "check": None if args.no_gate else args.check,
        "gate": None if args.no_gate else gate_figures(engine, db_path),
        "worktrees": args.worktrees + (", fresh per task" if args.fresh_worktrees else ", reused"),
        "outcome": getattr(outcome, "status", None),
        "cpus": os.cpu_count(),
    }


def gate_figures(engine: Engine, db_path: Path) -> dict[str, Any]:
    """What the landing gate did over the whole run: decisions, check runs, re-gates, time."""
    gate = engine.gate
    db = connect(db_path)
    regates = next(iter(db.query("SELECT COUNT(*) n FROM integrations WHERE result = 'regate'")))["n"]
    if gate is None:
        return {"regates": regates}
    return {
        "passes": gate.passes,
        "refusals": gate.refusals,
        "check_runs": gate.check_runs,
        "regates": regates,
        "ms_per_landing": round(gate.total_ms / max(1, gate.passes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the server takes per call")
    parser.add_argument("--actions", type=int, default=10, help="model calls per task, finish included")
    parser.add_argument("--window", type=float, default=120.0, help="measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=40.0, help="seconds skipped once every worker has started"
    )
    parser.add_argument(
        "--files",
        type=int,
        default=0,
        help="generated files in the repository (0: 2 x workers, at least 200)",
    )
    parser.add_argument(
        "--work", choices=("edit", "add"), default="edit", help="tasks edit existing files, or add new ones"
    )
    parser.add_argument("--tasks", type=int, default=0, help="tasks the planner queues (0: enough)")
    parser.add_argument(
        "--worktrees", choices=("tmpfs", "disk"), default="tmpfs", help="where worktrees live"
    )
    parser.add_argument("--fresh-worktrees", action="store_true", help="a new worktree per task, no reuse")
    parser.add_argument("--no-gate", action="store_true", help="land without the landing gate (to compare)")
    parser.add_argument(
        "--check",
        default="none",
        help='the landing gate\'s check, run unsandboxed on every merged tree ("none": the parse gate only, '
        'which the benchmark\'s text files pass without a merge; try "true" for a trivial check)',
    )
    parser.add_argument("--keep-record", type=Path, help="copy the record here afterwards, to inspect it")
    args = parser.parse_args()
    if args.actions < 2:
        parser.error("--actions must be at least 2 (some work, then finish)")
    args.files = args.files or max(200, 2 * args.workers)
    with tempfile.TemporaryDirectory(prefix="formicary-efficiency-") as tmp:
        base = Path(tmp)
        home = base / "home"
        if args.worktrees == "tmpfs":
            home = Path(tempfile.mkdtemp(prefix="formicary-efficiency-", dir="/dev/shm"))
        os.environ["FORMICARY_HOME"] = str(home)  # worktrees and any config stay in a temp folder
        proc, base_url = spawn_server_process(
            responder="tests.bench_team:bench_responder", latency=args.latency
        )
        try:
            result = anyio.run(measure, args, base, base_url, proc.pid)
            if args.keep_record:
                shutil.copy(base / "f.db", args.keep_record)
        finally:
            stop_server_process(proc)
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
