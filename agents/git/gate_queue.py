"""The landing queue a gate with a check runs: batches stacked on the tip, checked in parallel, landed in order.

Why a queue: a verdict holds only for the exact tree that was checked, so when every worker gates its own merge
against the tip and the tip moves meanwhile, the work is redone, and under load most of it (``bench/
efficiency.py --check true`` at 256 workers: 1,202 re-gates for 1,460 landings, efficiency 0.008). Here one
round at a time takes up to ``batch`` waiting landings, merges them one on top of the other onto the tip
(``merge-tree`` + ``commit-tree``: the same commits the CAS would write), has each worker run the check on its
stacked tree in its own worktree, in parallel (bounded by the gate's semaphore), and compares each result with
the one before it in the stack (the first with the tip's, cached by tree id). The accepted prefix lands with one
compare-and-swap. Every commit on the branch was checked on exactly its tree against exactly its first parent,
so walking the first-parent history, the check never gets worse.

The first refused landing goes back to its worker; the landings stacked after it are not decided and wait for
the next round (their trees included the refused change). A conflict with the real tip goes back to its worker;
one with a stacked, not yet landed commit waits for the next round. No worktree is touched by anyone but its
own worker: the round's holder only asks each waiting worker to run the check on a tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..tools.check import CheckResult
from . import inproc
from .run import MergeTreeResult
from .verdict import GateVerdict, compare

if TYPE_CHECKING:
    from .worktree import Worktree


class _Gate(Protocol):
    """What the queue asks of its gate (:class:`.gate.Gate`)."""

    parse: bool
    tip_runs: dict[str, int]

    async def check_tree(self, wt: Worktree, tree: str, head: str) -> CheckResult: ...
    async def parse_errors(self, root: Any, tip_tree: str, tree: str) -> dict[str, str]: ...
    def cached(self, tree: str) -> CheckResult | None: ...
    def remember(self, tree: str, result: CheckResult) -> None: ...
    def decided(self, verdict: GateVerdict, wt: Worktree) -> GateVerdict: ...


@dataclass(eq=False)
class Landing:
    """One worker waiting in the queue. ``outcome`` is set when a round decided it."""

    wt: Worktree
    head: str
    message: str
    env: dict[str, str]
    outcome: Decision | None = None
    # a check the round's holder asks this worker to run: (tree, event set when ``result`` is for it)
    want: anyio.Event = field(default_factory=anyio.Event)
    tree: str = ""
    got: anyio.Event = field(default_factory=anyio.Event)
    result: tuple[str, CheckResult | None] | None = None
    gone: bool = False


@dataclass
class Decision:
    """``landed`` (``sha`` on the branch), ``conflict`` (``merge`` against ``tip``), ``refused`` (``verdict``)."""

    kind: str
    tip: str
    sha: str | None = None
    merge: MergeTreeResult | None = None
    verdict: GateVerdict | None = None


@dataclass
class _Stacked:
    item: Landing
    parent: str
    parent_tree: str
    commit: str
    tree: str
    result: CheckResult | None = None


class LandingQueue:
    """The queue of one gate; :meth:`land` is what integration awaits."""

    def __init__(self, gate: _Gate, batch: int) -> None:
        self.gate = gate
        self.batch = max(1, batch)
        self.items: list[Landing] = []
        self.lane = anyio.Lock()
        self.rounds = 0

    async def land(
        self, session: Any, wt: Worktree, head: str, message: str, env: dict[str, str], urgent: bool = False
    ) -> Decision:
        """Queue ``head`` and wait for a round to decide it (this worker may hold rounds for others).
        ``urgent``: a retry after a resolved conflict or a fix goes first (it already paid for its round)."""
        item = Landing(wt, head, message, env)
        if urgent:
            self.items.insert(0, item)
        else:
            self.items.append(item)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve, item)
                while item.outcome is None:
                    async with self.lane:
                        if item.outcome is None:
                            await self._round(session)
                tg.cancel_scope.cancel()
        finally:
            item.gone = True
            if item in self.items:
                self.items.remove(item)
        return item.outcome

    async def _serve(self, item: Landing) -> None:
        """Run the checks a round asks of this worker, in its own worktree, until it leaves the queue."""
        try:
            while True:
                await item.want.wait()
                item.want = anyio.Event()
                tree, got = item.tree, item.got
                result = await self.gate.check_tree(item.wt, tree, item.head)
                item.result = (tree, result)
                got.set()
        finally:
            item.gone = True
            item.got.set()

    async def _ask(self, item: Landing, tree: str) -> CheckResult | None:
        """The check's result on ``tree``, run by ``item``'s worker; None if that worker left."""
        if item.gone:
            return None
        item.tree, item.got, item.result = tree, anyio.Event(), None
        item.want.set()
        await item.got.wait()
        if item.result is None or item.result[0] != tree:
            return None
        return item.result[1]

    async def _round(self, session: Any) -> None:
        """Stack, check, compare, land: one round, deciding a prefix of the queue (at least one landing).
        ``session``: the session's repository (``root`` and ``shared``, the shared branch)."""
        gate, shared, root = self.gate, session.shared, session.root
        self.rounds += 1
        if shared.tip is None or shared.tip_tree is None:
            await shared.read_tip(root)
        tip, tip_tree = shared.tip, shared.tip_tree
        assert tip is not None and tip_tree is not None
        stack: list[_Stacked] = []
        cur, cur_tree = tip, tip_tree
        for item in [i for i in self.items if i.outcome is None and not i.gone][: self.batch]:
            merge = await inproc.merge_tree(root, cur, item.head)
            if not merge.clean or merge.tree == cur_tree:
                if cur == tip:  # against the real tip: decided now
                    kind = "landed" if merge.clean else "conflict"
                    item.outcome = Decision(kind, tip, sha=tip if merge.clean else None, merge=merge)
                continue  # against a stacked commit: next round
            errors = await gate.parse_errors(root, cur_tree, merge.tree) if gate.parse else {}
            if errors:
                if cur == tip:  # else judged against a stacked commit that may not land: next round
                    names = ", ".join(list(errors)[:5])
                    verdict = GateVerdict(False, cur, cur_tree, merge.tree, parse_errors=errors)
                    verdict.reason = f"{len(errors)} changed file(s) no longer parse: {names}"
                    item.outcome = Decision("refused", cur, verdict=gate.decided(verdict, item.wt))
                continue
            commit = await inproc.new_commit(root, merge.tree, [cur], item.message, item.env)
            stack.append(_Stacked(item, cur, cur_tree, commit, merge.tree))
            cur, cur_tree = commit, merge.tree
        if not stack:
            return
        async with anyio.create_task_group() as tg:
            for s in stack:
                s.result = gate.cached(s.tree)
                if s.result is None:
                    tg.start_soon(self._check_into, s)
        accepted: list[_Stacked] = []
        previous: CheckResult | None = None
        ran_tip = False
        for s in stack:
            if s.result is None:
                break  # its worker left: it and what is stacked on it wait for the next round
            if s.result.ok or s.result.refused:
                why, new = "", []
            else:
                if previous is None:
                    previous = gate.cached(tip_tree)
                    if previous is None:  # the tip's result, once per tip (a landed tree's is cached)
                        previous = await self._ask(stack[0].item, tip_tree)
                        if previous is None:
                            break
                        gate.tip_runs[tip_tree] = gate.tip_runs.get(tip_tree, 0) + 1
                        gate.remember(tip_tree, previous)
                        ran_tip = True
                new, why = compare(previous, s.result)
            verdict = GateVerdict(not why, s.parent, s.parent_tree, s.tree, check=s.result)
            if s is stack[0] and previous is not None:  # compared with the real tip's result
                verdict.tip_check, verdict.tip_check_ran = previous, ran_tip
            verdict.new_failures = new
            verdict.duration_ms = s.result.duration_ms
            verdict.reason = why or ("the check passes" if s.result.ok else "no new failure")
            gate.decided(verdict, s.item.wt)
            if why:
                s.item.outcome = Decision("refused", s.parent, verdict=verdict)
                break
            accepted.append(s)
            previous = s.result
        if not accepted:
            return
        last = accepted[-1]
        with anyio.CancelScope(shield=True):
            async with shared.section(urgent=True):
                moved = await inproc.update_ref(root, shared.ref, last.commit, tip)
                if moved:
                    shared.tip, shared.tip_tree = last.commit, last.tree
        if not moved:  # another process moved the branch: nothing landed, every decision is void
            await shared.read_tip(root)
            for s in stack:
                s.item.outcome = None
            return
        for s in accepted:
            s.item.outcome = Decision("landed", s.parent, sha=s.commit)

    async def _check_into(self, s: _Stacked) -> None:
        s.result = await self._ask(s.item, s.tree)
        if s.result is not None and not s.result.refused:
            self.gate.remember(s.tree, s.result)
