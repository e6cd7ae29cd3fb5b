"""Through the CLI: an endpoint that refuses every request ends the session with one line, a non-zero exit and
the reason on the session row; litellm with a bare model name reaches the server and lands its tasks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from formicary.store import db as store_db
from tests.gitrepo import make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, task, write


def team() -> ScriptedTeam:
    return ScriptedTeam(
        root_plans=[plan([task(f"t{i}") for i in range(3)])],
        default_work=lambda title, step: write(f"{title}.txt", "x\n") if step == 0 else finish(),
    )


def run_cli(tmp_path, server: ScriptedServer, model: str = "scripted-model", extra: str = "", env=None):
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[model]\nbase_url = "{server.base_url}"\nmodel = "{model}"\nretries = 4\ntimeout = 20\n{extra}\n'
        '[sandbox]\nmode = "none"\n[limits]\ncycles = 1\nworkers = 3\n'
    )
    db = tmp_path / "r.db"
    result = subprocess.run(
        [sys.executable, "-m", "formicary", "run", "--headless", "--repo", str(repo), "--goal", "write files",
         "--config", str(cfg), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return result, db


def session_row(db) -> dict:
    return next(iter(store_db.connect(db).query("SELECT * FROM sessions")))


@pytest.mark.parametrize(
    ("server_options", "model", "extra", "env", "expected"),
    [
        ({"fail_always": "400"}, "scripted-model", "", None, "HTTP 400, the endpoint refused the request"),
        (
            {"api_key": "right-key"},
            "scripted-model",
            'api_key_env = "SCRIPTED_KEY"',
            {"SCRIPTED_KEY": "wrong-key"},
            "HTTP 401, the endpoint refused the key",
        ),
        ({"strict_model": True}, "no-such-model", "", None, "HTTP 404, model 'no-such-model'"),
        ({"enforce_context": True, "n_ctx": 256}, "scripted-model", "", None, "context is too small"),
    ],
    ids=["400", "401", "404", "context"],
)
def test_a_refusing_endpoint_ends_the_session_with_one_line(
    tmp_path, server_options, model, extra, env, expected
):
    with ScriptedServer(responder=team(), **server_options) as server:
        result, db = run_cli(tmp_path, server, model, extra, env)
        requests = server.request_count
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "ExceptionGroup" not in output, output
    lines = [ln for ln in output.splitlines() if expected in ln]
    assert len(lines) == 1, output
    assert "the planner model endpoint" in lines[0] and server.base_url in lines[0]
    assert requests == 1  # refused at once, not retried
    row = session_row(db)
    assert row["status"] == "failed" and expected in row["stop_reason"]
    listed = subprocess.run(
        [sys.executable, "-m", "formicary", "sessions", "--db", str(db)], capture_output=True, text=True
    )
    assert expected in listed.stdout


def test_litellm_with_a_bare_model_name_lands_its_tasks(tmp_path):
    scripted = team()
    with ScriptedServer(responder=scripted, model="qwen2.5-coder") as server:
        result, db = run_cli(tmp_path, server, "qwen2.5-coder", 'api = "litellm"')
        models = {body.get("model") for body in server.requests}
    assert result.returncode == 0, result.stdout + result.stderr
    assert models == {"qwen2.5-coder"}
    landed = list(store_db.connect(db).query("SELECT * FROM tasks WHERE kind = 'work' AND status = 'done'"))
    assert len(landed) == 3
    assert session_row(db)["status"] == "done"


def test_the_status_bar_shows_why_a_session_failed():
    from formicary.view.views import StatusView
    from formicary.widgets.status_bar import status_text

    reason = "the worker model endpoint http://127.0.0.1:1/v1 failed: HTTP 401, the endpoint refused the key"
    ended = StatusView(session_status="failed", stop_reason=reason, started_at=0.0, ended_at=5.0)
    text = status_text(ended, now=10.0, mode="read-only", compact=False).plain
    assert "FAILED" in text and "HTTP 401, the endpoint refused the key" in text
    running = StatusView(session_status="running", stop_reason=None, warning="slow", started_at=0.0)
    assert "refused" not in status_text(running, now=10.0, mode="live", compact=False).plain


def test_headless_output_says_it_waits_for_the_endpoint_and_the_run_lands(tmp_path):
    """The only server stops for a few seconds mid-run: the operator reads one waiting line, nothing fails."""
    import time

    from tests.bench_team import bench_goal
    from tests.scripted_server import spawn_server_process, stop_server_process

    responder = "tests.bench_team:bench_responder"
    proc, url = spawn_server_process(responder=responder, latency=0.2)
    port = url.split(":")[2].split("/")[0]
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"}, n_files=10)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[model]\nbase_url = "{url}"\nmodel = "scripted-model"\nretries = 1\n[sandbox]\nmode = "none"\n'
        "[limits]\ncycles = 1\nworkers = 3\nplanner_depth = 0\nfollowups_per_planner = 0\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "formicary", "run", "--headless", "--repo", str(repo), "--goal",
         bench_goal(12, 4, 10), "--config", str(cfg), "--db", str(tmp_path / "r.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        lines = []
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if line.split(" ", 1)[-1].startswith("landed"):
                break
        stop_server_process(proc)
        time.sleep(5)
        proc, _ = spawn_server_process(responder=responder, latency=0.2, extra_args=[f"--port={port}"])
        out, _ = run.communicate(timeout=240)
        output = "".join(lines) + out
    finally:
        run.kill()
        stop_server_process(proc)
    assert run.returncode == 0, output
    assert "waiting for the model endpoint of the worker" in output
    assert "answers again" in output
    assert "task failed" not in output and "Traceback" not in output
