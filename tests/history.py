"""Walk a branch's first-parent history and run a check on every commit: did any commit make it worse?

For the gate's end-to-end tests, the real-model test and benchmarks (``regressions`` is the figure
bench/effectiveness.py reports). Each commit is exported with ``git archive`` into its own folder, so the check
runs on exactly the committed tree.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from formicary.agents.git.gate import compare
from formicary.agents.tools.check import CheckResult, run_check, spec_for


def first_parent_history(repo: Path, branch: str) -> list[str]:
    """Commit ids of ``branch``, oldest first, following first parents only."""
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--first-parent", "--reverse", branch],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


async def check_history(
    repo: Path, branch: str, command: str, scratch: Path, sandbox: str = "none", timeout: float = 300
) -> list[tuple[str, CheckResult]]:
    """``(commit, check result)`` for every first-parent commit of ``branch``, oldest first."""
    spec = spec_for(command, "config")
    results = []
    for n, sha in enumerate(first_parent_history(repo, branch)):
        folder = scratch / f"history-{n}-{sha[:10]}"
        folder.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", sha], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        results.append((sha, await run_check(folder, spec, sandbox, timeout=timeout)))
    return results


def regressions(history: list[tuple[str, CheckResult]]) -> list[tuple[str, str]]:
    """``(commit, why)`` for each commit after which the check got worse than on its first parent."""
    found = []
    for (_, before), (sha, after) in zip(history, history[1:], strict=False):
        new, why = compare(before, after)
        if why:
            found.append((sha, f"{why} {new[:5]}".strip()))
    return found
