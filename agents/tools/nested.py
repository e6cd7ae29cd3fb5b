"""No repository inside a worktree: find and remove every ``.git`` below a worktree's root.

Why: when formicary's own git runs ``add -A`` or ``status`` in a worktree, git looks into nested repositories
(it starts ``git status`` in a submodule, and reads a nested repository's config), so a ``.git`` folder an
agent planted could run its ``core.fsmonitor``, filters or hooks on the host. A gitlink of the target
repository stays a gitlink in the tree; only its folder never becomes a repository. The walk is one
``os.scandir`` pass that never follows symlinks; the worktree's own ``.git`` (at the root) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat


def find_nested_git(root: str | os.PathLike[str]) -> list[str]:
    """Paths (relative, ``/``-separated) of every ``.git`` entry below ``root``, in any case; the root's own is skipped."""
    top = os.fspath(root)
    found: list[str] = []
    stack = [(top, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.casefold() == ".git":
                    if rel:
                        found.append(f"{rel}{name}")
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{rel}{name}/"))
                except OSError:
                    continue
    return sorted(found)


def remove_nested_git(root: str | os.PathLike[str]) -> list[str]:
    """Remove every nested ``.git`` (folder, file or link) below ``root``; return what was removed."""
    top = os.fspath(root)
    removed = find_nested_git(top)
    for rel in removed:
        path = os.path.join(top, rel)
        try:
            st = os.lstat(path)
            parent = os.path.dirname(path)
            os.chmod(parent, os.lstat(parent).st_mode | stat.S_IRWXU)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            _make_writable(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    left = [rel for rel in removed if os.path.lexists(os.path.join(top, rel))]
    if left:
        raise OSError(f"nested repository could not be removed: {left[0]}")
    return removed


def _make_writable(folder: str) -> None:
    """An agent may have made folders read-only so rmtree fails; give the owner write access back first."""
    for dirpath, dirnames, _ in os.walk(folder):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            try:
                if not os.path.islink(path):
                    os.chmod(path, 0o700)
            except OSError:
                pass
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)


def nested_report(removed: list[str]) -> str:
    """The error observation a worker gets for the repositories removed from its worktree."""
    shown = ", ".join(removed[:5]) + (f" and {len(removed) - 5} more" if len(removed) > 5 else "")
    return f"error: nested repositories are not allowed: removed {shown}"
