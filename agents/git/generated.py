"""Generated files a project needs in every worktree: ignored Python files its build wrote into its packages.

A project built with setuptools-scm, hatch-vcs or versioneer has a ``_version.py`` (and a project with C
extensions built in place has ``*.so`` files) that ``.gitignore`` keeps out of git. The operator's checkout has
them; a worktree made from a commit does not, so every check there fails on an ImportError the operator never
sees, and a small model then "fixes" the import. At session start, formicary reads such files from the operator's
checkout once (:func:`find_generated`) and puts them into each worktree it hands out (:func:`provide`); a commit
leaves them out unless the worker changed them (:func:`formicary.agents.git.inproc.commit_worktree`).

What counts: an ignored regular file (not a symlink) with a Python suffix, in a folder of the commit that holds
tracked Python files (a package), never under ``__pycache__``; read without following links, within caps.
Ignored folders (a virtualenv, ``build/``) are listed as one entry by git and never walked. The files come from
the operator's own checkout, never from a worktree an agent wrote in.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..tools.confine import write_all
from ..tools.project_env import DEPENDENCY_NAMES, VENV_NAMES, register_dependencies, register_venv, venv_shape
from . import inproc
from .run import git

SUFFIXES = (".py", ".pyi", ".so", ".pyd")
MAX_FILES = 200
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


async def ignored(root: Path) -> list[str]:
    """What git ignores in the operator's checkout: files, and whole folders as ``name/`` (not walked)."""
    listed = await git(
        "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory", "--no-empty-directory",
        cwd=root, check=False,
    )  # fmt: skip
    return [p for p in listed.out.split("\0") if p] if listed.rc == 0 else []


async def find_project_env(root: Path, listing: list[str] | None = None) -> str | None:
    """The project's virtualenv at the top of ``root``, registered for its commands (:mod:`..tools.project_env`)
    with its dependency folders (``node_modules``): only folders git ignores as a whole (so the repository
    tracks nothing in them), a virtualenv shaped like one."""
    listing = await ignored(root) if listing is None else listing
    folders = [os.path.join(root, name) for name in DEPENDENCY_NAMES if f"{name}/" in listing]
    register_dependencies(root, [f for f in folders if os.path.isdir(f) and not os.path.islink(f)])
    for name in VENV_NAMES:
        folder = os.path.join(root, name)
        if f"{name}/" in listing and venv_shape(folder):
            venv = os.path.realpath(folder)
            register_venv(root, venv)
            return venv
    register_venv(root, None)
    return None


async def find_generated(root: Path, git_dir: Path, head: str) -> dict[str, bytes]:
    """``{relative path: bytes}`` of the generated files in the operator's checkout at ``root`` (see above); the
    project's virtualenv and dependency folders are registered on the way (:func:`find_project_env`)."""
    listing = await ignored(root)
    await find_project_env(root, listing)
    candidates = [
        p
        for p in listing
        if not p.endswith("/") and p.endswith(SUFFIXES) and "__pycache__" not in p.split("/")
    ]
    if not candidates:
        return {}
    return await inproc.in_thread(_read_generated, root, git_dir, head, candidates)


def _read_generated(root: Path, git_dir: Path, head: str, candidates: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    total = 0
    real_root = os.path.realpath(root)
    with inproc.repository(git_dir) as repo:
        tree = repo.revparse_single(f"{head}^{{tree}}")
        packages: dict[str, bool] = {}
        for rel in sorted(candidates)[: MAX_FILES * 4]:
            folder = rel.rpartition("/")[0]
            if folder not in packages:
                packages[folder] = _holds_python(tree, folder)
            if not packages[folder] or len(found) >= MAX_FILES:
                continue
            if not os.path.realpath(root / rel).startswith(real_root + os.sep):
                continue  # through a linked folder: not the checkout's own
            data = _read_regular(root / rel)
            if data is None or total + len(data) > MAX_TOTAL_BYTES:
                continue
            found[rel] = data
            total += len(data)
    return found


def _holds_python(tree, folder: str) -> bool:
    try:
        sub = tree[folder] if folder else tree
    except KeyError:
        return False
    if sub.type_str != "tree":
        return False
    return any(entry.type_str == "blob" and entry.name.endswith(".py") for entry in sub)


def _read_regular(path: Path) -> bytes | None:
    try:
        fd = os.open(path, _READ)
    except OSError:
        return None  # a symlink (ELOOP), gone, unreadable
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]
    finally:
        os.close(fd)


def provide(worktree: Path, files: Mapping[str, bytes]) -> list[str]:
    """Write each generated file the worktree lacks or holds otherwise; the paths written. Blocks.

    Only into folders the worktree really has (no symlink on the way, none made): a package the current tip
    moved or removed just does not get its file. The target itself is opened without following a link."""
    written: list[str] = []
    for rel, data in files.items():
        path = worktree / rel
        if not _real_folders(worktree, rel):
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError:
            continue
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_size == len(data) and _read_regular(path) == data:
                continue
        try:
            fd = os.open(path, _WRITE, 0o644)
        except OSError:
            continue
        try:
            write_all(fd, data)  # not a tool's write: it must not be recorded as the worker's change
        finally:
            os.close(fd)
        written.append(rel)
    return written


def _real_folders(worktree: Path, rel: str) -> bool:
    here = worktree
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return False
        except OSError:
            return False
    return True


def unchanged(worktree: Path, files: Mapping[str, bytes]) -> list[str]:
    """The generated paths the worktree still holds exactly as provided (a commit leaves these out)."""
    return [rel for rel, data in files.items() if _read_regular(worktree / rel) == data]
