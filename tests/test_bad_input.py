"""Bad input: one clear line, a non-zero exit, and nothing modified (no branch, no record, no worktree)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer


def formicary(*args: str, env_url: str | None = None, home=None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    if env_url:
        env["FORMICARY_MODEL__BASE_URL"] = env_url
    return subprocess.run(
        [sys.executable, "-m", "formicary", *args], capture_output=True, text=True, timeout=60, env=env
    )


def snapshot(repo) -> tuple[str, str, str]:
    return (
        git(repo, "for-each-ref"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        git(repo, "worktree", "list"),
    )


def assert_one_line_failure(result, expected: str, code: int = 2) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("formicary: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(responder=lambda body: "{}") as srv:
        yield srv


def run_args(repo, goal="do it", *extra):
    return ("run", "--repo", str(repo), "--goal", goal, "--headless", *extra)


def test_bad_input_not_a_git_repository(tmp_path, server):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f.txt").write_text("x")
    result = formicary(*run_args(tmp_path / "plain"), env_url=server.base_url)
    assert_one_line_failure(result, "is not a git repository")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["f.txt"]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a folder away"
)
def test_bad_input_a_repository_another_user_owns(tmp_path, server):
    """git's own guard ("dubious ownership"), said in one line with what to do, not as a list of git's lines."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 12345, 12345)
    result = formicary(*run_args(repo), env_url=server.base_url)
    assert_one_line_failure(result, f"git refuses {repo}: another user owns it")
    assert "safe.directory" in result.stderr and "[" not in result.stderr


def test_bad_input_dirty_work_tree(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / "a.txt").write_text("changed\n")
    (repo / "new.txt").write_text("untracked\n")
    before = snapshot(repo)
    result = formicary(*run_args(repo), env_url=server.base_url)
    assert_one_line_failure(result, "has uncommitted changes")
    assert snapshot(repo) == before


def test_bad_input_bare_repository(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(tmp_path / "bare.git")], check=True)
    result = formicary(*run_args(tmp_path / "bare.git"), env_url=server.base_url)
    assert_one_line_failure(result, "bare repository")


def test_bad_input_detached_head(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    git(repo, "checkout", "-q", "--detach")
    before = snapshot(repo)
    result = formicary(*run_args(repo), env_url=server.base_url)
    assert_one_line_failure(result, "detached")
    assert snapshot(repo) == before


def test_bad_input_path_does_not_exist(tmp_path, server):
    result = formicary(*run_args(tmp_path / "nowhere"), env_url=server.base_url)
    assert_one_line_failure(result, "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_bad_input_empty_goal(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    before = snapshot(repo)
    result = formicary(*run_args(repo, goal="   "), env_url=server.base_url)
    assert_one_line_failure(result, "goal is empty")
    assert snapshot(repo) == before


def test_bad_input_missing_config_file(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    result = formicary(*run_args(repo, "x", "--config", str(tmp_path / "none.toml")), env_url=server.base_url)
    assert_one_line_failure(result, "config file not found")


def test_bad_input_broken_config_in_repo(tmp_path, server):
    repo = make_repo(tmp_path / "repo", {"formicary.toml": "[limits]\nworkers = 'many'\n"})
    before = snapshot(repo)
    result = formicary(*run_args(repo), env_url=server.base_url)
    assert_one_line_failure(result, "formicary.toml: limits.workers")
    assert snapshot(repo) == before


def test_bad_input_a_setting_without_its_section_is_named_not_ignored(tmp_path, server, monkeypatch):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    before = snapshot(repo)
    monkeypatch.setenv("FORMICARY_WORKERS", "8")  # ignored without a word, the session ran with the default
    result = formicary(*run_args(repo), env_url=server.base_url)
    assert_one_line_failure(
        result, "FORMICARY_WORKERS is not a setting: limits.workers is set by FORMICARY_LIMITS__WORKERS"
    )
    assert snapshot(repo) == before


def test_a_top_level_setting_is_read_from_its_variable():
    from formicary.config import load_settings

    settings = load_settings(environ={"FORMICARY_CHECK_COMMAND": "pytest -q", "FORMICARY_TEST_API_KEY": "x"})
    assert settings.check_command == "pytest -q"  # needed a section before, and was ignored


def test_bad_input_unreachable_endpoint_changes_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    before = snapshot(repo)
    result = formicary(*run_args(repo), env_url="http://127.0.0.1:9/v1")
    assert_one_line_failure(result, "is not reachable")
    assert snapshot(repo) == before
    assert not list((tmp_path).glob("**/formicary.db"))


def test_bad_input_resume_with_nothing_to_resume():
    assert_one_line_failure(formicary("resume", "--headless"), "nothing to resume")


def test_bad_input_unknown_session_for_attach(tmp_path, server):
    from formicary.agents import paths
    from formicary.store.db import connect

    connect(paths.default_db_path()).conn.close()
    assert_one_line_failure(formicary("attach", "ZZZZ"), "no session matches")


def test_bad_input_record_that_is_not_a_database(tmp_path, server):
    """A --db file that is not an SQLite record: every command ends in one line; the repository, and the
    file, are left as they were (no session branch is created before the record is found unusable)."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"not a database, just a file someone named .db\n" * 40)
    before, content = snapshot(repo), bad.read_bytes()
    result = formicary(*run_args(repo, "do it", "--db", str(bad)), env_url=server.base_url)
    assert_one_line_failure(result, "cannot use the record")
    assert snapshot(repo) == before
    for command in (("sessions",), ("resume", "--headless"), ("calls", "ZZZZ"), ("show",)):
        assert_one_line_failure(formicary(*command, "--db", str(bad)), "record")
    assert bad.read_bytes() == content


def test_bad_input_check_whose_program_does_not_exist(tmp_path, server):
    """A typo in --check would fail alike on every tree, so the gate would let anything through: refused
    before the session starts."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    before = snapshot(repo)
    db = tmp_path / "record.db"
    result = formicary(
        *run_args(repo, "do it", "--check", "pytset -q", "--db", str(db)), env_url=server.base_url
    )
    assert_one_line_failure(result, "the check `pytset -q` cannot start: pytset is not found")
    assert snapshot(repo) == before
    assert not db.exists()
