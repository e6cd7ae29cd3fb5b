"""Host-side git never runs anything an agent wrote into a worktree (issue: the trust boundary).

Each case plants what an agent's ``run`` could leave in a worktree (written here directly, as the command would),
then formicary's own git does its chores: commit, hand-back, reuse. A marker file outside every worktree would
appear if any planted program ran on the host.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from formicary.agents.git.run import git, git_argv, git_env, git_sync
from formicary.agents.git.workspace import SessionRepo
from formicary.agents.tools.nested import find_nested_git, remove_nested_git
from tests.gitrepo import git as sh_git
from tests.gitrepo import make_repo


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _script(path: Path, marker: Path) -> str:
    """An executable that creates ``marker`` (the escape) and exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho ran >> {marker}\nenv >> {marker}.env\ncat\n")
    path.chmod(0o755)
    return str(path)


def _nested_repo(where: Path, config: str) -> None:
    """``git init`` a nested repository at ``where`` as a command would, then append ``config`` to its config."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "inner.txt").write_text("inner\n")
    sh_git(where, "init", "-q")
    sh_git(where, "add", "-A")
    sh_git(where, "commit", "-q", "-m", "nested")
    with open(where / ".git" / "config", "a") as f:
        f.write(config)


def _plant(case: str, wt: Path, outside: Path, marker: Path) -> None:
    cmd = _script(outside / "payload.sh", marker)
    if case == "nested-fsmonitor":
        _nested_repo(wt / "sub", f"[core]\n\tfsmonitor = {cmd}\n")
        (wt / "sub" / "f.txt").write_text("x\n")
    elif case == "nested-filter":
        _nested_repo(wt / "sub", f'[filter "x"]\n\tclean = {cmd}\n\tsmudge = {cmd}\n\trequired = false\n')
        (wt / "sub" / ".gitattributes").write_text("* filter=x\n")
        (wt / "sub" / "f.txt").write_text("x\n")
    elif case == "nested-hooks":
        _nested_repo(wt / "sub", "")
        for hook in ("pre-commit", "post-commit", "reference-transaction", "post-index-change"):
            _script(wt / "sub" / ".git" / "hooks" / hook, marker)
        (wt / "sub" / "f.txt").write_text("x\n")
    elif case == "relative-hookspath":
        for hook in ("pre-commit", "prepare-commit-msg", "post-commit", "reference-transaction"):
            _script(wt / ".husky" / "_" / hook, marker)
    elif case == "dotgit-file-redirect":
        evil = outside / "evil.git"
        subprocess.run(["git", "init", "-q", "--bare", str(evil)], check=True, capture_output=True)
        with open(evil / "config", "a") as f:
            f.write(f"[core]\n\tfsmonitor = {cmd}\n\tbare = false\n\thooksPath = {evil}/hooks\n")
        for hook in ("pre-commit", "post-commit", "reference-transaction"):
            _script(evil / "hooks" / hook, marker)
        dot = wt / ".git"
        dot.chmod(0o644)
        dot.write_text(f"gitdir: {evil}\n")
    else:
        raise AssertionError(case)
    (wt / "change.txt").write_text("work\n")


CASES = ["nested-fsmonitor", "nested-filter", "nested-hooks", "relative-hookspath", "dotgit-file-redirect"]


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_host_git_runs_nothing_planted_in_a_worktree(tmp_path: Path, case: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n"})
    sh_git(repo, "config", "core.hooksPath", ".husky/_")  # what husky writes into the operator's repository
    outside = tmp_path / "outside"
    marker = outside / "ESCAPED"
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wts", reuse_worktrees=True)
    async with session.worktree("t1", "a1") as wt:
        assert f"--git-dir={wt.git_dir}" in git_argv(("status",), cwd=wt.path)  # whoever calls git there
        _plant(case, wt.path, outside, marker)
        sha = await session.commit(wt, "task one")
        assert sha is not None
        shown = git_sync("show", "--stat", sha, cwd=wt.path, git_dir=wt.git_dir)
        assert shown.rc == 0
        assert "change.txt" in shown.out
        if case.startswith("nested"):
            assert wt.nested_removed == ["sub/.git"]
        # A second commit in the same worktree: had the nested repository become a gitlink, git would now
        # start `git status` inside it (reading its config) to see whether it changed.
        if (wt.path / "sub").is_dir():
            (wt.path / "sub" / "inner.txt").write_text("INNER\n")  # same size: git must hash it
        (wt.path / "change.txt").write_text("more work\n")
        assert await session.commit(wt, "task one, again")
    async with session.worktree("t2", "a2") as wt2:  # reused: the next task's chores run there too
        assert find_nested_git(wt2.path) == []
        (wt2.path / "later.txt").write_text("later\n")
        assert await session.commit(wt2, "task two")
    await session.close()
    assert not marker.exists(), f"{case}: a planted program ran on the host"


@pytest.mark.anyio
async def test_gitlink_folder_turned_into_a_repository_is_removed_and_stays_a_gitlink(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n"})
    sub = make_repo(tmp_path / "libsrc", {"lib.txt": "lib\n"})
    sub_sha = sh_git(sub, "rev-parse", "HEAD")
    sh_git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sub_sha},lib")
    sh_git(repo, "commit", "-q", "-m", "gitlink")
    outside = tmp_path / "outside"
    marker = outside / "ESCAPED"
    cmd = _script(outside / "payload.sh", marker)
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wts", reuse_worktrees=True)
    async with session.worktree("t1", "a1") as wt:
        _nested_repo(wt.path / "lib", f"[core]\n\tfsmonitor = {cmd}\n")
        (wt.path / "lib" / "x").write_text("x\n")
        (wt.path / "top.txt").write_text("top\n")
        sha = await session.commit(wt, "task")
        assert wt.nested_removed == ["lib/.git"]
        tree = sh_git(repo, "ls-tree", sha, "lib")
        assert tree.startswith("160000 commit " + sub_sha)
    async with session.worktree("t2", "a2") as wt2:
        _nested_repo(wt2.path / "lib", f"[core]\n\tfsmonitor = {cmd}\n")
    async with session.worktree("t3", "a3") as wt3:  # the reused slot was scrubbed before its checkout
        assert not (wt3.path / "lib" / ".git").exists()
        (wt3.path / "t3.txt").write_text("t3\n")
        assert await session.commit(wt3, "task three")
    await session.close()
    assert not marker.exists()


def test_git_env_is_an_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-never-reach-git-000000")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.fsmonitor'='/bin/false'")
    monkeypatch.setenv("GIT_DIR", "/somewhere/else")
    env = git_env({"GIT_AUTHOR_NAME": "a"})
    assert "OPENAI_API_KEY" not in env
    assert "GIT_CONFIG_PARAMETERS" not in env and "GIT_DIR" not in env
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert Path(env["GIT_CONFIG_GLOBAL"]).read_text() == ""
    assert os.listdir(env["HOME"]) == []
    assert env["GIT_AUTHOR_NAME"] == "a"
    with pytest.raises(ValueError):
        git_env({"LD_PRELOAD": "/tmp/x.so"})
    argv = git_argv(("status",))
    hooks = argv[argv.index("-c") + 1].removeprefix("core.hooksPath=")
    assert os.path.isdir(hooks) and os.listdir(hooks) == []
    assert "core.fsmonitor=false" in argv and "submodule.recurse=false" in argv


@pytest.mark.anyio
async def test_git_process_sees_no_key_and_no_global_config(tmp_path: Path, monkeypatch) -> None:
    """A real git process: the operator's global config (with an alias that would run a program) is not read."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[core]\n\tfsmonitor = /bin/false\n[user]\n\tname = Operator Global\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-never-reach-git-000000")
    repo = make_repo(tmp_path / "repo")
    res = await git("config", "--show-origin", "--list", cwd=repo)
    assert "Operator Global" not in res.out and str(home) not in res.out
    assert "core.fsmonitor=false" in res.out


def test_nested_git_scan_finds_any_depth_any_case_and_skips_links(tmp_path: Path) -> None:
    root = tmp_path / "wt"
    (root / "a" / "b" / ".git").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "c" / ".GIT").write_text("gitdir: /x\n")
    (root / ".git").write_text("gitdir: /own\n")
    outside = tmp_path / "out"
    (outside / ".git").mkdir(parents=True)
    (root / "link").symlink_to(outside)
    (root / "d").mkdir()
    (root / "d" / ".git").symlink_to(outside / ".git")
    locked = root / "e" / ".git" / "objects"
    locked.mkdir(parents=True)
    (root / "e").chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert find_nested_git(root) == ["a/b/.git", "c/.GIT", "d/.git", "e/.git"]
    assert remove_nested_git(root) == ["a/b/.git", "c/.GIT", "d/.git", "e/.git"]
    assert find_nested_git(root) == []
    assert (root / ".git").is_file() and (outside / ".git").is_dir()


@pytest.mark.anyio
async def test_reusing_a_worktree_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    """A parked worktree whose tracked folder an agent replaced with a symlink to a folder outside: the next
    task's checkout restores the folder inside the worktree and writes nothing outside."""
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "src/a.txt": "a\n", "src/deep/b.txt": "b\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wts", reuse_worktrees=True)
    async with session.worktree("t1", "a1") as wt:
        for sub in ("src", "README.md"):
            target = wt.path / sub
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        (wt.path / "src").symlink_to(outside)
        (wt.path / "README.md").symlink_to(outside / "readme-outside")
        (wt.path / "untracked-link").symlink_to(outside)
        (wt.path / "junk.pyc").write_text("x\n")
        first = wt.path
    async with session.worktree("t2", "a2") as wt2:
        assert wt2.path == first  # the same slot, reused
        assert (
            not (wt2.path / "src").is_symlink() and (wt2.path / "src" / "deep" / "b.txt").read_text() == "b\n"
        )
        assert not (wt2.path / "README.md").is_symlink() and (wt2.path / "README.md").read_text() == "hi\n"
        assert not os.path.lexists(wt2.path / "untracked-link") and not (wt2.path / "junk.pyc").exists()
        assert git_sync("status", "--porcelain", "--ignored", cwd=wt2.path, git_dir=wt2.git_dir).out == ""
        (wt2.path / "t2.txt").write_text("t2\n")
        assert await session.commit(wt2, "task two")
    await session.close()
    assert list(outside.iterdir()) == []


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_catching_up_with_the_tip_runs_nothing_planted_in_a_worktree(tmp_path: Path, case: str) -> None:
    """A worker's copy fast-forwarded to the moved tip (git/catch_up.py) after an agent planted a nested
    repository, hooks or a redirected ``.git``: git checks out the landed files and runs none of it."""
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "lib/other.txt": "old\n"})
    sh_git(repo, "config", "core.hooksPath", ".husky/_")
    outside = tmp_path / "outside"
    marker = outside / "ESCAPED"
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wts", reuse_worktrees=True)
    async with session.worktree("t1", "a1") as wt:
        _plant(case, wt.path, outside, marker)
        async with session.worktree("t2", "a2") as other:  # another task lands meanwhile
            (other.path / "lib" / "other.txt").write_text("landed\n")
            await session.commit(other, "another task")
            assert (await session.integrate(other)).status == "integrated"
        came = await session.catch_up(wt, set())
        assert came == ["lib/other.txt"] and (wt.path / "lib" / "other.txt").read_text() == "landed\n"
        assert await session.commit(wt, "task one")
    await session.close()
    assert not marker.exists(), f"{case}: a planted program ran on the host"
