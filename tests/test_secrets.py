"""No API key or bearer token reaches the SQLite file or any log, even when a model echoes it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.gitrepo import make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, task, write

KEY = "sk-formicary-test-0123456789abcdefXYZ"


def test_secrets_never_reach_the_record_or_logs(tmp_path):
    seen_auth = []

    team = ScriptedTeam(
        root_plans=[plan([task("leak", instructions=f"the key is {KEY}")], scratchpad=f"key {KEY}")],
        work={
            "leak": [write("notes.txt", f"token: {KEY}\nBearer {KEY}\n"), finish(f"used {KEY}", notes=KEY)]
        },
        verdicts=[{"decision": "done", "reason": f"saw {KEY}", "notes": KEY}],
    )

    def responder(body):
        return team(body)

    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    home = tmp_path / "home"
    with ScriptedServer(responder=responder) as server:
        env = dict(
            os.environ,
            FORMICARY_HOME=str(home),
            FORMICARY_TEST_API_KEY=KEY,
            FORMICARY_MODEL__BASE_URL=server.base_url,
            FORMICARY_MODEL__API_KEY_ENV="FORMICARY_TEST_API_KEY",
            FORMICARY_SANDBOX__MODE='"none"',
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "formicary",
                "run",
                "--repo",
                str(repo),
                "--goal",
                f"use {KEY}",
                "--headless",
                "--verbose",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        seen_auth = [b for b in server.requests if b]
    assert result.returncode == 0, result.stderr
    assert seen_auth, "the server saw no request"
    assert KEY not in result.stdout and KEY not in result.stderr
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "formicary.db" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    db = next(p for p in files if p.name == "formicary.db")
    import sqlite3

    conn = sqlite3.connect(db)
    config = json.loads(conn.execute("SELECT config FROM sessions").fetchone()[0])
    assert config["model"]["api_key_env"] == "FORMICARY_TEST_API_KEY"
    assert "[REDACTED]" in conn.execute("SELECT goal FROM sessions").fetchone()[0]
