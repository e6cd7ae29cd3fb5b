"""Benchmark: a pool of 4 model endpoints against one alone, with one of the 4 failing mid-run; ONE JSON line.

Both runs are the real engine on the same scripted work (``tests.bench_team``: N tasks of A model calls each,
every task commits its own file), the same workers and the same per-endpoint cap, in one process run side by
side. Each scripted server is its own process with a fixed latency, so an endpoint's throughput is its cap over
its latency. Run "single": one endpoint. Run "pool": four endpoints; when half the tasks have ended one of them
starts failing — killed (``--failure down``: connections refused) or answering HTTP 500 to everything
(``--failure 500``). Figures: ``speedup`` (pool tasks/s over single tasks/s, work phase: first worker start to
last task end; target ≥ 3.2, the ideal with a server lost halfway being ~3.4) and ``failed_tasks`` (both runs;
target 0), the engine's CPU per model call in each run, and the pool's calls per endpoint. The 2 s latency (as in
``bench/efficiency.py``) keeps the model the bottleneck: on a busy 2-core machine a task's own work (actions,
commit, landing) is then a small share of its time, as with a real model.

Run from the repository root: ``python -m bench.pools`` or ``python bench/pools.py``
``[--tasks 64] [--actions 6] [--latency 2.0] [--cap 4] [--workers 16] [--failure down|500]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.* when run as a script

from formicary.agents.session import events as ev  # noqa: E402
from formicary.agents.session.engine import Engine  # noqa: E402
from formicary.agents.settings import Settings  # noqa: E402
from formicary.store.db import connect  # noqa: E402
from tests.bench_team import bench_goal  # noqa: E402
from tests.gitrepo import make_repo  # noqa: E402
from tests.scripted_server import spawn_server_process, stop_server_process  # noqa: E402

ENDPOINTS = 4


def settings_for(urls: list[str], args: argparse.Namespace) -> Settings:
    return Settings.model_validate(
        {
            "model": {
                "base_url": "",
                "endpoints": urls,
                "model": "scripted-model",
                "retries": 4,
                "timeout": max(30.0, args.latency * 10),
                "max_concurrency": args.cap,
                "context_length": 65536,
                "outage_limit": 120,
            },
            "limits": {
                "workers": args.workers,
                "cycles": 1,
                "planner_depth": 0,
                "tasks_per_cycle": args.tasks,
                "followups_per_planner": 0,
                "steps_per_worker": args.actions + 5,
                "wall_time": 3600,
            },
            "sandbox": {"mode": "none"},
        }
    )


async def one_run(
    name: str, urls: list[str], args: argparse.Namespace, base: Path, on_half: Any = None
) -> dict[str, Any]:
    repo = make_repo(base / name / "repo", {"README.md": "# bench\n"}, n_files=20)
    db_path = base / name / "record.db"
    engine = Engine.create(
        settings_for(urls, args), repo, bench_goal(args.tasks, args.actions, 20), db_path=db_path
    )
    marks: dict[str, float] = {}
    ended = 0

    def watch(event: ev.Event) -> None:
        nonlocal ended
        if isinstance(event, ev.AgentStarted) and event.role == "worker":
            marks.setdefault("first_worker", time.monotonic())
        elif isinstance(event, ev.TaskEnded):
            ended += 1
            marks["last_end"] = time.monotonic()
            if ended == args.tasks // 2 and on_half is not None:
                on_half()
                marks["failed_at"] = time.monotonic()

    engine.subscribe(watch)
    cpu0 = time.process_time()
    outcome = await engine.run()
    cpu = time.process_time() - cpu0
    db = connect(db_path)
    tasks = {
        r["status"]: r["n"]
        for r in db.query("SELECT status, COUNT(*) n FROM tasks WHERE kind = 'work' GROUP BY status")
    }
    calls = {
        r["endpoint"]: r["n"]
        for r in db.query("SELECT endpoint, COUNT(*) n FROM llm_calls GROUP BY endpoint")
    }
    errors = db.execute("SELECT COUNT(*) FROM llm_calls WHERE error IS NOT NULL").fetchone()[0]
    db.conn.close()
    span = marks.get("last_end", 0.0) - marks.get("first_worker", 0.0)
    done = tasks.get("done", 0)
    return {
        "outcome": str(outcome.status),
        "tasks_done": done,
        "tasks_failed": tasks.get("failed", 0),
        "work_s": round(span, 2),
        "tasks_per_s": round(done / span, 3) if span > 0 else None,
        "model_calls": sum(calls.values()),
        "failed_calls": errors,
        "cpu_ms_per_call": round(cpu * 1000 / max(1, sum(calls.values())), 2),
        "calls_per_endpoint": {url.rsplit(":", 1)[-1]: n for url, n in sorted(calls.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--actions", type=int, default=6, help="model calls per task, finish included")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds each server takes per call")
    parser.add_argument("--cap", type=int, default=4, help="max_concurrency of each endpoint")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--failure", choices=("down", "500"), default="down", help="how the one server fails")
    args = parser.parse_args()
    procs = []
    try:
        for _ in range(ENDPOINTS + 1):
            procs.append(
                spawn_server_process(responder="tests.bench_team:bench_responder", latency=args.latency)
            )
        with tempfile.TemporaryDirectory(prefix="formicary-pools-") as tmp:
            base = Path(tmp)
            os.environ["FORMICARY_HOME"] = str(base / "home")
            single = anyio.run(one_run, "single", [procs[0][1]], args, base)
            failing = procs[ENDPOINTS][0]

            def fail_one() -> None:
                if args.failure == "down":
                    failing.send_signal(signal.SIGTERM)
                else:
                    failing.send_signal(signal.SIGUSR1)

            pool_urls = [url for _, url in procs[1:]]
            pool = anyio.run(one_run, "pool", pool_urls, args, base, fail_one)
    finally:
        for proc, _ in procs:
            stop_server_process(proc)
    speedup = (
        round(pool["tasks_per_s"] / single["tasks_per_s"], 2)
        if pool["tasks_per_s"] and single["tasks_per_s"]
        else None
    )
    print(
        json.dumps(
            {
                "bench": "pools",
                "speedup": speedup,
                "failed_tasks": single["tasks_failed"] + pool["tasks_failed"],
                "target_speedup": 3.2,
                "ideal_speedup": round(2 / (1 / ENDPOINTS + 1 / (ENDPOINTS - 1)), 2),
                "endpoints": ENDPOINTS,
                "failure": args.failure,
                "single": single,
                "pool": pool,
                "tasks": args.tasks,
                "actions": args.actions,
                "latency_s": args.latency,
                "cap": args.cap,
                "workers": args.workers,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
