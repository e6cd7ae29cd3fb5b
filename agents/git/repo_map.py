"""A compact map of the repository at a commit, for planners and workers: files, README head, recent commits.

Read from the object database (``git ls-tree``, ``git show``, ``git log``), so it needs no work tree and sees
exactly what landed on the shared branch.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .run import git

MAX_FILES = 150
README_LINES = 30
RECENT_COMMITS = 8


async def _git(repo: Path, *args: str) -> str:
    result = await git(*args, cwd=repo, check=False)
    return result.out if result.rc == 0 else ""


def compact_tree(files: list[str], limit: int = MAX_FILES) -> str:
    """Files grouped by folder; past ``limit`` files, folders are summarised by count."""
    if len(files) <= limit:
        return "\n".join(files)
    by_dir: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_dir[f.rsplit("/", 1)[0] if "/" in f else "."].append(f)
    lines, shown = [], 0
    for folder in sorted(by_dir):
        names = by_dir[folder]
        if shown + len(names) <= limit:
            lines.extend(names)
            shown += len(names)
        else:
            lines.append(f"{folder}/ ({len(names)} files)")
    return "\n".join(lines)


async def repo_map(repo: Path, ref: str) -> str:
    files = (await _git(repo, "ls-tree", "-r", "--name-only", ref)).splitlines()
    parts = [f"FILES ({len(files)}):", compact_tree(files) or "(empty)"]
    readme = next(
        (f for f in files if f.lower() in ("readme.md", "readme.rst", "readme.txt", "readme")), None
    )
    if readme:
        head = (await _git(repo, "show", "--no-textconv", f"{ref}:{readme}")).splitlines()[:README_LINES]
        parts += [f"\n{readme} (head):", "\n".join(head)]
    log = await _git(repo, "log", "--oneline", f"-{RECENT_COMMITS}", ref)
    if log:
        parts += ["\nRECENT COMMITS:", log.rstrip()]
    return "\n".join(parts)
