"""One task's checkout: the record of a linked worktree that workspace makes and integration lands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..tools.changes import Changes
from .run import Identity


@dataclass
class Worktree:
    """One task's checkout. ``head`` is the task branch tip this process last wrote (None: no commit yet)."""

    path: Path
    branch: str
    base: str  # shared-branch tip the worktree was created from
    task_id: str
    agent_id: str
    git_dir: Path | None = None
    """The worktree's own git dir under the repository's ``worktrees/``, read when the worktree was made:
    every git call names it, so a ``.git`` file the agent rewrote is never followed."""
    head: str | None = None
    message: str | None = None
    status: str = "open"  # open | integrated | failed
    integrated_sha: str | None = None
    changed: set[str] | None = field(default_factory=set)
    """Paths this task's commits changed, from ``git add -v`` (a superset; None: not known, ask git). The
    landing gate uses it to skip a process when no changed file needs parsing."""
    followed: Changes | None = None
    """What formicary's tools changed here since the worktree last held its HEAD's tree exactly, and whether
    nothing else did (see :mod:`formicary.agents.tools.changes`); None: not followed, always scanned."""
    nested_removed: list[str] = field(default_factory=list)
    """Nested ``.git`` entries removed from this worktree by formicary's git (see :mod:`.nested`)."""

    @property
    def identity(self) -> Identity:
        return Identity.for_agent(self.agent_id)
