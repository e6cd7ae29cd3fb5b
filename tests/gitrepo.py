"""Real temporary git repositories for tests and benchmarks, with an identity configured.

Everything runs ``git -C <path>`` (never chdir). Other test modules reuse :func:`make_repo` and :func:`git`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IDENTITY = ("-c", "user.name=Test Operator", "-c", "user.email=operator@example.com")
ENV = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
for _var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
    ENV.pop(_var, None)


def git(path: Path, *args: str) -> str:
    """Run git in ``path`` and return its stdout (stripped); raise on failure."""
    res = subprocess.run(
        ["git", "-C", str(path), *IDENTITY, *args], env=ENV, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, n_files: int = 0) -> Path:
    """Create a repository at ``path`` with one initial commit on ``main``.

    Args:
        path: the folder to create (parents too).
        files: relative path -> content, committed as given.
        n_files: extra generated files ``src/dNN/fileNNN.txt`` of 40 numbered lines each.

    Returns:
        ``path``, with ``user.name``/``user.email`` set in the repository's own config.
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test Operator")
    git(path, "config", "user.email", "operator@example.com")
    git(path, "config", "commit.gpgSign", "false")
    content = dict(files or {})
    for i in range(n_files):
        content[f"src/d{i % 10:02}/file{i:03}.txt"] = "".join(f"file {i} line {n}\n" for n in range(40))
    if not content:
        content["README.md"] = "# test repository\n"
    for rel, text in content.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path
