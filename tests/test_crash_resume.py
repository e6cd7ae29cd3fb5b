"""Crash safety: ``kill -9`` a real headless run at random moments, resume, and lose nothing.

One scripted server (its own process) serves a three-cycle session of small tasks. The test starts
``formicary run --headless``, kills it with SIGKILL after a random delay, then ``formicary resume --headless``,
kills that too, and so on for KILLS kill points; then resumes to the end. After every kill every integrated
commit recorded in the store is still reachable from the shared branch; at the end the session is done, no task
is left running, no worktree is left behind, and every task the store calls done has its file on the branch.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from tests.gitrepo import git, make_repo
from tests.scripted_process import spawn_server_process, stop_server_process

KILLS = 32
SEED = 20261128


def _env(home, base_url):
    env = dict(os.environ)
    env.update(
        {
            "FORMICARY_HOME": str(home),
            "FORMICARY_MODEL__BASE_URL": base_url,
            "FORMICARY_SANDBOX__MODE": '"none"',
            "FORMICARY_MODEL__RETRIES": "2",
            "FORMICARY_LIMITS__WORKERS": "3",
        }
    )
    return env


def _query(db, sql, *params):
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError:  # killed before the schema was written
        return []
    finally:
        conn.close()


def _event_count(db) -> int:
    rows = _query(db, "SELECT COUNT(*) n FROM events")
    return rows[0]["n"] if rows else 0


def _wait_for_progress(db, before: int, run: subprocess.Popen, limit: float = 120) -> None:
    """Until the run has written an event beyond ``before`` (or ended, or ``limit`` seconds passed)."""
    deadline = time.monotonic() + limit
    while run.poll() is None and time.monotonic() < deadline and _event_count(db) <= before:
        time.sleep(0.05)


def _check_nothing_lost(repo, db):
    sessions = _query(db, "SELECT branch FROM sessions")
    if not sessions:
        return 0
    branch = sessions[0]["branch"]
    commits = _query(db, "SELECT integrated_sha FROM commits WHERE status = 'integrated'")
    for c in commits:
        assert (
            subprocess.run(
                ["git", "merge-base", "--is-ancestor", c["integrated_sha"], branch], cwd=repo
            ).returncode
            == 0
        )
    return len(commits)


def test_crash_kill9_at_random_moments_then_resume_loses_nothing(tmp_path):
    rng = random.Random(SEED)
    repo = make_repo(tmp_path / "repo", {"README.md": "demo\n"})
    home = tmp_path / "home"
    db = home / "data" / "formicary.db"
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder", latency=0.5)
    env = _env(home, base_url)
    kills = 0
    try:
        while kills < KILLS:
            started = bool(_query(db, "SELECT id FROM sessions"))
            cmd = (
                ["resume", "--headless"]
                if started
                else ["run", "--repo", str(repo), "--goal", "write the files", "--headless"]
            )
            before = _event_count(db)
            log = (tmp_path / f"run{kills}.log").open("w")
            run = subprocess.Popen(
                [sys.executable, "-m", "formicary", *cmd],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            # Kill at a random moment of real work, not of interpreter start-up (which on a loaded machine can
            # outlast any fixed delay): wait until this run has recorded something new, then a random delay.
            _wait_for_progress(db, before, run)
            time.sleep(rng.uniform(0.1, 1.2))
            if run.poll() is not None:
                log.close()
                output = (tmp_path / f"run{kills}.log").read_text()
                assert run.returncode == 0 or "is done" in output, output[-3000:]
                break  # it finished before this kill point: the session is done
            run.send_signal(signal.SIGKILL)
            run.wait()
            log.close()
            kills += 1
            _check_nothing_lost(repo, db)
        # On a busy machine every kill may come before the first run recorded its session: then start it.
        started = bool(_query(db, "SELECT id FROM sessions"))
        last = (
            ["resume", "--headless"]
            if started
            else ["run", "--repo", str(repo), "--goal", "write the files", "--headless"]
        )
        final = subprocess.run(
            [sys.executable, "-m", "formicary", *last],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "is done" not in final.stderr:
            assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    finally:
        stop_server_process(proc)

    assert kills >= 30, f"only {kills} kill points: the session finished too fast to test"
    session = _query(db, "SELECT * FROM sessions")[0]
    assert session["status"] == "done"
    landed = _check_nothing_lost(repo, db)
    assert landed >= 6
    assert _query(db, "SELECT COUNT(*) n FROM tasks WHERE status = 'running'")[0]["n"] == 0
    branch = session["branch"]
    tree = set(git(repo, "ls-tree", "-r", "--name-only", branch).split())
    done = _query(db, "SELECT title FROM tasks WHERE kind = 'work' AND status = 'done'")
    for t in done:
        assert f"{t['title'].replace(' ', '-')}.txt" in tree
    worktrees = home / "data" / "worktrees"
    assert not worktrees.exists() or not any(
        p for p in worktrees.rglob("*") if p.is_dir() and p.parent.parent == worktrees
    )
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert git(repo, "status", "--porcelain") == ""
    print(f"crash figures: kill points {kills}, integrated commits {landed}, lost 0, stuck running 0")


def test_resume_removes_the_ref_locks_a_killed_run_left_on_its_own_branches(tmp_path):
    """``kill -9`` while a task branch or the shared branch was being written leaves a ``.lock``: the resumed
    run removes this session's own and finishes (before: "cannot create branch … failed to lock file")."""
    repo = make_repo(tmp_path / "repo", {"README.md": "demo\n"})
    home = tmp_path / "home"
    db = home / "data" / "formicary.db"
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder", latency=0.5)
    env = _env(home, base_url)
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "formicary", "run", "--repo", str(repo), "--goal", "write", "--headless"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not _query(db, "SELECT id FROM tasks WHERE kind = 'work' AND status = 'running'"):
            assert run.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        session = _query(db, "SELECT id, branch FROM sessions")[0]
        heads = repo / ".git" / "refs" / "heads"
        unfinished = _query(
            db, "SELECT id FROM tasks WHERE kind = 'work' AND status IN ('running', 'pending')"
        )
        planted = [heads / f"{session['branch']}.lock"]
        for task in unfinished:
            for n in range(1, 41):
                suffix = "" if n == 1 else f"-{n}"
                planted.append(heads / "formicary-tasks" / session["id"] / f"{task['id']}{suffix}.lock")
        planted.append(repo / ".git" / "packed-refs.lock")
        for lock in planted:
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock.write_text("0" * 40 + "\n")
        os.utime(planted[-1], (time.time() - 3600, time.time() - 3600))  # a dead process's, an hour old
        final = subprocess.run(
            [sys.executable, "-m", "formicary", "resume", "--headless"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_server_process(proc)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert not [lock for lock in planted if lock.exists()]
    assert _query(db, "SELECT status FROM sessions")[0]["status"] == "done"
