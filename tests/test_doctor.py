"""``formicary doctor`` against the scripted server: a healthy endpoint, and ones with something to fix."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.scripted_server import ScriptedServer

PING = json.dumps({"ok": True, "word": "ready"})


def doctor(tmp_path, base_url: str, model: str = "scripted-model", extra: str = ""):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\nbase_url = "{base_url}"\nmodel = "{model}"\ncontext_length = 4096\n{extra}')
    return subprocess.run(
        [sys.executable, "-m", "formicary", "doctor", "--repo", str(tmp_path), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_healthy_endpoint_reports_context_length(tmp_path):
    with ScriptedServer(responder=lambda body: PING, n_ctx=16384) as srv:
        result = doctor(tmp_path, srv.base_url)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if srv.base_url[:30] in ln)
    assert "16384" in line and line.count("ok") == 3
    assert "planner,subplanner,worker,judge" in line
    assert "All endpoints healthy" in result.stdout


def test_unreachable_endpoint_fails_with_what_to_fix(tmp_path):
    result = doctor(tmp_path, "http://127.0.0.1:9/v1")
    assert result.returncode == 1
    assert "not reachable" in result.stderr


def test_schema_failure_and_small_context_are_reported(tmp_path):
    with ScriptedServer(responder=lambda body: "I am a chatty model, not JSON.", n_ctx=2048) as srv:
        result = doctor(tmp_path, srv.base_url)
    assert result.returncode == 1
    assert "schema request failed: reply is not valid JSON" in result.stderr
    assert "server context 2048 < configured context_length 4096" in result.stderr


def test_roles_on_different_endpoints_are_checked_separately(tmp_path):
    with ScriptedServer(responder=lambda body: PING) as good:
        result = doctor(tmp_path, good.base_url, extra='[roles.judge]\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert result.returncode == 1
    rows = [ln for ln in result.stdout.splitlines() if "127.0.0.1" in ln]
    assert len(rows) == 2


def test_embedded_endpoint_not_set_up_says_what_to_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "formicary", "doctor", "--repo", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "embedded" in result.stdout
    assert "formicary model setup" in result.stderr


def test_sessions_lists_what_the_record_holds(tmp_path):
    from formicary.agents import paths
    from formicary.store.db import new_id, now
    from formicary.store.writer import Writer

    empty = subprocess.run([sys.executable, "-m", "formicary", "sessions"], capture_output=True, text=True)
    assert empty.returncode == 0 and "No sessions yet" in empty.stdout
    writer = Writer(paths.default_db_path())
    sid = new_id()
    writer.insert(
        "sessions",
        {
            "id": sid,
            "goal": "make it fast",
            "repo": str(tmp_path),
            "branch": "b",
            "status": "done",
            "started_at": now(),
            "ended_at": now(),
        },
    )
    writer.close()
    listed = subprocess.run([sys.executable, "-m", "formicary", "sessions"], capture_output=True, text=True)
    assert listed.returncode == 0
    assert sid[-12:] in listed.stdout and "make it fast" in listed.stdout and "done" in listed.stdout


def test_litellm_path_with_a_bare_model_name_is_checked_for_real(tmp_path):
    with ScriptedServer(responder=lambda body: PING, model="qwen2.5-coder") as srv:
        result = doctor(tmp_path, srv.base_url, model="qwen2.5-coder", extra='api = "litellm"\n')
        asked = [body.get("response_format", {}).get("type") for body in srv.requests]
    assert result.returncode == 0, result.stdout + result.stderr
    assert asked == ["json_schema"]  # one real schema-constrained request went through litellm


def test_refused_key_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "wrong")
    with ScriptedServer(responder=lambda body: PING, api_key="right") as srv:
        result = doctor(tmp_path, srv.base_url, extra='api_key_env = "SCRIPTED_KEY"\n')
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len([ln for ln in result.stderr.splitlines() if "HTTP 401" in ln]) == 1


def test_every_server_of_a_pool_is_checked(tmp_path):
    with ScriptedServer(responder=lambda body: PING) as a, ScriptedServer(responder=lambda body: PING) as b:
        extra = f'endpoints = ["{b.base_url}", "http://127.0.0.1:9/v1"]\n'
        result = doctor(tmp_path, a.base_url, extra=extra)
        asked = (a.request_count, b.request_count)
    assert result.returncode == 1
    rows = [ln for ln in result.stdout.splitlines() if "127.0.0.1" in ln]
    assert len(rows) == 3
    assert asked == (1, 1)
    assert "http://127.0.0.1:9/v1: not reachable" in result.stderr
