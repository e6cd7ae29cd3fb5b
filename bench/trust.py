"""What the trust boundary costs on the hot path; prints ONE JSON line.

* ``scan_ms``: one nested-``.git`` scan (``agents/git/nested.find_nested_git``) of a worktree of ``--files`` files
  in folders of 20, median of ``--runs``; it runs after every command and before every commit.
* ``redact_ms_*``: the redactor on a 15 KB model request without any anchor (the common case) and with code full
  of ``token`` and ``secret`` words, median.
* ``git_ms_hardened`` / ``git_ms_plain``: ``git rev-parse HEAD`` through the runner (hardened options and
  environment) and as a plain process, median, measured alternately in one run.
* ``sandbox_true_ms``: ``true`` under bubblewrap with the limits, seccomp filter and sized tmpfs (if bwrap is
  installed), median.

Usage: python -m bench.trust [--files 5000] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def _request(anchors: bool) -> str:
    code = "".join(f"def f{i}(x):\n    return x * {i} + len(str(x))  # line {i}\n" for i in range(300))
    if anchors:
        code += "".join(f"tokens_{i} = count_tokens(text)\nsecret_{i} = load(name)\n" for i in range(40))
    messages = [{"role": "user", "content": code[:7500]}, {"role": "assistant", "content": code[7500:15000]}]
    return json.dumps({"messages": messages})


def main(files: int, runs: int) -> None:
    import anyio

    from formicary.agents.git.run import git_env, git_sync
    from formicary.agents.tools.nested import find_nested_git
    from formicary.agents.tools.sandbox import SandboxOptions, run_command
    from formicary.store.redact import Redactor

    figures: dict[str, object] = {"bench": "trust", "files": files, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="formicary-bench-trust-") as tmp:
        root = Path(tmp) / "wt"
        for i in range(files):
            folder = root / f"d{i // 20:04}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}.txt").write_text("x\n")
        figures["scan_ms"] = _median_ms(lambda: find_nested_git(root), runs)
        redact = Redactor()
        for kind, anchors in (("plain", False), ("anchors", True)):
            text = _request(anchors)
            figures[f"redact_ms_{kind}"] = _median_ms(lambda t=text: redact(t), runs * 10)
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for args in (
            ["init", "-q"],
            ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "x"],
        ):
            git_sync(*args, cwd=repo)
        env = {**os.environ, "LC_ALL": "C"}
        hardened, plain = [], []
        for _ in range(runs):
            hardened.append(_median_ms(lambda: git_sync("rev-parse", "HEAD", cwd=repo), 1))
            plain.append(
                _median_ms(
                    lambda: subprocess.run(
                        ["git", "rev-parse", "HEAD"], cwd=repo, env=env, capture_output=True
                    ),
                    1,
                )
            )
        figures["git_ms_hardened"] = round(statistics.median(hardened), 3)
        figures["git_ms_plain"] = round(statistics.median(plain), 3)
        figures["git_env_vars"] = len(git_env())
        if shutil.which("bwrap"):

            async def sandboxed() -> float:
                times = []
                for _ in range(max(3, runs // 2)):
                    started = time.perf_counter()
                    await run_command("true", root, SandboxOptions())
                    times.append((time.perf_counter() - started) * 1000)
                return round(statistics.median(times), 3)

            figures["sandbox_true_ms"] = anyio.run(sandboxed)
    print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000, help="files in the scanned worktree")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per figure")
    args = parser.parse_args()
    main(args.files, args.runs)
