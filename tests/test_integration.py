"""Integration onto the shared branch on real temporary repositories: concurrency, conflicts, the record."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from formicary.agents.git.hotpaths import HotPaths
from formicary.agents.git.integration import Conflict
from formicary.agents.git.run import parse_merge_tree
from formicary.agents.git.workspace import SessionRepo, Worktree
from formicary.store.writer import Writer
from tests.gitrepo import git, make_repo
from tests.test_workspace import operator_state


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", files={"shared.txt": "top\nmiddle\nbottom\n"}, n_files=20)


async def open_session(repo: Path, tmp_path: Path) -> SessionRepo:
    return await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wt" / "s1")


async def keep_both(conflict: Conflict) -> bool:
    """A scripted resolution: keep every line of both sides, drop the markers."""
    for f in conflict.files:
        target = conflict.worktree / f.path
        lines = (f.merged or "").splitlines(keepends=True)
        target.write_text(
            "".join(ln for ln in lines if not ln.startswith(("<<<<<<< ", "=======", ">>>>>>> ")))
        )
    return True


async def edit(session: SessionRepo, wt: Worktree, path: str, text: str) -> None:
    (wt.path / path).parent.mkdir(parents=True, exist_ok=True)
    (wt.path / path).write_text(text)
    assert await session.commit(wt, f"Task {wt.task_id}: edit {path}")


@pytest.mark.anyio
async def test_operator_untouched_and_history_linear(repo: Path, tmp_path: Path) -> None:
    before = operator_state(repo)
    files_before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    session = await open_session(repo, tmp_path)
    for i in range(3):
        async with session.worktree(f"t{i}", f"w{i}") as wt:
            await edit(session, wt, f"new{i}.txt", f"{i}\n")
            result = await session.integrate(wt)
            assert result.status == "integrated" and result.retries == 0
    state = operator_state(repo)
    assert state[:4] == before[:4]  # status, HEAD, checked-out branch, index
    assert {p: p.read_bytes() for p in files_before} == files_before
    assert not (repo / "new0.txt").exists()
    log = git(repo, "log", "--format=%P|%an", "formicary/s1").splitlines()
    assert len(log) == 4 and all(len(line.split("|")[0].split()) <= 1 for line in log)  # linear
    assert log[0].endswith("|formicary-worker-w2")


@pytest.mark.anyio
@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reused"])
async def test_hundred_concurrent_integrations_lose_nothing(repo: Path, tmp_path: Path, reuse: bool) -> None:
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wt" / "s1", reuse_worktrees=reuse)
    landed: dict[str, str] = {}

    async def worker(i: int) -> None:
        async with session.worktree(f"t{i}", f"w{i % 16}") as wt:
            # Half add a file, half edit a distinct line of an existing one: no conflicts, many races.
            if i % 2:
                await edit(session, wt, f"added/{i}.txt", f"task {i}\n")
            else:
                target = wt.path / f"src/d{i % 10:02}/file{i % 20:03}.txt"
                lines = target.read_text().splitlines(keepends=True)
                lines[(i // 20) * 4] = f"edited by task {i}\n"
                target.write_text("".join(lines))
                assert await session.commit(wt, f"Task {i}")
            result = await session.integrate(wt)
            assert result.status == "integrated", result.error
            landed[f"t{i}"] = result.sha or ""

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(worker, i)

    history = set(git(repo, "rev-list", "formicary/s1").split())
    assert len(landed) == 100 and set(landed.values()) <= history
    assert len(history) == 101
    tip = "formicary/s1"
    for i in range(100):
        if i % 2:
            assert git(repo, "show", f"{tip}:added/{i}.txt") == f"task {i}"
        else:
            assert f"edited by task {i}" in git(repo, "show", f"{tip}:src/d{i % 10:02}/file{i % 20:03}.txt")
    await session.close()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--list", "formicary-tasks/*") == ""


@pytest.mark.anyio
async def test_conflict_handed_back_resolved_and_landed(repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    writer = Writer(db)
    session = await open_session(repo, tmp_path)
    seen: list[Conflict] = []

    async def resolve(conflict: Conflict) -> bool:
        seen.append(conflict)
        return await keep_both(conflict)

    async with session.worktree("a", "wa") as wa, session.worktree("b", "wb") as wb:
        await edit(session, wa, "shared.txt", "top\nfrom a\nbottom\n")
        await edit(session, wb, "shared.txt", "top\nfrom b\nbottom\n")
        first = await session.integrate(wa, resolve, writer=writer)
        second = await session.integrate(wb, resolve, writer=writer)
    assert first.status == second.status == "integrated"
    assert second.conflicts == 1 and second.conflict_paths == ["shared.txt"]
    (conflict,) = seen
    (f,) = conflict.files
    assert conflict.task_id == "b" and conflict.tip == first.sha
    assert (f.base, f.ours, f.theirs) == (
        "top\nmiddle\nbottom\n",
        "top\nfrom a\nbottom\n",
        "top\nfrom b\nbottom\n",
    )
    assert f.merged and "<<<<<<< shared (" in f.merged and ">>>>>>> task (" in f.merged
    assert git(repo, "show", "formicary/s1:shared.txt") == "top\nfrom a\nfrom b\nbottom"
    assert git(repo, "rev-list", "--count", "formicary/s1") == "3"

    writer.flush()
    writer.close()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT task_id, attempt, result, old_tip, new_tip, conflict_paths FROM integrations ORDER BY created_at"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", 1, "landed"),
        ("b", 1, "conflict"),
        ("b", 2, "landed"),
    ]
    assert json.loads(rows[1][5]) == ["shared.txt"] and rows[2][3] == first.sha and rows[2][4] == second.sha
    commits = con.execute(
        "SELECT task_id, status, integrated_sha, conflicts, branch FROM commits ORDER BY task_id"
    )
    assert commits.fetchall() == [
        ("a", "integrated", first.sha, 0, "formicary-tasks/s1/a"),
        ("b", "integrated", second.sha, 1, "formicary-tasks/s1/b"),
    ]


@pytest.mark.anyio
async def test_conflict_limit_fails_and_keeps_the_work(repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    writer = Writer(db)
    session = await open_session(repo, tmp_path)
    # The loser owns the shared file after its first lost round, so each rival is held until that turn ends:
    # a short turn keeps the rounds (and the outcome) the same without waiting the default two minutes each.
    session.shared.hot = HotPaths(hold_s=0.5)
    rounds = 0

    async def land_rival(n: int) -> None:
        async with session.worktree(f"rival{n}", "wr") as rival:
            await edit(session, rival, "shared.txt", f"top\nrival {n}\nbottom\n")
            assert (await session.integrate(rival)).status == "integrated"

    async def resolve_but_lose_the_race(conflict: Conflict) -> bool:
        nonlocal rounds
        rounds += 1
        await land_rival(rounds)  # something conflicting lands while the worker resolves
        return await keep_both(conflict)

    async with session.worktree("loser", "wl") as wt:
        await edit(session, wt, "shared.txt", "top\nloser\nbottom\n")
        await land_rival(0)
        result = await session.integrate(wt, resolve_but_lose_the_race, writer=writer, max_conflict_rounds=2)
    assert result.status == "failed" and result.conflicts == 2 == rounds
    assert "unresolved after 2 round(s)" in (result.error or "")
    assert not wt.path.exists()
    kept = git(repo, "show", f"{wt.branch}:shared.txt")
    assert "loser" in kept  # the work (with its resolutions) stays on the task branch
    assert "loser" not in git(repo, "show", "formicary/s1:shared.txt")

    writer.flush()
    writer.close()
    con = sqlite3.connect(db)
    row = con.execute(
        "SELECT status, branch, sha, conflicts, error FROM commits WHERE task_id = 'loser'"
    ).fetchone()
    assert row[:4] == ("failed", wt.branch, result.head, 2) and "unresolved" in row[4]
    results = [r[0] for r in con.execute("SELECT result FROM integrations WHERE task_id = 'loser'")]
    assert results.count("conflict") == 3 and results[-1] == "failed"


@pytest.mark.anyio
async def test_unresolved_conflict_fails_at_once(repo: Path, tmp_path: Path) -> None:
    session = await open_session(repo, tmp_path)

    async def give_up(conflict: Conflict) -> bool:
        return False

    async with session.worktree("a", "wa") as wa, session.worktree("b", "wb") as wb:
        await edit(session, wa, "shared.txt", "a\n")
        await edit(session, wb, "shared.txt", "b\n")
        assert (await session.integrate(wa, give_up)).status == "integrated"
        result = await session.integrate(wb, give_up)
        assert result.status == "failed" and result.conflicts == 1
        assert (wb.path / "shared.txt").read_text() == "b\n"  # the worktree is back at the worker's commit
    assert git(repo, "show", f"{wb.branch}:shared.txt") == "b"


@pytest.mark.anyio
async def test_tip_moved_by_another_process_is_retried(repo: Path, tmp_path: Path) -> None:
    writer = Writer(tmp_path / "f.db")
    session = await open_session(repo, tmp_path)
    # Someone else (the operator, another formicary) lands a commit on the session branch behind our back.
    outsider = git(
        repo, "commit-tree", f"{session.base_sha}^{{tree}}", "-p", session.base_sha, "-m", "outside"
    )
    git(repo, "update-ref", "refs/heads/formicary/s1", outsider)
    async with session.worktree("t", "w") as wt:
        await edit(session, wt, "x.txt", "x\n")
        result = await session.integrate(wt, writer=writer)
    assert result.status == "integrated" and result.retries == 1
    assert git(repo, "rev-parse", f"{result.sha}^") == outsider
    writer.flush()
    writer.close()
    con = sqlite3.connect(tmp_path / "f.db")
    results = [r[0] for r in con.execute("SELECT result FROM integrations ORDER BY attempt")]
    assert results == ["moved", "landed"]


@pytest.mark.anyio
async def test_nothing_committed_is_empty(repo: Path, tmp_path: Path) -> None:
    session = await open_session(repo, tmp_path)
    async with session.worktree("t", "w") as wt:
        assert await session.commit(wt, "no change") is None
        assert (await session.integrate(wt)).status == "empty"
    assert git(repo, "rev-parse", "formicary/s1") == session.base_sha


def test_parse_merge_tree_output() -> None:
    fields = [
        "T",
        "100644 B 1\tf",
        "100644 O 2\tf",
        "100644 W 3\tf",
        "",
        "1",
        "f",
        "Auto-merging",
        "Auto-merging f\n",
    ]
    out = "\x00".join(fields) + "\x00"
    parsed = parse_merge_tree(out, clean=False)
    assert parsed.tree == "T" and parsed.paths == ["f"] and [e.stage for e in parsed.entries] == [1, 2, 3]
    assert parsed.messages == ["Auto-merging f"]
    assert parse_merge_tree("T\0", clean=True).entries == []


@pytest.mark.anyio
async def test_binary_conflict_is_left_intact(repo: Path, tmp_path: Path) -> None:
    session = await open_session(repo, tmp_path)

    async def take_mine(conflict: Conflict) -> bool:
        (f,) = conflict.files
        assert f.merged is None and (conflict.worktree / f.path).read_bytes() == b"\0A\0"  # ours, untouched
        (conflict.worktree / f.path).write_bytes(b"\0B\0")
        return True

    async with session.worktree("a", "wa") as wa, session.worktree("b", "wb") as wb:
        (wa.path / "blob.bin").write_bytes(b"\0A\0")
        await session.commit(wa, "a")
        (wb.path / "blob.bin").write_bytes(b"\0B\0")
        await session.commit(wb, "b")
        assert (await session.integrate(wa)).status == "integrated"
        assert (await session.integrate(wb, take_mine)).status == "integrated"
    assert git(repo, "cat-file", "-p", "formicary/s1:blob.bin") == "\0B\0"


@pytest.mark.anyio
async def test_batch_is_all_or_nothing_when_the_tip_moves(repo: Path, tmp_path: Path) -> None:
    """A batch lands with one CAS; if another process moved the branch, none of it lands and all retry."""
    from formicary.agents.git.integration import _land_batch, _Request

    session = await open_session(repo, tmp_path)
    async with session.worktree("a", "w") as wa, session.worktree("b", "w") as wb:
        await edit(session, wa, "shared.txt", "a\n")
        await edit(session, wb, "shared.txt", "b\n")  # conflicts with a, but a never lands
        outsider = git(repo, "commit-tree", f"{session.base_sha}^{{tree}}", "-p", session.base_sha, "-m", "x")
        git(repo, "update-ref", "refs/heads/formicary/s1", outsider)
        batch = [_Request(wt.head or "", "m", wt.identity.env(), urgent=False) for wt in (wa, wb)]
        await _land_batch(session.shared, session.root, batch)
        assert [r.outcome.result for r in batch] == ["moved", "moved"]  # type: ignore[union-attr]
        assert git(repo, "rev-parse", "formicary/s1") == outsider == session.shared.tip
        await _land_batch(session.shared, session.root, batch)
        assert [r.outcome.result for r in batch] == ["landed", "slow"]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_batch_lands_its_clean_members_and_leaves_out_a_conflict_and_a_gate_s_other_tree(
    repo: Path, tmp_path: Path
) -> None:
    """One CAS for the batch; a member git must merge (a conflict) or whose merged tree is not the one its gate
    passed is left out, the others land, one commit each on the first-parent history."""
    from formicary.agents.git.integration import _land_batch, _Request
    from formicary.agents.git.verdict import GateToken

    session = await open_session(repo, tmp_path)
    async with (
        session.worktree("a", "wa") as wa,
        session.worktree("b", "wb") as wb,
        session.worktree("c", "wc") as wc,
        session.worktree("d", "wd") as wd,
    ):
        await edit(session, wa, "shared.txt", "a\n")
        await edit(session, wb, "shared.txt", "b\n")  # conflicts with a
        await edit(session, wc, "c.txt", "c\n")  # its gate passed another tree
        await edit(session, wd, "d.txt", "d\n")
        start = session.shared.tip or ""
        batch = [
            _Request(wt.head or "", f"Task {wt.task_id}", wt.identity.env(), urgent=False) for wt in (wa, wb)
        ]
        batch.append(
            _Request(
                wc.head or "",
                "Task c",
                wc.identity.env(),
                urgent=False,
                gated=True,
                token=GateToken(start, "0" * 40),
            )
        )
        batch.append(_Request(wd.head or "", "Task d", wd.identity.env(), urgent=False))
        await _land_batch(session.shared, session.root, batch)
        outcomes = [r.outcome for r in batch]
        assert [o.result for o in outcomes] == ["landed", "slow", "regate", "landed"]  # type: ignore[union-attr]
        tip = git(repo, "rev-parse", "formicary/s1")
        assert tip == session.shared.tip == outcomes[3].new_tip  # type: ignore[union-attr]
        assert outcomes[1].old_tip == outcomes[3].old_tip == outcomes[0].new_tip  # type: ignore[union-attr]
        log = git(repo, "log", "--first-parent", "--format=%P|%s", f"{start}..formicary/s1").splitlines()
        assert [line.split("|")[1] for line in log] == ["Task d", "Task a"]
        assert all(len(line.split("|")[0].split()) == 1 for line in log)
        assert git(repo, "show", "formicary/s1:shared.txt") == "a"


@pytest.mark.anyio
async def test_concurrent_landings_with_a_conflict_all_land_one_commit_per_task(
    repo: Path, tmp_path: Path
) -> None:
    """Landings racing in batches: the one that conflicts goes back to its worker (git's merge made outside
    the critical section), resolves, and lands; every task is one first-parent commit."""
    session = await open_session(repo, tmp_path)
    resolved: list[str] = []

    async def resolve(conflict: Conflict) -> bool:
        resolved.append(conflict.task_id)
        return await keep_both(conflict)

    async def worker(i: int, path: str, text: str) -> None:
        async with session.worktree(f"t{i}", f"w{i}") as wt:
            await edit(session, wt, path, text)
            result = await session.integrate(wt, resolve)
            assert result.status == "integrated", result.error

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, 0, "shared.txt", "zero\n")
        tg.start_soon(worker, 1, "shared.txt", "one\n")
        for i in range(2, 12):
            tg.start_soon(worker, i, f"n{i}.txt", f"{i}\n")
    assert len(resolved) == 1
    log = git(
        repo, "log", "--first-parent", "--format=%P|%s", f"{session.base_sha}..formicary/s1"
    ).splitlines()
    assert len(log) == 12 and all(len(line.split("|")[0].split()) == 1 for line in log)
    assert sorted(git(repo, "show", "formicary/s1:shared.txt").splitlines()) == ["one", "zero"]


@pytest.mark.anyio
async def test_edits_apart_in_one_file_merge_outside_the_lock_and_land_without_a_conflict(
    repo: Path, tmp_path: Path
) -> None:
    writer = Writer(tmp_path / "f.db")
    session = await open_session(repo, tmp_path)
    async with session.worktree("a", "wa") as wa, session.worktree("b", "wb") as wb:
        await edit(session, wa, "shared.txt", "TOP\nmiddle\nbottom\n")
        await edit(session, wb, "shared.txt", "top\nmiddle\nBOTTOM\n")
        first = await session.integrate(wa, writer=writer)
        result = await session.integrate(wb, writer=writer)
    assert result.status == "integrated" and result.conflicts == 0 and result.attempts == 2
    assert git(repo, "show", "formicary/s1:shared.txt") == "TOP\nmiddle\nBOTTOM"
    assert git(repo, "log", "--format=%P", "-1", result.sha or "") == first.sha
    writer.flush()
    writer.close()
    con = sqlite3.connect(tmp_path / "f.db")
    rows = con.execute("SELECT result FROM integrations WHERE task_id = 'b' ORDER BY attempt")
    assert [r[0] for r in rows] == ["merged", "landed"]
