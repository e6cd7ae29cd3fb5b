"""Benchmark: many simulated workers integrating onto one shared branch; prints ONE JSON line.

Each simulated worker (no model) takes a task, gets a worktree at the shared tip, edits or adds a file,
commits, integrates and releases the worktree, all inside the measured time, as a real worker pays it. The
main figure uses ``reuse_worktrees`` (a finished task's worktree is parked and the worker's next task gets it
reset and cleaned to the new tip); ``other_mode`` measures a new worktree added and removed per commit (the
default the engine runs with), whose cost is writing and deleting every file of the repository each time
(``--fresh-worktrees`` swaps the two). 10% of the edits append to one shared file, so concurrent ones
conflict and a scripted worker resolves them (keep both sides' lines). Every attempt is recorded in a real
SQLite store file. ``lost`` counts tasks whose work is nowhere: a landed one missing from the final tree or
unreachable from the branch, or a failed one whose task branch lacks it. The same work then runs as the
naive loop (no critical section: every racer loops merge + CAS until it wins) on a fresh repository, in the
main figure's worktree mode, for ``ratio``. ``profile`` counts git processes per commit by command.

The landing gate is on as the product runs it (``--check none``: the parse gate, which these text files pass
without a merge; ``--check CMD`` runs CMD, unsandboxed here, on every merged tree, and a tree that was checked
is not checked again; ``--no-gate`` for the figures without it). ``gate`` reports its refusals, check runs,
re-gates (the tip moved after the gate passed) and the time integration spent in it.

Run from the repository root: python -m bench.integration (or python bench/integration.py)
    [--commits 2000] [--workers 64] [--naive-commits 300] [--files 220] [--check none] [--no-gate]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.gitrepo when run as a script

from formicary.agents.git import run as git_ops  # noqa: E402
from formicary.agents.git.gate import Gate  # noqa: E402
from formicary.agents.git.integration import Conflict  # noqa: E402
from formicary.agents.git.workspace import SessionRepo, Worktree  # noqa: E402
from formicary.agents.tools.check import spec_for  # noqa: E402
from formicary.store.writer import Writer  # noqa: E402
from tests.gitrepo import make_repo  # noqa: E402

LINES = 40


class Profile:
    """Counts git processes and their wall time by subcommand (patched into git_ops for the run)."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self._orig = git_ops._run

    async def _run(self, args: tuple[str, ...], *rest: object) -> tuple[int, bytes, bytes]:
        t0 = time.perf_counter()
        try:
            return await self._orig(args, *rest)  # type: ignore[arg-type]
        finally:
            words = [a for a in args if not a.startswith("-") and "=" not in a]
            key = " ".join(words[:2]) if words[0] in ("worktree", "cat-file") else words[0]
            entry = self.stats[key]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0

    def __enter__(self) -> Profile:
        git_ops._run = self._run  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        git_ops._run = self._orig

    def summary(self, commits: int) -> dict[str, object]:
        total = sum(n for n, _ in self.stats.values())
        by = {
            k: {"per_commit": round(n / commits, 2), "avg_ms": round(t / n * 1000, 1)}
            for k, (n, t) in sorted(self.stats.items(), key=lambda kv: -kv[1][1])
        }
        return {"git_processes_per_commit": round(total / commits, 2), "by_command": by}


def token(n: int) -> str:
    return f"tok-{n:06d};"


def apply_edit(wt: Worktree, n: int, n_files: int, shared_every: int) -> None:
    """Task n's change: append to the shared file, edit a line of a generated file, or add a file."""
    if n % shared_every == 0:
        with (wt.path / "shared.txt").open("a") as fh:
            fh.write(f"shared {token(n)}\n")
    elif n % 2:
        target = wt.path / "added" / f"c{n}.txt"
        target.parent.mkdir(exist_ok=True)
        target.write_text(f"added {token(n)}\n")
    else:
        i = n % n_files
        # Lines 3 apart, so no two edits of one file are adjacent (adjacent hunks conflict in git).
        line = (n // n_files) * 3 % (LINES - 1)
        target = wt.path / f"src/d{i % 10:02}/file{i:03}.txt"
        lines = target.read_text().splitlines(keepends=True)
        lines[line] = f"edited {token(n)}\n"
        target.write_text("".join(lines))


async def keep_both(conflict: Conflict) -> bool:
    """The scripted worker's resolution: keep every line of both sides."""
    for f in conflict.files:
        lines = (f.merged or "").splitlines(keepends=True)
        kept = [ln for ln in lines if not ln.startswith(("<<<<<<< ", "=======", ">>>>>>> "))]
        (conflict.worktree / f.path).write_text("".join(kept))
    return True


async def run(
    repo: Path,
    wt_root: Path,
    sid: str,
    commits: int,
    workers: int,
    *,
    serialize: bool,
    reuse: bool,
    writer: Writer | None,
    n_files: int,
    shared_every: int,
    rounds: int,
    check: str | None = "none",
) -> dict[str, object]:
    session = await SessionRepo.open(repo, sid, worktrees_dir=wt_root / sid, reuse_worktrees=reuse)
    gate = None if check is None else Gate(spec_for(check, "--check"), "none", parallel=2, timeout=60)
    gate_ms: list[float] = []
    session.shared.serialize = serialize
    queue = iter(range(commits))
    latencies: list[float] = []
    landed: dict[int, str] = {}
    kept: dict[int, str] = {}  # failed tasks: their branch
    totals = defaultdict(int)

    async def worker(k: int) -> None:
        for n in queue:
            async with session.worktree(f"c{n}", f"w{k}") as wt:
                apply_edit(wt, n, n_files, shared_every)
                await session.commit(wt, f"Task c{n}")
                t0 = time.perf_counter()
                result = await session.integrate(
                    wt, keep_both, writer=writer, max_conflict_rounds=rounds, gate=gate
                )
                latencies.append((time.perf_counter() - t0) * 1000)
                gate_ms.append(result.gate_ms)
            totals["regates"] += result.regates
            totals["retries"] += result.retries
            totals["conflicts"] += result.conflicts
            totals["failed"] += result.status != "integrated"
            if result.sha:
                landed[n] = result.sha
            elif result.status == "failed":
                kept[n] = result.branch

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for k in range(workers):
            tg.create_task(worker(k))
    await session.close()
    elapsed = time.perf_counter() - t0
    lost = await count_lost(session, commits, landed, kept)
    q = statistics.quantiles(latencies, n=20)
    return {
        "commits": commits,
        "seconds": round(elapsed, 2),
        "commits_per_hour": round(len(landed) / elapsed * 3600),  # landed ones only
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(q[18], 1),
        "cas_retries": totals["retries"],
        "conflicts": totals["conflicts"],
        "failed": totals["failed"],
        "lost": lost,
        "gate": None
        if gate is None
        else {
            "check": check,
            "refusals": gate.refusals,
            "check_runs": gate.check_runs,
            "regates": totals["regates"],
            "p50_ms": round(statistics.median(gate_ms), 2),
            "share_of_integration": round(sum(gate_ms) / max(sum(latencies), 1e-9), 3),
        },
    }


async def count_lost(session: SessionRepo, commits: int, landed: dict[int, str], kept: dict[int, str]) -> int:
    """Tasks whose work is nowhere: a landed one missing from the final tree or not reachable from the branch,
    or a failed one whose task branch does not hold its change."""
    root, tip = session.root, session.shared.tip or ""
    reachable = set((await git_ops.git("rev-list", tip, cwd=root)).out.split())
    names = (
        (await git_ops.git("ls-tree", "-r", "--name-only", "-z", tip, cwd=root)).out.strip("\0").split("\0")
    )
    blobs = await git_ops.cat_blobs(root, [f"{tip}:{name}" for name in names])
    text = "".join(b or "" for b in blobs.values())
    lost = 0
    for n in range(commits):
        if n in kept:
            found = await git_ops.git("grep", "-q", "-F", token(n), kept[n], cwd=root, check=False)
            lost += found.rc != 0
        else:
            lost += landed.get(n) not in reachable or token(n) not in text
    return lost


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="formicary-bench-") as tmp:
        base = Path(tmp)
        writer = Writer(base / "bench.db")

        async def measured(name: str, commits: int, *, serialize: bool, reuse: bool) -> dict[str, object]:
            # A fresh repository per run, so no run pays for the objects another left behind.
            repo = make_repo(base / name, files={"shared.txt": "shared file\n"}, n_files=args.files)
            with Profile() as prof:
                out = await run(
                    repo,
                    base / "wt",
                    name,
                    commits,
                    args.workers,
                    serialize=serialize,
                    reuse=reuse,
                    writer=writer,
                    n_files=args.files,
                    shared_every=args.shared_every,
                    rounds=args.conflict_rounds,
                    check=None if args.no_gate else args.check,
                )
            writer.flush()
            return {**out, "profile": prof.summary(commits)}

        main = await measured("main", args.commits, serialize=True, reuse=not args.fresh_worktrees)
        other = None
        if args.other_commits:
            other = await measured("other", args.other_commits, serialize=True, reuse=args.fresh_worktrees)
        naive = await measured("naive", args.naive_commits, serialize=False, reuse=not args.fresh_worktrees)
        rows = writer.rows_written
        writer.close()
    result: dict[str, object] = {
        "bench": "integration",
        "workers": args.workers,
        "repo_files": args.files + 1,
        "shared_file_share": round(1 / args.shared_every, 3),
        "max_conflict_rounds": args.conflict_rounds,
        "worktree_mode": "reused per worker" if not args.fresh_worktrees else "fresh per commit",
        **{k: v for k, v in main.items() if k != "profile"},
        "naive_commits": naive["commits"],
        "naive_commits_per_hour": naive["commits_per_hour"],
        "naive_cas_retries": naive["cas_retries"],
        "naive_p50_ms": naive["p50_ms"],
        "naive_failed": naive["failed"],
        "naive_lost": naive["lost"],
        "ratio": round(main["commits_per_hour"] / max(naive["commits_per_hour"], 1), 2),  # type: ignore[call-overload,operator]
        "store_rows": rows,
        "cpus": os.cpu_count(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews every figure
        "profile": main["profile"],
    }
    if other:
        result["other_mode"] = {
            "worktree_mode": "fresh per commit" if not args.fresh_worktrees else "reused per worker",
            **{
                k: other[k]
                for k in (
                    "commits",
                    "commits_per_hour",
                    "p50_ms",
                    "p95_ms",
                    "cas_retries",
                    "conflicts",
                    "failed",
                    "lost",
                )
            },
            "git_processes_per_commit": other["profile"]["git_processes_per_commit"],  # type: ignore[index]
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--naive-commits", type=int, default=300)
    parser.add_argument("--files", type=int, default=220, help="generated files in the repository")
    parser.add_argument("--shared-every", type=int, default=10, help="every Nth task edits the shared file")
    parser.add_argument(
        "--conflict-rounds", type=int, default=3, help="max_conflict_rounds (product default 3)"
    )
    parser.add_argument(
        "--fresh-worktrees",
        action="store_true",
        help="main figure with a new worktree per commit (added, removed); other_mode is then the reuse",
    )
    parser.add_argument(
        "--other-commits", type=int, default=500, help="also measure the other worktree mode (0: skip)"
    )
    parser.add_argument("--check", default="none", help='the landing gate\'s check ("none": parse gate only)')
    parser.add_argument("--no-gate", action="store_true", help="integrate without the landing gate")
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()
