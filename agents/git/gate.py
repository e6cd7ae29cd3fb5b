"""The landing gate: the shared branch only moves to a tree that introduces no new failure and still parses.

For one landing: merge the task onto the current tip (``merge-tree``, outside any lock), parse every changed
Python/JSON/TOML/YAML file of the merged tree, and run the check on it in the task's own worktree, sandboxed.
When the merged tree's check passes, that is the verdict; when it fails, the tip's result (computed once per
tip tree and cached, shared by every worker that needs it) says whether a failing test is new. Runner-named
failing test ids are compared where both runs have them, else the exit status.

Why the verdict is tied to a tree: a test suite's result on ``tip + task`` cannot be derived from its results on
``tip`` and on ``old tip + task``; two changes to different files that each pass can fail together (a function
changed in one file, its caller in another). So the CAS lands a request only if the tree it would write is the
very tree that passed (:class:`GateToken`); if the tip moved in between, the request goes back and the new merged
tree is gated again (its tip's result is cached, so that costs one check run). The one provable exception: with
no check command, a task none of whose changed paths is parseable passes on any tip, because a three-way merge
changes relative to the tip only paths the task changed. Details in docs/design.md.

A refusal goes back to the same worker like a conflict: its worktree holds the merged tree, it gets what broke and
the output's tail, and its fix is committed on the task branch (a merge commit of its head and the tip when the
tip brought changes). After the configured number of rounds the task fails; its branch keeps the work.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..tools.check import CheckResult, CheckSpec, detect, python_has_pytest, run_check, spec_for
from ..tools.parse_gate import parse_problems, parseable
from ..tools.project_env import project_python
from . import inproc
from .gate_queue import LandingQueue
from .run import GitError, cat_blobs, git
from .verdict import GateToken, GateVerdict, compare

__all__ = ["Gate", "GateToken", "GateVerdict", "Refusal", "admit", "choose_check", "compare", "hand_back"]

if TYPE_CHECKING:
    from .worktree import Worktree


class SessionRepo(Protocol):
    """What the gate needs of the session's repository (workspace's ``SessionRepo`` is one): the shared
    branch. A protocol, so the gate does not import workspace (which imports integration, which uses the gate)."""

    shared: Any

    async def scrub(self, wt: Worktree) -> list[str]: ...


TIP_CACHE = 256  # check results kept by tree id (a merged tree that lands is the next tip)
DETECT_READ = (
    "pyproject.toml",
    "setup.cfg",
    "tox.ini",
    "package.json",
    "Makefile",
    "makefile",
    "GNUmakefile",
)


@dataclass
class Refusal:
    """What a worker gets back when the gate refused its work; its worktree holds the merged tree."""

    task_id: str
    agent_id: str
    worktree: Path
    tip: str
    head: str
    round: int
    verdict: GateVerdict

    def message(self) -> str:
        return (
            "REFUSED: your work was not landed: the landing gate found that it makes the shared branch worse.\n"
            f"{self.verdict.what_broke()}\n\n"
            "Your worktree now holds your change merged with the shared branch. Fix what broke (keep the"
            " tests passing, keep every file parseable), then finish again."
        )


OnRefusal = Callable[[Refusal], Awaitable[bool]]


class Gate:
    """One session's gate: its check, a bound on check runs at once, the tip cache and the running totals.

    Args:
        spec: the check (``CheckSpec()``: parse gate only).
        sandbox: the sandbox settings check runs use.
        parallel: check runs at once (a semaphore; more wait).
        timeout: seconds per check run.
        parse: run the parse gate.
        batch: landings a round of the queue stacks and checks together (with a check only).
        on_verdict: called with each :class:`GateVerdict` and the task id (the engine records and shows it).
    """

    def __init__(
        self,
        spec: CheckSpec,
        sandbox: Any = None,
        *,
        parallel: int = 2,
        timeout: float = 600.0,
        parse: bool = True,
        batch: int = 4,
        secret_env_names: Iterable[str] = (),
        on_verdict: Callable[[GateVerdict, Worktree], None] | None = None,
    ) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self.timeout = timeout
        self.parse = parse
        self.secret_env_names = tuple(secret_env_names)
        self.on_verdict = on_verdict
        self.slots = anyio.Semaphore(parallel)
        self._tips: dict[str, CheckResult] = {}
        self._pending: dict[str, anyio.Event] = {}
        self.tip_runs: dict[str, int] = {}
        self.check_runs = 0
        self.refusals = 0
        self.passes = 0
        self.total_ms = 0.0  # wall time spent gating, summed over landings
        self.check_ms = 0.0  # of which running the check
        self.queue = LandingQueue(self, batch) if spec.enabled else None

    # -- the decision ----------------------------------------------------------------------------------

    async def evaluate(self, session: SessionRepo, wt: Worktree, head: str) -> GateVerdict:
        """Gate landing ``head`` onto the shared tip as it is now. Never raises for a refusal."""
        started = time.perf_counter()
        shared = session.shared
        if shared.tip is None or shared.tip_tree is None:
            await shared.read_tip(session.root)
        tip, tip_tree = shared.tip, shared.tip_tree
        assert tip is not None and tip_tree is not None
        verdict = await self._evaluate(session, wt, head, tip, tip_tree)
        verdict.duration_ms = (time.perf_counter() - started) * 1000
        self.total_ms += verdict.duration_ms
        return self.decided(verdict, wt)

    def decided(self, verdict: GateVerdict, wt: Worktree) -> GateVerdict:
        """Count a decision and hand it to ``on_verdict``."""
        if verdict.ok:
            self.passes += 1
        elif not verdict.conflict:
            self.refusals += 1
        if self.on_verdict is not None:
            self.on_verdict(verdict, wt)
        return verdict

    async def check_tree(self, wt: Worktree, tree: str, head: str) -> CheckResult:
        """Run the check on ``tree`` in ``wt`` (then back to ``head``); only ``wt``'s own worker calls this."""
        async with self._checkout(wt, tree, head):
            result = await self._run(wt.path)
        result.tree = tree
        return result

    async def _evaluate(
        self, session: SessionRepo, wt: Worktree, head: str, tip: str, tip_tree: str
    ) -> GateVerdict:
        root = session.root
        if not self.spec.enabled:
            if not self.parse:
                return GateVerdict(True, tip, tip_tree, any_tip=True, reason="no gate")
            paths = wt.changed if wt.head == head else None
            if paths is None:
                diff = await git("diff", "--name-only", "-z", f"{tip}...{head}", cwd=root, background=True)
                paths = {p for p in diff.out.split("\0") if p}
            if not any(parseable(p) for p in paths):
                return GateVerdict(True, tip, tip_tree, any_tip=True, reason="nothing to parse")
        merge = await inproc.merge_tree(root, tip, head)
        if not merge.clean:
            return GateVerdict(False, tip, tip_tree, merge.tree, "conflict", conflict=True)
        verdict = GateVerdict(True, tip, tip_tree, merge.tree)
        if merge.tree == tip_tree:
            verdict.reason = "already on the branch"
            return verdict
        if self.parse:
            verdict.parse_errors = await self.parse_errors(root, tip_tree, merge.tree)
            if verdict.parse_errors:
                verdict.ok = False
                names = ", ".join(list(verdict.parse_errors)[:5])
                verdict.reason = f"{len(verdict.parse_errors)} changed file(s) no longer parse: {names}"
                return verdict
        if not self.spec.enabled:
            verdict.reason = "parses"
            return verdict
        verdict.check = self.cached(merge.tree)
        if verdict.check is None:
            async with self._checkout(wt, merge.tree, head):
                verdict.check = await self._run(wt.path)
            if not verdict.check.refused:
                self.remember(merge.tree, verdict.check)  # if it lands, this is the next tip's result
        if verdict.check.ok or verdict.check.refused:
            verdict.reason = "the check passes" if verdict.check.ok else "the check could not run"
            return verdict
        verdict.tip_check, verdict.tip_check_ran = await self.tip_result(tip_tree, wt, head)
        verdict.new_failures, why = compare(verdict.tip_check, verdict.check)
        verdict.ok = not why
        verdict.reason = why or "no new failure (the same tests fail on the tip)"
        return verdict

    async def parse_errors(self, root: Path, tip_tree: str, tree: str) -> dict[str, str]:
        """Changed parseable files of ``tree`` that do not parse, unless they did not parse on the tip either."""
        diff = await git("diff-tree", "-r", "-z", "--no-renames", tip_tree, tree, cwd=root)
        fields = diff.out.split("\0")
        wanted: dict[str, str] = {}
        for meta, path in zip(fields[::2], fields[1::2], strict=False):
            parts = meta.split()
            if len(parts) >= 5 and parts[4] != "D" and parts[1] != "120000" and parseable(path):
                wanted[path] = parts[3]
        if not wanted:
            return {}
        blobs = await cat_blobs(root, wanted.values())
        texts = {p: blobs.get(oid) for p, oid in wanted.items()}
        problems = await parse_problems({p: t for p, t in texts.items() if t is not None})
        if not problems:
            return {}
        before = await cat_blobs(root, [f"{tip_tree}:{p}" for p in problems])
        old = {p: before.get(f"{tip_tree}:{p}") for p in problems}
        old_problems = await parse_problems({p: t for p, t in old.items() if t is not None})
        return {p: why for p, why in problems.items() if old.get(p) is None or p not in old_problems}

    # -- running the check -----------------------------------------------------------------------------

    async def _run(self, folder: Path) -> CheckResult:
        async with self.slots:
            result = await run_check(
                folder,
                self.spec,
                self.sandbox,
                timeout=self.timeout,
                extra_secret_names=self.secret_env_names,
            )
        self.check_runs += 1
        self.check_ms += result.duration_ms
        return result

    async def tip_result(self, tip_tree: str, wt: Worktree, head: str) -> tuple[CheckResult, bool]:
        """The check's result on ``tip_tree``: cached, else run once (in ``wt``) while others wait for it."""
        while True:
            if (cached := self._tips.get(tip_tree)) is not None:
                return cached, False
            pending = self._pending.get(tip_tree)
            if pending is None:
                break
            await pending.wait()  # if that run was cancelled, the loop runs it here
        event = self._pending[tip_tree] = anyio.Event()
        try:
            async with self._checkout(wt, tip_tree, head):
                result = await self._run(wt.path)
            result.tree = tip_tree
            if not result.refused:
                self.remember(tip_tree, result)
            self.tip_runs[tip_tree] = self.tip_runs.get(tip_tree, 0) + 1
        finally:
            del self._pending[tip_tree]
            event.set()
        return result, True

    def remember(self, tree: str, result: CheckResult) -> None:
        self._tips[tree] = result
        while len(self._tips) > TIP_CACHE:
            self._tips.pop(next(iter(self._tips)))

    def cached(self, tree: str) -> CheckResult | None:
        return self._tips.get(tree)

    @asynccontextmanager
    async def _checkout(self, wt: Worktree, tree: str, head: str):
        """``tree`` in the task's worktree for one check run; the worker's own commit back afterwards (what
        the check left behind that git does not ignore is removed: it must not end up in a later commit)."""
        await git("read-tree", "-u", "--reset", tree, cwd=wt.path)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await git("read-tree", "-u", "--reset", head, cwd=wt.path, check=False)
                await git("clean", "-fdq", cwd=wt.path, check=False, background=True)


async def hand_back(
    session: SessionRepo,
    wt: Worktree,
    verdict: GateVerdict,
    head: str,
    round_no: int,
    on_refusal: OnRefusal,
) -> str | None:
    """Give the refusal to the worker with the merged tree in its worktree; its fix committed, or None."""
    head_tree = (await git("rev-parse", f"{head}^{{tree}}", cwd=wt.path)).out.strip()
    merged = verdict.tree or head_tree
    if merged != head_tree:
        await git("read-tree", "-u", "--reset", merged, cwd=wt.path)
    refusal = Refusal(wt.task_id, wt.agent_id, wt.path, verdict.tip, head, round_no, verdict)
    fixed = False
    try:
        fixed = await on_refusal(refusal)
    except Exception as exc:  # the worker broke while fixing: the task fails, the work stays
        raise GitError(f"fixing the gate's refusal raised {exc!r}"[:300]) from exc
    finally:
        if not fixed:
            with anyio.CancelScope(shield=True):
                await git("read-tree", "-u", "--reset", head, cwd=wt.path, check=False)
    if not fixed:
        return None
    with anyio.CancelScope(shield=True):
        await session.scrub(wt)  # no nested repository for formicary's git to read (see tools/nested.py)
        await git("add", "-A", cwd=wt.path)
        wt.changed = None  # may merge the tip: what the task changed is git's to say now
        tree = (await git("write-tree", cwd=wt.path)).out.strip()
        if tree == merged:  # it changed nothing: the refusal stands
            await git("read-tree", "-u", "--reset", head, cwd=wt.path, check=False)
            return None
        parents = ["-p", head] + (["-p", verdict.tip] if merged != head_tree else [])
        msg = f"Fix for the landing gate in task {wt.task_id} (round {round_no})"
        new = (
            await git("commit-tree", tree, *parents, "-m", msg, cwd=wt.path, env=wt.identity.env())
        ).out.strip()
        await git("update-ref", "HEAD", new, head, cwd=wt.path)
    return new


# -- which check ---------------------------------------------------------------------------------------------


async def choose_check(
    root: Path, tip: str, configured: str, source: str = "config", junit: str = ""
) -> CheckSpec:
    """The session's check: ``configured`` (``none`` turns it off), else detected from the tip's files."""
    if configured.strip():
        return spec_for(configured, source, junit)
    listing = await git("ls-tree", "-r", "--name-only", "-z", tip, cwd=root)
    paths = [p for p in listing.out.split("\0") if p]
    present = [name for name in DETECT_READ if name in set(paths)]
    texts = await cat_blobs(root, [f"{tip}:{name}" for name in present])
    read = {name: texts.get(f"{tip}:{name}") for name in present}
    python = project_python(root)  # the project's own virtualenv, when its checkout has one
    spec = await anyio.to_thread.run_sync(lambda: detect(paths, read.get, lambda: python_has_pytest(python)))
    return spec if spec.enabled else CheckSpec("", "none", "detected")


async def admit(
    session: SessionRepo,
    wt: Worktree,
    head: str,
    result: Any,
    gate: Gate,
    on_refusal: OnRefusal | None,
    max_rounds: int,
    record: Callable[..., None],
) -> tuple[str, Any]:
    """The gate's part of one integration attempt (``result``: the :class:`.integration.IntegrationResult`).

    Returns ``("fixed", new head)`` after a refusal the worker fixed (gate that next), ``("decided", decision)``
    when the landing queue decided (a :class:`.gate_queue.Decision`: landed, or a conflict with the tip), or ``("token", token)`` for the CAS
    (None for a conflict the CAS attempt finds and hands back). Raises GitError when the task must fail.
    """
    t0 = time.perf_counter()
    decision = None
    try:
        if gate.queue is not None:
            env = wt.identity.env()
            message = wt.message or f"Task {wt.task_id}\n\nFormicary-Task: {wt.task_id}\n"
            urgent = result.conflicts > 0 or result.refusals > 0
            decision = await gate.queue.land(session, wt, head, message, env, urgent=urgent)
            verdict = decision.verdict
        else:
            verdict = await gate.evaluate(session, wt, head)
    except GitError:
        raise
    except Exception as exc:
        raise GitError(f"the landing gate failed: {exc!r}"[:300]) from exc
    finally:
        spent = (time.perf_counter() - t0) * 1000
        result.gate_ms += spent
        if gate.queue is not None:  # evaluate() counts its own time
            gate.total_ms += spent
    if decision is not None and decision.kind != "refused":
        return "decided", decision  # landed, or a conflict with the tip
    assert verdict is not None
    if verdict.ok or verdict.conflict:
        return "token", verdict.token()
    record(result.attempts, "refused", verdict.tip, None, sorted(verdict.parse_errors), t0)
    if on_refusal is None or result.refusals >= max_rounds:
        rounds = f" after {result.refusals} fix round(s)" if result.refusals else ""
        raise GitError(f"the landing gate refused it{rounds}: {verdict.reason}")
    result.refusals += 1
    new_head = await hand_back(session, wt, verdict, head, result.refusals, on_refusal)
    if new_head is None:
        raise GitError(f"the landing gate refused it and the worker did not fix it: {verdict.reason}")
    return "fixed", new_head
