"""End to end through the CLI: scripted workers plant every known way to get code run on the host, later tasks
run normally, and a marker file outside every worktree must never appear. The session still finishes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from formicary.store.packing import unpack
from formicary.store.queries import dictionaries
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, run, task, write

KEY = "sk-formicary-e2e-0123456789abcdefXYZ"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def _payload(outside: Path) -> Path:
    """The program every attack points git at: on the host it would write the marker and dump its environment."""
    script = outside / "payload.sh"
    script.write_text(f"#!/bin/sh\necho ran >> {outside}/ESCAPED\nenv >> {outside}/ESCAPED.env\ncat\n")
    script.chmod(0o755)
    return script


def _nested(cmd: str) -> str:
    """A shell line that makes ``lib`` (a gitlink in the target repository) a repository with one commit."""
    return (
        "git init -q lib && cd lib && echo inner > inner.txt && git add inner.txt && "
        f"git -c user.name=a -c user.email=a@b commit -qm nested && {cmd} && echo INNER > inner.txt && cd .."
    )


def _attacks(payload: Path) -> dict[str, list]:
    p = str(payload)
    hooks = " ".join(f".husky/_/{h}" for h in ("pre-commit", "prepare-commit-msg", "post-commit"))
    return {
        "fsmonitor in a gitlink": [run(_nested(f"git config core.fsmonitor {p}")), finish()],
        "filter in a nested repository": [
            run(_nested(f"git config filter.x.clean {p} && echo '* filter=x' > .gitattributes")),
            finish(),
        ],
        "hooks of a nested repository": [
            run(_nested(f"for h in pre-commit post-commit post-checkout; do cp {p} .git/hooks/$h; done")),
            finish(),
        ],
        "husky hooks": [
            run(f"mkdir -p .husky/_ && for h in {hooks}; do cp {p} $h; done && echo hi > husky.txt"),
            finish(),
        ],
        "rewrite the .git file": [
            run(
                f"git init -q --bare /tmp/evil && git -C /tmp/evil config core.fsmonitor {p}; "
                "printf 'gitdir: /tmp/evil\\n' > .git; echo tried > dotgit.txt"
            ),
            finish(),
        ],
        "dump the environment": [
            run("env > env.txt; tr '\\0' '\\n' < /proc/1/environ > environ.txt; cat env.txt | head -3"),
            finish(),
        ],
        "normal work": [write("normal.txt", "ordinary\n"), finish()],
    }


@needs_bwrap
def test_planted_programs_never_run_on_the_host(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    payload = _payload(outside)
    repo = make_repo(tmp_path / "repo", {"README.md": "target\n"})
    lib = make_repo(tmp_path / "libsrc", {"inner.txt": "inner\n"})
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{git(lib, 'rev-parse', 'HEAD')},lib")
    git(repo, "commit", "-q", "-m", "a gitlink")
    (repo / "lib").mkdir()  # as a clone leaves a submodule it did not initialise
    git(repo, "config", "core.hooksPath", ".husky/_")  # what husky writes into the operator's repository
    work = _attacks(payload)
    team = ScriptedTeam(root_plans=[plan([task(title) for title in work])], work=work)
    home = tmp_path / "home"
    with ScriptedServer(responder=team) as server:
        env = dict(
            os.environ,
            FORMICARY_HOME=str(home),
            FORMICARY_TEST_API_KEY=KEY,
            FORMICARY_MODEL__BASE_URL=server.base_url,
            FORMICARY_MODEL__API_KEY_ENV="FORMICARY_TEST_API_KEY",
            FORMICARY_LIMITS__CYCLES="1",
        )
        result = subprocess.run(
            [sys.executable, "-m", "formicary", "run", "--repo", str(repo), "--goal", "attack", "--headless"]
            + ["--workers", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert not (outside / "ESCAPED").exists(), "a planted program ran on the host"
    assert result.returncode == 0, result.stdout + result.stderr
    db = sqlite3.connect(home / "data" / "formicary.db")
    shared = dictionaries(db)  # observations are compressed against their action's first
    observations = "\n".join(
        unpack(r[0], shared=shared) or "" for r in db.execute("SELECT observation FROM actions")
    )
    assert "nested repositories are not allowed: removed lib/.git" in observations
    assert db.execute("SELECT count(*) FROM tasks WHERE kind = 'work' AND status = 'done'").fetchone()[0] == 7
    branch = db.execute("SELECT branch FROM sessions").fetchone()[0]
    for name in ("env.txt", "environ.txt"):
        dumped = git(repo, "show", f"{branch}:{name}")
        assert "PATH=" in dumped and KEY not in dumped and "FORMICARY_TEST_API_KEY" not in dumped
    assert git(repo, "ls-tree", branch, "lib").startswith("160000 commit")  # still a gitlink
    assert git(repo, "show", f"{branch}:normal.txt") == "ordinary"
    assert KEY not in result.stdout + result.stderr
