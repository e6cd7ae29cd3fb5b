"""CPU cost of one model call through formicary's client, store recording included.

500 concurrent calls against the scripted server running in its own process (so only the client's CPU is
counted), each recorded as an ``llm_calls`` row by the one writer. Prints one JSON line:
``cpu_ms_per_call`` (median of --rounds rounds) and the figures behind it.
Run from the repository root: ``python -m bench.client`` or ``python bench/client.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.* when run as a script

from formicary.agents.model.client import ModelClient  # noqa: E402
from formicary.agents.settings import ModelSettings  # noqa: E402
from formicary.store.writer import Writer  # noqa: E402
from tests.scripted_server import spawn_server_process, stop_server_process  # noqa: E402


class Answer(BaseModel):
    answer: str
    n: int


async def one_round(base_url: str, calls: int, db: Path) -> tuple[float, float]:
    writer = Writer(db)
    client = ModelClient(writer, "bench")
    settings = ModelSettings(model="scripted-model", base_url=base_url, max_concurrency=calls, retries=0)
    messages = [
        {"role": "system", "content": "You are a benchmark."},
        {"role": "user", "content": "x" * 2000},
    ]

    async def call() -> None:
        await client.complete(settings, messages, "answer", Answer, role="worker", agent_id="A")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(call)
    await anyio.to_thread.run_sync(writer.flush)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await client.aclose()
    writer.close()
    return cpu * 1000 / calls, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reply = json.dumps({"answer": "benchmark", "n": 1})
    proc, base_url = spawn_server_process(script=[reply], extra_args=["--on-exhausted=repeat"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(one_round, base_url, 50, Path(tmp) / "warm.db")  # imports, connections
            results = [
                anyio.run(one_round, base_url, args.calls, Path(tmp) / f"r{i}.db") for i in range(args.rounds)
            ]
    finally:
        stop_server_process(proc)
    per_call = [r[0] for r in results]
    print(
        json.dumps(
            {
                "bench": "client",
                "calls": args.calls,
                "rounds": args.rounds,
                "cpu_ms_per_call": round(statistics.median(per_call), 3),
                "cpu_ms_per_call_min": round(min(per_call), 3),
                "cpu_ms_per_call_max": round(max(per_call), 3),
                "wall_s_median": round(statistics.median(r[1] for r in results), 3),
                "target_cpu_ms_per_call": 3.0,
            }
        )
    )


if __name__ == "__main__":
    main()
