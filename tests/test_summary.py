"""The end-of-session summary, every way a session ends, and ``formicary show`` for past sessions.

Real headless runs in a subprocess against the scripted server (its own process); the printed git commands are
run as printed, in a shell, on the real repository.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from formicary.store.writer import Writer
from formicary.summary import load_summary, render, review_commands
from tests.gitrepo import make_repo
from tests.scripted_process import spawn_server_process, stop_server_process


def env_for(home: Path, base_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FORMICARY_HOME": str(home),
            "FORMICARY_MODEL__BASE_URL": base_url,
            "FORMICARY_SANDBOX__MODE": '"none"',
            "FORMICARY_MODEL__RETRIES": "2",
            "FORMICARY_LIMITS__WORKERS": "3",
            **extra,
        }
    )
    return env


def formicary(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "formicary", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def query(db: Path, sql: str, *params: object) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def summary_block(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("session ") and " on " not in line)
    return lines[start:]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One whole three-cycle headless session with a check command, run to the judge's 'done'."""
    tmp = tmp_path_factory.mktemp("finished")
    repo = make_repo(tmp / "my repo", {"README.md": "demo\n"})
    home = tmp / "home"
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder")
    try:
        env = env_for(home, base_url)
        config = tmp / "config.toml"
        config.write_text('check_command = "ls README.md"\n')
        run = formicary(
            "run",
            "--repo",
            str(repo),
            "--goal",
            "write the files",
            "--config",
            str(config),
            "--headless",
            env=env,
        )
    finally:
        stop_server_process(proc)
    return {"repo": repo, "home": home, "db": home / "data" / "formicary.db", "run": run, "env": env}


def test_headless_finish_prints_the_summary_and_working_git_commands(finished: dict) -> None:
    run, db = finished["run"], finished["db"]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    session = query(db, "SELECT * FROM sessions")[0]
    landed = query(db, "SELECT COUNT(*) n FROM commits WHERE status = 'integrated'")[0]["n"]
    done = query(db, "SELECT COUNT(*) n FROM tasks WHERE kind = 'work' AND status = 'done'")[0]["n"]
    assert landed >= 6
    block = summary_block(run.stdout)
    text = "\n".join(block)
    assert block[0] == f"session {session['id']} done — all written"
    assert f"branch    {session['branch']}" in text
    assert f"commits   {landed} landed" in text
    assert f"tasks     {done} done, 0 failed" in text
    assert "check     start: passed · end: passed — README.md  (ls README.md, config)" in text
    for role in ("planner", "worker", "judge"):
        assert f"{role} " in text.split("tokens", 1)[1]
    commands = [line.strip() for line in block if line.strip().startswith("git -C ")]
    assert len(commands) == 3 and "'" in commands[0]  # the repository's path has a space: quoted
    log = subprocess.run(commands[0], shell=True, capture_output=True, text=True, check=True).stdout
    assert len(log.splitlines()) == landed
    stat = subprocess.run(commands[1], shell=True, capture_output=True, text=True, check=True).stdout
    assert f"{landed} files changed" in stat


def test_show_prints_the_same_summary_for_a_past_session(finished: dict) -> None:
    session = query(finished["db"], "SELECT id FROM sessions")[0]["id"]
    for name in (session[-6:], session[:10], ""):
        shown = formicary("show", *([name] if name else []), env=finished["env"], timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == summary_block(finished["run"].stdout)


def test_show_bad_input_is_one_line(tmp_path: Path, finished: dict) -> None:
    missing = formicary("show", "--db", str(tmp_path / "none.db"), env=finished["env"], timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("formicary: no record at")
    nomatch = formicary("show", "ZZZZZZ", env=finished["env"], timeout=60)
    assert nomatch.returncode == 2 and nomatch.stderr.strip() == "formicary: no session matches 'ZZZZZZ'"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    bad = formicary("show", "--db", str(junk), env=finished["env"], timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def _stopped_after_a_landing(tmp_path: Path, stop) -> tuple[subprocess.Popen[str], str, str]:
    """A headless run in its own process group, ``stop(run)`` once it landed something; (run, stdout, stderr)."""
    repo = make_repo(tmp_path / "repo", {"README.md": "demo\n"})
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder", latency=0.4)
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "formicary", "run", "--repo", str(repo), "--goal", "go", "--headless"],
            env=env_for(tmp_path / "home", base_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert run.stdout is not None
        seen = ""
        deadline = time.monotonic() + 120
        while "landed " not in seen and time.monotonic() < deadline:
            if select.select([run.stdout], [], [], 1.0)[0]:
                seen += run.stdout.readline()
        assert "landed " in seen, seen
        stop(run)
        out, err = run.communicate(timeout=120)
    finally:
        stop_server_process(proc)
    return run, seen + out, err


def test_ctrl_c_stops_gracefully_and_summarises(tmp_path: Path) -> None:
    run, out, err = _stopped_after_a_landing(tmp_path, lambda run: run.send_signal(signal.SIGINT))
    block = "\n".join(summary_block(out))
    assert run.returncode == 1, err
    assert "stopped — stopped by the operator" in block
    assert "review and merge:" in block and "git -C" in block


def test_a_stop_signalled_twice_at_once_as_timeout_does_still_stops_gracefully(tmp_path: Path) -> None:
    """GNU ``timeout N formicary run ...`` sends SIGTERM to the command and then to its process group: one
    request arriving twice. Seen: the second copy ended the run at once, no summary, the session left running."""

    def as_timeout_does(run: subprocess.Popen[str]) -> None:
        run.send_signal(signal.SIGTERM)
        os.killpg(run.pid, signal.SIGTERM)

    run, out, err = _stopped_after_a_landing(tmp_path, as_timeout_does)
    assert run.returncode == 1, err
    assert "stopped — stopped by the operator" in "\n".join(summary_block(out))
    (session,) = query(tmp_path / "home" / "data" / "formicary.db", "SELECT status FROM sessions")
    assert session["status"] == "stopped"


def test_a_budget_ending_is_summarised(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "demo\n"})
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder")
    try:
        env = env_for(tmp_path / "home", base_url, FORMICARY_LIMITS__CYCLES="1")
        run = formicary("run", "--repo", str(repo), "--goal", "go", "--headless", env=env)
    finally:
        stop_server_process(proc)
    block = "\n".join(summary_block(run.stdout))
    assert run.returncode == 1
    assert "stopped — cycle budget reached (1 cycles)" in block
    assert "check     start: no check · end: no check" in block


def test_render_cleans_hostile_text_and_quotes_paths(tmp_path: Path) -> None:
    db_path = tmp_path / "r.db"
    w = Writer(db_path)
    w.insert(
        "sessions",
        {"id": "S1", "goal": "fix \x1b]0;pwned\x07 it\nnow", "repo": "/tmp/a b;rm -rf ~",
         "branch": "formicary/x$(id)", "base_sha": "a" * 40, "status": "stopped",
         "stop_reason": "token budget \x1b[2J reached", "started_at": "2025-01-01T00:00:00.000+00:00",
         "ended_at": "2025-01-01T01:02:03.000+00:00"},
    )  # fmt: skip
    w.insert("commits", {"id": "C1", "session_id": "S1", "sha": "b" * 40, "branch": "t", "status": "integrated",
                         "created_at": "2025-01-01T00:10:00.000+00:00"})  # fmt: skip
    w.flush()
    w.close()
    from formicary.store.db import connect

    summary = load_summary(connect(db_path, readonly=True, migrate=False), "S1")
    text = "\n".join(render(summary))
    assert "\x1b" not in text and "\x07" not in text
    assert "goal      fix ]0;pwned it now" in text
    assert "wall time 1h02m" in text and "tokens    0" in text
    import shlex

    for cmd in review_commands(summary):
        words = shlex.split(cmd.split("#")[0])
        assert words[2] == "/tmp/a b;rm -rf ~"
        assert any("formicary/x$(id)" in w for w in words)


def test_quitting_the_tui_prints_the_summary(tmp_path: Path) -> None:
    """``formicary run`` in a real terminal (a pty): q stops the session, the TUI leaves, the summary stays."""
    import pty

    repo = make_repo(tmp_path / "repo", {"README.md": "demo\n"})
    proc, base_url = spawn_server_process(responder="tests.scripted_team:crash_responder", latency=0.3)
    env = env_for(tmp_path / "home", base_url, TERM="xterm-256color", COLUMNS="120", LINES="40")
    pid, fd = pty.fork()
    if pid == 0:  # the child: formicary's TUI on the pty
        os.execve(
            sys.executable,
            [sys.executable, "-m", "formicary", "run", "--repo", str(repo), "--goal", "go"],
            env,
        )
    out = b""

    def read_for(seconds: float, until: bytes | None = None) -> None:
        nonlocal out
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in out):
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                out += chunk

    try:
        read_for(90, until=b"worker-")  # a worker shows in the agents table
        assert b"worker-" in out, out[-2000:]
        os.write(fd, b"q")
        read_for(120, until=b"review and merge")
        read_for(3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        stop_server_process(proc)
    tail = out.rsplit(b"\x1b[?1049l", 1)[-1].decode(errors="replace")  # after the TUI left the screen
    assert "stopped — stopped by the operator" in tail, tail[-2000:]
    assert "  commits   " in tail and "  tokens    " in tail
    assert "review and merge:" in tail or "nothing landed on the branch" in tail
