"""The serial part of a landing, in-process: a batch of requests merged and committed one after another onto
the advancing tip of the shared branch, then ONE compare-and-swap for the whole batch.

Why one thread hop and one CAS for many: at 1,024 workers ~51 tasks land per second through one critical
section; per landing it must cost well under the 20 ms that leaves. Each landed request is its own commit
(first parent: the one before it), so the branch's first-parent history keeps one commit per task.

A request the batch cannot land is dropped from it and the rest go on (the tip does not move for it):
``slow`` when the merge needs git's judgement (a path changed on both sides, a file meeting a folder: the
requester asks ``git merge-tree`` outside the critical section), ``held`` when it would change a path another
task has the turn on (:mod:`.hotpaths`), ``refused`` when the merged tree is not the one its gate passed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .inproc import _cas, _commit, _pygit2, merge_onto, repository, three_way


@dataclass
class Ask:
    """One request to land ``head`` (by ``name``/``email``, with ``message``).

    ``accepts(merged_tree, tip_tree)``: whether the merge may land (a gate passed that tree, or any).
    ``premerged``: (commit, tree) when git already merged ``head`` onto that earlier tip outside the critical
    section; then what lands is that tree's change from the commit's tree, put onto the tip as it is now.
    """

    head: str
    message: str
    name: str
    email: str
    accepts: Callable[[str, str], bool] = lambda merged, tree: True
    task_id: str = ""
    premerged: tuple[str, str] | None = None


@dataclass
class Landed:
    """What the batch did with one request: ``landed`` onto ``onto`` as ``tip`` (the same when its tree was
    already there), ``refused`` (``tree`` is not one it accepts), ``held`` (``touched`` has a path another task
    has the turn on) or ``slow`` (git must merge it onto ``onto``)."""

    result: Literal["landed", "refused", "held", "slow"]
    onto: str
    tip: str
    tree: str
    touched: list[str] = field(default_factory=list)


class _Either:
    def __init__(self, *sets: Container[str]) -> None:
        self.sets = sets

    def __contains__(self, item: object) -> bool:
        return any(item in s for s in self.sets)

    def __bool__(self) -> bool:
        return True


def land_batch(
    git_dir: Path | str,
    ref: str,
    tip: str,
    tree: str,
    asks: list[Ask],
    log: str = "formicary: integrate",
    known: Container[str] = (),
    owners: Mapping[str, str] | None = None,
) -> tuple[list[Landed], bool | None]:
    """Merge and commit each of ``asks`` onto the advancing tip, in order, then move ``ref`` from ``tip`` by
    compare-and-swap. One :class:`Landed` per ask; the second value is the CAS's outcome (None: nothing to move).

    ``known``: commits every one of which is an ancestor of ``tip`` (see :func:`.inproc._known_base`).
    ``owners``: path → the task that has the turn on it; a request that would change one another task owns is
    held. Nothing here raises for one request: a libgit2 error propagates and nothing has moved.
    """
    out: list[Landed] = []
    now = tip
    made: set[str] = set()  # this batch's commits: ancestors of ``now`` as well
    with repository(git_dir) as repo:
        for ask in asks:
            merged = _merge(repo, now, ask, _Either(known, made))
            if merged is None:
                out.append(Landed("slow", now, now, ""))
                continue
            new_tree, touched = merged
            if owners and any(owners.get(p, ask.task_id) != ask.task_id for p in touched):
                out.append(Landed("held", now, now, new_tree, touched))
                continue
            if not ask.accepts(new_tree, tree):
                out.append(Landed("refused", now, now, new_tree))
                continue
            onto = now
            if new_tree != tree:
                now, tree = _commit(repo, new_tree, [now], ask.message, ask.name, ask.email), new_tree
                made.add(now)
            out.append(Landed("landed", onto, now, new_tree, touched))
        if now == tip:
            return out, None
        return out, _cas(repo, ref, now, tip, log)


def _merge(repo: Any, now: str, ask: Ask, known: Container[str]) -> tuple[str, list[str]] | None:
    if ask.premerged is None:
        return merge_onto(repo, now, ask.head, known)
    onto, merged_tree = ask.premerged
    oid = _pygit2().Oid
    ours, common = repo[oid(hex=now)].tree, repo[oid(hex=onto)].tree
    return three_way(repo, ours, repo[oid(hex=merged_tree)], common)
