"""Landing a worker's commit on the shared session branch without a lock any agent waits on.

One attempt is mechanical: a merge of trees, a commit object and an atomic compare-and-swap of the branch, done
in-process (:mod:`.inproc`, no git process) unless the merge needs git's judgement (``merge-tree --write-tree``
then names the conflicts). The shared branch stays linear: each task lands as ONE commit whose sole parent is
the tip it was merged onto, whose tree is the merge and whose author is the worker, so review reads one commit
per task. The worker's own history stays on its task branch.

Why a short critical section: racers looping merge + CAS with nothing between them redo each other's work
(50 racers: 1.3-6 commits/s, ~800 retries); the same attempts serialized by an in-process lock around the
mechanical part only run ~20x faster with no retries. The lock is held for that work and nothing else;
the CAS stays under it because another process (a second formicary, the operator) may move the branch.
Because the lock holder is the only in-process writer, the tip it wrote is remembered and no ``rev-parse``
is needed per attempt. Whoever gets the lock lands every request queued by then (merge + commit each onto the
advancing tip, one CAS for the batch), so under load the ``update-ref`` and the lock hand-off are shared.
A request the batch cannot land in-process is dropped from it (:mod:`.landing`) and the rest land: git's
``merge-tree`` for it runs outside the lock, then a conflict goes back to its worker and a clean merge lands
next time with git's tree. With hot paths, the turn is checked on the paths the in-process merge changes.
A retry after a resolved conflict skips the queue of first attempts (``SharedBranch.section``).

A conflict is handed back to the SAME worker outside the lock (:mod:`.handback`): its worktree gets the merged
tree with conflict markers (``read-tree -u --reset``), the callback edits files and says whether it resolved
them, and a merge commit of (worker head, tip) is made on the task branch; the next attempt merges from that
tip, so only what landed since can conflict again. Past ``max_conflict_rounds`` the task fails and its branch keeps the work.
A task that lost a round gets the next turn on the paths it conflicted on (:mod:`.hotpaths`): other landings
that would change them are held until it lands (bounded), so a hot file does not starve it.

Why no ``--merge-base``: git 2.39 lacks it, and it is not needed: the task branch always descends from an
earlier tip of the shared branch (or merges one in), so the merge base git computes is that tip.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from . import inproc
from .gate import admit
from .handback import Conflict, ConflictFile, OnConflict, hand_back
from .hotpaths import HotPaths
from .landing import Ask, land_batch
from .run import GitError, MergeTreeResult, git
from .worktree import Worktree

__all__ = ["Conflict", "ConflictFile", "IntegrationResult", "LandingRepo", "SharedBranch", "integrate"]


class LandingRepo(Protocol):
    """What landing needs of the session's repository (workspace's ``SessionRepo`` is one)."""

    root: Path
    session_id: str
    shared: SharedBranch

    async def scrub(self, wt: Worktree) -> list[str]: ...


if TYPE_CHECKING:
    from .gate import Gate, GateToken, OnRefusal

LOG = "formicary: integrate"  # the branch's reflog message for a landing
MAX_BATCH = 32  # requests landed per critical section: bounds how long the others in it wait
PASSED_MAX = 8192  # tips remembered as the branch's ancestors (a task older than that merges the slow way)
MAX_MOVES = 200  # tip moved under us this many times in one integration: something else is hammering the ref


@dataclass
class IntegrationResult:
    """How one task's integration ended; ``sha`` is the commit on the shared branch when it landed."""

    status: Literal["integrated", "already", "failed", "empty"]  # already: the tip had its change (no commit)
    branch: str
    head: str | None
    sha: str | None = None
    attempts: int = 0
    retries: int = 0  # the tip moved: compare-and-swap lost, or git merged it outside the critical section
    conflicts: int = 0  # rounds handed back to the worker
    conflict_paths: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    error: str | None = None
    refusals: int = 0  # landing-gate rounds handed back to the worker
    regates: int = 0  # the tip moved after the gate passed: gated again
    gate_ms: float = 0.0


@dataclass
class SharedBranch:
    """The session branch: its ref, the tip this process last saw or wrote, and the short critical section.

    ``serialize=False`` drops the lock and the remembered tip: the naive optimistic loop, kept only as the
    benchmark's baseline.
    """

    ref: str
    tip: str | None = None
    tip_tree: str | None = None
    serialize: bool = True
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    gate: anyio.Lock = field(default_factory=anyio.Lock)
    pending: list[_Request] = field(default_factory=list)
    hot: HotPaths = field(default_factory=HotPaths)
    passed: dict[str, None] = field(default_factory=dict)
    """Tips this process saw the branch at and moved it from, oldest first: every one an ancestor of ``tip``
    (a landing's merge needs no merge-base walk from a task that began at one); reset when the branch moved
    under us, kept to the newest :data:`PASSED_MAX`."""

    def __post_init__(self) -> None:
        if self.tip:
            self.passed[self.tip] = None

    async def read_tip(self, cwd: Path) -> str:
        res = await git("rev-parse", self.ref, f"{self.ref}^{{tree}}", cwd=cwd)
        self.tip, self.tip_tree = res.out.split()
        self.passed = {self.tip: None}
        return self.tip

    def moved_to(self, tips: list[str], tree: str) -> None:
        """Our compare-and-swap moved the branch through ``tips`` (in order) to the last one, of ``tree``."""
        self.tip, self.tip_tree = tips[-1], tree
        self.passed.update(dict.fromkeys(tips))
        if len(self.passed) > PASSED_MAX:
            self.passed = dict.fromkeys(list(self.passed)[-PASSED_MAX // 2 :])

    @asynccontextmanager
    async def section(self, urgent: bool = False) -> AsyncIterator[None]:
        """The critical section. A first attempt queues at ``gate`` so at most one of them waits at ``lock``;
        a retry after a resolved conflict (``urgent``) waits at ``lock`` directly, so it passes every queued
        first attempt: the worker already paid for a resolution and should not lose its window in a queue."""
        if not self.serialize:
            yield
        elif urgent:
            async with self.lock:
                yield
        else:
            async with self.gate, self.lock:
                yield


@dataclass
class _Attempt:
    result: Literal["landed", "moved", "conflict", "held", "regate", "slow", "merged"]
    old_tip: str
    new_tip: str | None
    merge: MergeTreeResult
    touched: list[str] = field(default_factory=list)  # held: the paths it would change


@dataclass(eq=False)
class _Request:
    """One attempt to land ``head``, queued for whoever holds the critical section next."""

    head: str
    message: str
    env: dict[str, str]
    urgent: bool
    task_id: str = ""
    gated: bool = False  # the session has a landing gate: only ``token``'s tree may land
    token: GateToken | None = None
    premerged: tuple[str, str] | None = None  # (tip, tree): git merged ``head`` onto that tip already
    outcome: _Attempt | GitError | None = None
    taken: bool = False


async def _submit(shared: SharedBranch, root: Path, req: _Request) -> _Attempt:
    """Queue ``req`` and enter the critical section; the holder lands every queued request in one batch.

    Combining: the first waiter to get the lock merges and commits ALL pending requests one after another
    onto the advancing tip, then moves the branch once (one CAS for the batch). The others find their
    outcome set when their turn comes and leave at once. Under load this saves an ``update-ref`` and a lock
    hand-off per commit; alone, a batch is one request and costs what a single attempt does.
    """
    if not shared.serialize:  # the naive baseline: every racer for itself
        await _land_batch(shared, root, [req])
    else:
        shared.pending.append(req)
        try:
            async with shared.section(urgent=req.urgent):
                if req.outcome is None:
                    ordered = sorted(shared.pending, key=lambda r: not r.urgent)
                    batch = (
                        ordered[:MAX_BATCH]
                        if req in ordered[:MAX_BATCH]
                        else [req, *ordered[: MAX_BATCH - 1]]
                    )
                    shared.pending[:] = [r for r in shared.pending if r not in batch]
                    for r in batch:
                        r.taken = True
                    with anyio.CancelScope(shield=True):  # never leave a half-done batch behind
                        await _land_batch(shared, root, batch)
        finally:
            if not req.taken and req in shared.pending:  # cancelled while queued: withdraw
                shared.pending.remove(req)
    if isinstance(req.outcome, GitError):
        raise req.outcome
    assert req.outcome is not None
    return req.outcome


async def _land_batch(shared: SharedBranch, root: Path, batch: list[_Request]) -> None:
    """Merge + commit per request onto the advancing tip, then one CAS: the mechanical part, in one thread hop
    (:func:`.landing.land_batch`). What the batch cannot land is dropped from it; the rest lands."""
    if shared.tip is None or shared.tip_tree is None or not shared.serialize:
        await shared.read_tip(root)
    start, tree = shared.tip, shared.tip_tree
    assert start is not None and tree is not None
    asks = [Ask(r.head, r.message, *_author(r.env), _accepts(r), r.task_id, r.premerged) for r in batch]
    owners = shared.hot.owners() if shared.hot else None
    try:
        done, moved = await inproc.in_landing_thread(
            land_batch, root, shared.ref, start, tree, asks, LOG, dict(shared.passed), owners
        )
    except Exception as exc:  # libgit2 failed and nothing moved: alone, each request meets its own error
        if len(batch) > 1:
            for req in batch:
                await _land_batch(shared, root, [req])
        else:
            batch[0].outcome = GitError(f"landing failed: {exc!r}"[:300])
        return
    if moved is False:
        await _lost(shared, root, batch, start)
        return
    for req, d in zip(batch, done, strict=True):
        merge = MergeTreeResult(tree=d.tree, clean=True)
        kind = {"landed": "landed", "refused": "regate", "held": "held", "slow": "slow"}[d.result]
        req.outcome = _Attempt(kind, d.onto, d.tip if kind == "landed" else None, merge, d.touched)  # type: ignore[arg-type]
        if kind == "landed":
            tree = d.tree
    if moved:
        shared.moved_to([d.tip for d in done if d.result == "landed" and d.tip != d.onto], tree)


async def _merge_outside(
    root: Path, shared: SharedBranch, att: _Attempt, head: str, task_id: str
) -> _Attempt:
    """A request the batch left to git (``slow``): git merges it onto the tip the batch tried, outside the
    critical section. ``conflict`` goes back to the worker, ``held`` waits for its turn, ``merged`` lands
    next time with git's tree (:class:`.landing.Ask`'s ``premerged``)."""
    merge = await inproc.merge_tree(root, att.old_tip, head)
    if shared.hot:
        touched = await _touched(root, att.old_tip, merge)
        if shared.hot.blocked_until(task_id, touched) is not None:
            return _Attempt("held", att.old_tip, None, merge, touched)
    return _Attempt("merged" if merge.clean else "conflict", att.old_tip, None, merge)


async def _lost(shared: SharedBranch, root: Path, batch: list[_Request], start: str) -> None:
    """The branch moved under us (another process): nothing of this batch landed, and conflicts found against
    its unlanded commits are void: every request retries from the real tip."""
    actual = None if not shared.serialize else await shared.read_tip(root)
    for req in batch:
        req.outcome = _Attempt("moved", start, actual, MergeTreeResult(tree="", clean=True))


def _author(env: dict[str, str]) -> tuple[str, str]:
    return env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]


def _accepts(req: _Request) -> Any:
    """Whether ``req``'s merged tree may land on a tip of ``tree``: with a gate, only the tree it passed."""
    return lambda merged, tree: not req.gated or merged == tree or _passed(req.token, merged)


async def _touched(root: Path, tree: str | None, merge: MergeTreeResult) -> list[str]:
    """The paths landing ``merge`` would change on a tip of ``tree`` (conflicted ones included)."""
    res = await git("diff-tree", "-r", "--name-only", "-z", tree or "", merge.tree, cwd=root, check=False)
    return [p for p in res.out.split("\0") if p] + list(merge.paths)


def _passed(token: GateToken | None, tree: str) -> bool:
    return token is not None and (token.any_tip or token.tree == tree)


async def integrate(
    session: LandingRepo,
    wt: Worktree,
    on_conflict: OnConflict | None = None,
    *,
    writer: Any = None,
    max_conflict_rounds: int = 3,
    gate: Gate | None = None,
    on_refusal: OnRefusal | None = None,
    max_gate_rounds: int = 2,
    hold: str | None = None,
) -> IntegrationResult:
    """Land ``wt``'s committed work on the session branch as one commit; never raises for git failures.

    Args:
        session: the opened session repository (owns the shared branch state).
        wt: the task's worktree; its committed head is what lands (uncommitted edits do not).
        on_conflict: awaited with a :class:`Conflict` (outside any lock); True when the worker resolved it.
        writer: a :class:`formicary.store.writer.Writer` recording every attempt and the outcome, or None.
        max_conflict_rounds: conflicts handed back before the task fails (its branch keeps the work).
        gate: the landing gate (:mod:`.gate`): only a merged tree it passed lands.
        on_refusal: awaited with a :class:`.gate.Refusal`; True when the worker fixed its work (None: a
            refusal fails the task at once, e.g. for a worker out of steps).
        max_gate_rounds: refusals handed back before the task fails (its branch keeps the work).
        hold: a reason not to land it at all: the commit is recorded as failed with it, its branch kept.

    Returns:
        ``integrated`` (``sha`` on the branch), ``failed`` (``error`` says why; the task branch is kept) or
        ``empty`` (nothing was committed).
    """
    from formicary.store.db import new_id, now

    started, created_at = time.perf_counter(), now()
    result = IntegrationResult(status="failed", branch=wt.branch, head=wt.head)
    shared = session.shared

    def record(
        attempt: int, kind: str, old: str | None, new: str | None, paths: list[str], t0: float
    ) -> None:
        if writer is not None:
            writer.insert(
                "integrations",
                {
                    "id": new_id(),
                    "session_id": session.session_id,
                    "task_id": wt.task_id,
                    "agent_id": wt.agent_id,
                    "attempt": attempt,
                    "result": kind,
                    "old_tip": old,
                    "new_tip": new,
                    "conflict_paths": paths or None,
                    "duration_ms": (time.perf_counter() - t0) * 1000,
                    "created_at": now(),
                },
            )

    try:
        head = wt.head
        if head is None:  # the agent may have committed by itself
            head = (await git("rev-parse", "HEAD", cwd=wt.path, git_dir=wt.git_dir)).out.strip()
            wt.changed = None  # committed behind our back: its paths are unknown
            if head == wt.base:
                result.status = "empty"
                return result
            wt.head = result.head = head
        if hold:
            raise GitError(hold)
        message = wt.message or f"Task {wt.task_id}\n\nFormicary-Task: {wt.task_id}\n"
        env = wt.identity.env()
        premerged: tuple[str, str] | None = None  # git's merge of ``head`` onto an earlier tip, made outside
        while True:
            result.attempts += 1
            t0 = time.perf_counter()
            token = att = None
            if gate is not None:  # see gate.admit: a fix to gate again, a decision, or a token for the CAS
                kind, value = await admit(
                    session, wt, head, result, gate, on_refusal, max_gate_rounds, record
                )
                if kind == "fixed":
                    head = wt.head = result.head = value
                    premerged = None
                    continue
                if kind == "decided":  # the landing queue landed it, or found a conflict with the tip
                    merge = value.merge or MergeTreeResult(tree="", clean=True)
                    att = _Attempt(
                        "landed" if value.kind == "landed" else "conflict", value.tip, value.sha, merge
                    )
                else:
                    token = value
            if att is None:
                urgent = result.conflicts > 0 or result.regates > 0 or premerged is not None
                req = _Request(
                    head, message, env, urgent=urgent, task_id=wt.task_id, gated=gate is not None, token=token
                )
                req.premerged = premerged
                att = await _submit(shared, session.root, req)
                if att.result == "slow":  # git must merge it: outside the critical section
                    att = await _merge_outside(session.root, shared, att, head, wt.task_id)
            paths = att.merge.paths
            record(result.attempts, att.result, att.old_tip, att.new_tip, paths, t0)
            if att.result == "held":  # another task has the turn on a path this changes: wait for ours
                while (until := shared.hot.blocked_until(wt.task_id, att.touched)) is not None:
                    await shared.hot.wait(until)
                continue
            if att.result == "merged":  # lands next time with git's tree, ahead of first attempts
                premerged = (att.old_tip, att.merge.tree)
                result.retries += 1  # the tip moved on its paths: bounded like a lost CAS
                if result.retries > MAX_MOVES:
                    raise GitError(f"{shared.ref} kept moving: gave up after {MAX_MOVES} retries")
                continue
            if att.result == "landed" and att.new_tip == att.old_tip:  # its change was on the tip already
                result.status = "already"
                return result
            if att.result == "landed":
                result.status, result.sha = "integrated", att.new_tip
                wt.status, wt.integrated_sha = "integrated", att.new_tip
                return result
            if att.result == "regate":
                result.regates += 1
                if result.regates > MAX_MOVES:
                    raise GitError(f"{shared.ref} kept moving while the gate ran: gave up after {MAX_MOVES}")
                continue
            if att.result == "moved":
                result.retries += 1
                if result.retries > MAX_MOVES:
                    raise GitError(f"{shared.ref} kept moving: gave up after {MAX_MOVES} retries")
                if att.new_tip == att.old_tip:  # the ref is locked by someone else: back off a little
                    await anyio.sleep(min(0.005 * result.retries, 0.2))
                continue
            result.conflict_paths = sorted({*result.conflict_paths, *paths})
            if result.conflicts >= max_conflict_rounds:
                raise GitError(
                    f"conflict in {', '.join(paths[:5])} still unresolved after {max_conflict_rounds} round(s)"
                )
            result.conflicts += 1
            shared.hot.claim(wt.task_id, paths)  # the next landing on these paths is this task's
            try:
                new_head = await hand_back(
                    session, wt, att.old_tip, att.merge, head, result.conflicts, on_conflict
                )
            except GitError:
                raise
            except Exception as exc:  # the worker broke while resolving: the task fails, the work stays
                raise GitError(f"conflict resolution raised {exc!r}"[:300]) from exc
            if new_head is None:
                raise GitError(f"conflict in {', '.join(paths[:5])} not resolved by the worker")
            head = wt.head = result.head = new_head
            premerged = None
    except GitError as exc:
        result.status, result.error = "failed", str(exc)
        wt.status = "failed"
        record(result.attempts, "failed", shared.tip, None, [], started)
    finally:
        shared.hot.release(wt.task_id)
        if result.status == "failed" and result.error is None:
            result.error = "interrupted"  # cancelled mid-integration; the task branch keeps the work
        result.duration_ms = (time.perf_counter() - started) * 1000
        if writer is not None and result.status != "empty" and result.head:
            _record_commit(writer, session, wt, result, created_at, now)
    return result


def _record_commit(
    writer: Any, session: LandingRepo, wt: Worktree, result: IntegrationResult, created_at: str, now: Any
) -> None:
    from formicary.store.db import new_id

    landed = result.status == "integrated"
    writer.insert(
        "commits",
        {
            "id": new_id(),
            "session_id": session.session_id,
            "task_id": wt.task_id,
            "agent_id": wt.agent_id,
            "sha": result.head,
            "integrated_sha": result.sha,
            "branch": wt.branch,
            "status": "integrated" if landed else "already" if result.status == "already" else "failed",
            "retries": result.retries,
            "conflicts": result.conflicts,
            "duration_ms": result.duration_ms,
            "error": result.error,
            "created_at": created_at,
            "integrated_at": now() if landed else None,
        },
    )
