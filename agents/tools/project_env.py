"""What a command in a worktree sees of the project's own Python environment: its code and its virtualenv.

Two things made a check in a worktree run something other than what the operator would run in their checkout:

- a project installed for development (``pip install -e .``) is imported from the operator's checkout, and with a
  src layout ``python -m pytest`` puts only the worktree's root on ``sys.path``: the worktree's ``src`` and root
  now lead ``PYTHONPATH``, which comes before site-packages and an editable install's finder;
- a project's own virtualenv at the top of its checkout (``.venv``, uv's and poetry's default, or ``venv``) is
  ignored by git, so a worktree has none, and ``python3`` was whatever the operator's ``PATH`` gave (without the
  project's test dependencies). Its ``bin`` now leads ``PATH`` (and the sandbox binds it back read-only, with the
  interpreter it was made from, as for any ``PATH`` folder: :mod:`.bwrap`).

The virtualenv is the operator's: a folder of their checkout that git ignores and tracks nothing in (never a
worktree's, which an agent writes, nor one the repository commits), so probing it on the host (``python -I -c
'import pytest'``) runs nothing an agent or the repository wrote.

The same holds for a JavaScript project's installed packages: ``node_modules`` is ignored, so a worktree had none
and ``npm test`` failed there on every tree alike ("mocha: not found"). The gate then saw two failing runs, let a
worker's file that dropped three exported functions land, and the next cycle planned "Install mocha". The
operator's folder is now bound read-only at the same place in each worktree by the sandbox
(:func:`dependency_binds`); without a sandbox, Node finds it by ``NODE_PATH`` and its programs at the end of
``PATH`` (:func:`unsandboxed_env`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .bwrap import git_dirs

VENV_NAMES = (".venv", "venv")
_VENVS: dict[str, str | None] = {}
"""The operator's checkout (real path) -> its project virtualenv, as the git layer found it."""
DEPENDENCY_NAMES = ("node_modules",)
"""Folders of installed packages at the top of a checkout that commands in its worktrees need (npm, yarn, pnpm)."""
_DEPENDENCIES: dict[str, tuple[str, ...]] = {}
"""The operator's checkout (real path) -> its dependency folders (real paths), as the git layer found them."""


def import_roots(worktree: str) -> str:
    """``PYTHONPATH`` for a command in ``worktree``: its ``src`` folder (the src layout), then its root."""
    src = os.path.join(worktree, "src")
    roots = [src] if os.path.isdir(src) and not os.path.islink(src) else []
    return os.pathsep.join([*roots, worktree])


def checkout_of(worktree: str) -> str | None:
    """The operator's checkout that ``worktree`` (a linked worktree, or the checkout itself) belongs to."""
    dot_git, common_dir = git_dirs(worktree)
    if dot_git is not None and common_dir is None:
        return worktree  # its own .git folder
    if common_dir is None or os.path.basename(common_dir) != ".git":
        return None
    return os.path.dirname(common_dir)


def register_venv(checkout: str | os.PathLike[str], venv: str | None) -> None:
    """Record the project's virtualenv for ``checkout``: found by the git layer, which can tell that git ignores
    it and tracks nothing in it (:func:`formicary.agents.git.generated.find_project_env`). Why not found here:
    a repository can commit a ``.venv/bin/python3`` of its own, and detection runs that file on the host."""
    _VENVS[os.path.realpath(checkout)] = venv


def register_dependencies(checkout: str | os.PathLike[str], folders: Iterable[str]) -> None:
    """Record the dependency folders of ``checkout``: found by the git layer, only folders git ignores as a whole
    (:func:`formicary.agents.git.generated.find_project_env`)."""
    _DEPENDENCIES[os.path.realpath(checkout)] = tuple(os.path.realpath(f) for f in folders)


def dependency_binds(worktree: str) -> list[tuple[str, str]]:
    """``(the operator's folder, the same place in worktree)`` for each dependency folder registered for the
    checkout ``worktree`` belongs to: what the sandbox binds there read-only. None for the checkout itself (it
    has its own), nor where the worktree has a link or a file of that name (a bind would go where it points)."""
    checkout = checkout_of(worktree)
    if checkout is None or os.path.realpath(checkout) == os.path.realpath(worktree):
        return []
    binds = []
    for folder in _DEPENDENCIES.get(os.path.realpath(checkout), ()):
        target = os.path.join(worktree, os.path.basename(folder))
        if not os.path.isdir(folder) or os.path.islink(target):
            continue
        if os.path.lexists(target) and not os.path.isdir(target):
            continue
        binds.append((folder, target))
    return binds


def unsandboxed_env(worktree: str, path: str) -> dict[str, str]:
    """Without a sandbox nothing is bound into a worktree: Node finds the checkout's packages by ``NODE_PATH``
    (CommonJS ``require``) and their programs (``mocha``, ``jest``) at the end of ``PATH``."""
    folders = [source for source, _ in dependency_binds(worktree)]
    if not folders:
        return {}
    return {
        "NODE_PATH": os.pathsep.join(folders),
        "PATH": os.pathsep.join([path, *(os.path.join(f, ".bin") for f in folders)]),
    }


def venv_shape(folder: str) -> bool:
    """Whether ``folder`` looks like a virtualenv: a real folder with ``pyvenv.cfg`` and a ``bin/python3``."""
    return (
        not os.path.islink(folder)
        and os.path.isfile(os.path.join(folder, "pyvenv.cfg"))
        and os.access(os.path.join(folder, "bin", "python3"), os.X_OK)
    )


def project_venv(checkout: str | None) -> str | None:
    """The virtualenv registered for ``checkout`` (see :func:`register_venv`), None when it has none."""
    return _VENVS.get(os.path.realpath(checkout)) if checkout else None


def project_python(checkout: str | Path | None) -> str | None:
    """The project's own ``python3`` (its virtualenv's), None when it has none."""
    venv = project_venv(os.fspath(checkout) if checkout else None)
    return os.path.join(venv, "bin", "python3") if venv else None


def command_env(worktree: str, path: str, checkout: str | None = None) -> dict[str, str]:
    """``PYTHONPATH``, and ``PATH``/``VIRTUAL_ENV`` when the project has a virtualenv, for a command in
    ``worktree`` (``checkout``: the operator's checkout, when ``worktree`` is not one of its worktrees)."""
    env = {"PYTHONPATH": import_roots(worktree)}
    venv = project_venv(checkout or checkout_of(worktree))
    if venv is not None:
        env["PATH"] = os.pathsep.join([os.path.join(venv, "bin"), path])
        env["VIRTUAL_ENV"] = venv
    return env
