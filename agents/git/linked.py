"""Making a linked worktree in-process, as ``git worktree add --no-checkout -b`` does, without a git process.

Why: ``git worktree add`` reads every linked worktree's metadata (to refuse a path or branch already in use),
so each costs time in proportion to the worktrees there are (~150-300 ms at 1,000 on a busy 2-core machine)
and, serialized by the session's worktree lock, the first 1,024 workers took minutes to start. Here the new
branch is made by compare-and-swap (it cannot be checked out anywhere: it did not exist) and the worktree's
folder is claimed by ``mkdir``, so nothing else needs reading. The files are git's documented layout
(gitrepository-layout: ``worktrees/<id>/{gitdir,commondir,HEAD}`` and the ``.git`` file), so ``git worktree
list/prune/remove`` and the operator's git see an ordinary linked worktree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .inproc import repository


def add_worktree(common_dir: Path, path: Path, branch: str, base: str) -> Path | None:
    """Make ``path`` a linked worktree (not checked out) on a new ``branch`` at ``base``; its git dir, or
    None when ``branch`` or ``path`` already exists (nothing is made then)."""
    from pygit2 import AlreadyExistsError, Oid

    try:
        path.mkdir()
    except FileExistsError:
        return None
    ref = f"refs/heads/{branch}"
    try:
        with repository(common_dir) as repo:
            repo.references.create(ref, Oid(hex=base))
    except AlreadyExistsError:
        path.rmdir()
        return None
    except Exception as exc:  # a name git refuses (a ref where a folder of refs is), as worktree add would
        path.rmdir()
        raise OSError(f"cannot create branch {branch}: {exc}") from exc
    meta = common_dir / "worktrees"
    meta.mkdir(exist_ok=True)
    name, n = path.name, 1
    while True:  # git's naming: the folder's name, numbered on a clash
        git_dir = meta / (name if n == 1 else f"{name}{n - 1}")
        try:
            git_dir.mkdir()
            break
        except FileExistsError:
            n += 1
    locked = git_dir / "locked"
    locked.write_text("initializing\n")  # what git writes while it sets one up: prune leaves it alone
    (git_dir / "commondir").write_text("../..\n")
    (git_dir / "gitdir").write_text(f"{path / '.git'}\n")
    (git_dir / "HEAD").write_text(f"ref: {ref}\n")
    (path / ".git").write_text(f"gitdir: {git_dir}\n")
    locked.unlink()
    return git_dir


def unfinished_metadata(common_dir: Path, root: Path, live: set[str]) -> None:
    """Remove worktree metadata a killed process left half made (linked.py): still locked "initializing",
    for a folder under ``root`` of a session not in ``live`` whose ``.git`` file was never written. Git's
    prune leaves a locked worktree alone, so nothing else would."""
    meta = common_dir / "worktrees"
    if not meta.is_dir():
        return
    for git_dir in meta.iterdir():
        try:
            if (git_dir / "locked").read_text() != "initializing\n":
                continue
            target = Path((git_dir / "gitdir").read_text().strip()).parent
        except OSError:
            continue  # no gitdir yet: it may be another process's, being made right now
        try:
            rel = target.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        if rel.parts and rel.parts[0] not in live and not (target / ".git").exists():
            shutil.rmtree(git_dir, ignore_errors=True)


def orphan_folders(common_dir: Path, root: Path, live: set[str]) -> list[Path]:
    """Folders under ``root`` (sessions not in ``live``) left by a crash: their ``.git`` points into this
    repository's metadata that no longer exists, or they are empty (claimed by mkdir, never made)."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    meta = common_dir / "worktrees"
    for session_dir in root.iterdir():
        if session_dir.name in live or not session_dir.is_dir():
            continue
        for child in session_dir.iterdir():
            dotgit = child / ".git"
            if not dotgit.is_file():
                if child.is_dir() and not dotgit.exists() and not any(child.iterdir()):
                    found.append(child)  # claimed by mkdir (linked.py), killed before its .git was written
                continue
            text = dotgit.read_text(errors="replace").strip()
            if not text.startswith("gitdir:"):
                continue
            gitdir = Path(text[len("gitdir:") :].strip())
            if gitdir.parent.resolve() == meta.resolve() and not gitdir.exists():
                found.append(child)
    return found
