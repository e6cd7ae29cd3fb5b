"""In-process git (agents/git/inproc.py) agrees with git: merged trees, commits, the compare-and-swap."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from formicary.agents.git import inproc
from formicary.agents.git.landing import Ask, land_batch
from tests.gitrepo import git as sh_git
from tests.gitrepo import make_repo


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _commit(repo: Path, base: str, branch: str, files: dict[str, str | None]) -> str:
    """A commit on ``branch`` from ``base`` writing (or, for None, deleting) ``files``."""
    sh_git(repo, "checkout", "-q", "-B", branch, base)
    for rel, text in files.items():
        target = repo / rel
        if text is None:
            if target.is_dir():
                sh_git(repo, "rm", "-rq", rel)
            else:
                target.unlink()
        else:
            if target.exists() and target.is_dir():
                sh_git(repo, "rm", "-rq", rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    sh_git(repo, "add", "-A")
    sh_git(repo, "commit", "-q", "--allow-empty", "-m", branch)
    sha = sh_git(repo, "rev-parse", "HEAD")
    sh_git(repo, "checkout", "-q", "main")
    return sha


def _git_merge(repo: Path, tip: str, head: str) -> tuple[bool, str]:
    res = subprocess.run(
        ["git", "merge-tree", "--write-tree", "-z", tip, head], cwd=repo, capture_output=True, text=True
    )
    return res.returncode == 0, res.stdout.split("\0")[0].strip()


CASES: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {
    "disjoint files": ({"a.txt": "A\n"}, {"b.txt": "B\n"}),
    "both add to one new folder": ({"new/x.txt": "x\n"}, {"new/y.txt": "y\n"}),
    "both change one file the same way": ({"src/one.txt": "same\n"}, {"src/one.txt": "same\n"}),
    "deep disjoint edits": ({"src/deep/a/b.txt": "1\n"}, {"src/deep/c/d.txt": "2\n"}),
    "head deletes a folder the tip left alone": ({"other.txt": "o\n"}, {"src/deep": None}),
    "head deletes a file, tip adds beside it": ({"src/two.txt": "2b\n"}, {"src/one.txt": None}),
    "head empties the only file of a folder": ({"x.txt": "x\n"}, {"lonely/only.txt": None}),
}
GIT_DECIDES: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {
    "both change one file": ({"src/one.txt": "tip\n"}, {"src/one.txt": "head\n"}),
    "tip deletes what head changes": ({"src/one.txt": None}, {"src/one.txt": "head\n"}),
    "file meets folder": ({"clash": "file\n"}, {"clash/inner.txt": "dir\n"}),
    "folder meets file": ({"clash/inner.txt": "dir\n"}, {"clash": "file\n"}),
}


def _repo(tmp_path: Path) -> tuple[Path, str]:
    repo = make_repo(
        tmp_path / "repo",
        {
            "README.md": "hi\n",
            "src/one.txt": "one\n",
            "src/two.txt": "two\n",
            "src/deep/a/b.txt": "b\n",
            "lonely/only.txt": "only\n",
        },
    )
    return repo, sh_git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_clean_merge_gives_the_tree_git_gives(tmp_path: Path, case: str) -> None:
    repo, base = _repo(tmp_path)
    tip_files, head_files = CASES[case]
    tip = _commit(repo, base, "tip", tip_files)
    head = _commit(repo, base, "head", head_files)
    clean, tree = _git_merge(repo, tip, head)
    assert clean
    assert inproc.merge_trees(repo, tip, head) == tree
    assert inproc.merge_trees(repo, head, tip) == _git_merge(repo, head, tip)[1]


@pytest.mark.parametrize("case", sorted(GIT_DECIDES))
def test_what_both_sides_changed_is_left_to_git(tmp_path: Path, case: str) -> None:
    repo, base = _repo(tmp_path)
    tip_files, head_files = GIT_DECIDES[case]
    tip = _commit(repo, base, "tip", tip_files)
    head = _commit(repo, base, "head", head_files)
    assert inproc.merge_trees(repo, tip, head) is None


@pytest.mark.anyio
async def test_merge_tree_falls_back_to_git_for_a_conflict(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    tip = _commit(repo, base, "tip", {"src/one.txt": "tip\n"})
    head = _commit(repo, base, "head", {"src/one.txt": "head\n"})
    merge = await inproc.merge_tree(repo, tip, head)
    assert not merge.clean and merge.paths == ["src/one.txt"]


def test_commit_tree_and_compare_and_swap(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    tree = sh_git(repo, "rev-parse", f"{base}^{{tree}}")
    sha = inproc.commit_tree(
        repo, tree, [base], "landed\n\nFormicary-Task: t1\n", "w one", "w1@formicary.local"
    )
    shown = sh_git(repo, "log", "-1", "--format=%an <%ae>|%P|%B", sha)
    assert shown.startswith(f"w one <w1@formicary.local>|{base}|landed\n\nFormicary-Task: t1")
    sh_git(repo, "branch", "shared", base)
    assert inproc.compare_and_swap(repo, "refs/heads/shared", sha, base, "formicary: integrate")
    assert sh_git(repo, "rev-parse", "shared") == sha
    other = inproc.commit_tree(repo, tree, [sha], "second", "w", "w@x")
    assert not inproc.compare_and_swap(repo, "refs/heads/shared", other, base, "stale old value")
    assert sh_git(repo, "rev-parse", "shared") == sha
    (repo / ".git" / "refs" / "heads" / "shared.lock").write_text("")  # another process holds the ref
    assert not inproc.compare_and_swap(repo, "refs/heads/shared", other, sha, "locked")
    assert "formicary: integrate" in sh_git(repo, "reflog", "-1", "--format=%gs", "shared")


def test_commit_worktree_adds_everything_and_keeps_gitlinks(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    sh_git(repo, "update-index", "--add", "--cacheinfo", f"160000,{base},lib")
    sh_git(repo, "commit", "-q", "-m", "gitlink")
    wt = tmp_path / "wt"
    sh_git(repo, "worktree", "add", "-q", "-b", "task", str(wt), "main")
    git_dir = repo / ".git" / "worktrees" / "wt"
    assert inproc.commit_worktree(git_dir, "nothing", "w", "w@x") is None
    (wt / "lib").mkdir(exist_ok=True)
    (wt / "lib" / "planted.txt").write_text("not part of the gitlink\n")
    (wt / "src" / "one.txt").write_text("changed\n")
    (wt / "src" / "two.txt").unlink()
    (wt / "added" / "deep").mkdir(parents=True)
    (wt / "added" / "deep" / "f.txt").write_text("new\n")
    made = inproc.commit_worktree(git_dir, "  work  \n\n\n\nbody  \n\n", "w one", "w1@x")
    assert made is not None
    sha, paths = made
    assert sorted(paths) == ["added/deep/f.txt", "src/one.txt", "src/two.txt"]
    assert sh_git(repo, "rev-parse", "task") == sha
    assert sh_git(repo, "ls-tree", sha, "lib").startswith("160000 commit " + base)
    assert sh_git(repo, "cat-file", "commit", sha).endswith("\n\n  work\n\nbody")  # as `commit -m` cleans it
    assert sh_git(wt, "status", "--porcelain", "--untracked-files=no") == ""  # the index was written


def test_libgit2_reads_no_global_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's ~/.gitconfig (here a planted fsmonitor and identity) is not what libgit2 reads."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[core]\n\tfsmonitor = /bin/false\n[user]\n\tname = Operator Global\n")
    monkeypatch.setenv("HOME", str(home))
    repo, _ = _repo(tmp_path)
    with inproc.repository(repo) as handle:
        config = {entry.name: entry.value for entry in handle.config}
    assert "core.fsmonitor" not in config
    assert config.get("user.name") == "Test Operator"  # the repository's own config is read
    assert os.listdir(inproc.private_home()) == []


def test_commit_worktree_where_a_file_becomes_a_folder(tmp_path: Path) -> None:
    repo, _ = _repo(tmp_path)
    wt = tmp_path / "wt"
    sh_git(repo, "worktree", "add", "-q", "-b", "task", str(wt), "main")
    git_dir = repo / ".git" / "worktrees" / "wt"
    (wt / "src" / "one.txt").unlink()
    (wt / "src" / "one.txt").mkdir()
    (wt / "src" / "one.txt" / "inner.txt").write_text("now a folder\n")
    shutil.rmtree(wt / "src" / "deep")
    (wt / "src" / "deep").write_text("now a file\n")
    made = inproc.commit_worktree(git_dir, "reshape", "w", "w@x")
    assert made is not None
    assert sorted(made[1]) == ["src/deep", "src/deep/a/b.txt", "src/one.txt", "src/one.txt/inner.txt"]
    listing = sh_git(repo, "ls-tree", "-r", "--name-only", made[0]).splitlines()
    assert "src/one.txt/inner.txt" in listing and "src/deep" in listing and "src/one.txt" not in listing
    assert sh_git(wt, "status", "--porcelain") == ""


def test_a_batch_lands_in_order_and_leaves_out_what_git_must_merge_or_a_turn_holds(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    sh_git(repo, "branch", "shared", base)
    tree = sh_git(repo, "rev-parse", f"{base}^{{tree}}")
    a = _commit(repo, base, "a", {"a.txt": "A\n"})
    b = _commit(repo, base, "b", {"b.txt": "B\n"})
    refused = _commit(repo, base, "r", {"r.txt": "R\n"})
    conflict = _commit(repo, base, "c1", {"src/one.txt": "c1\n"})
    again = _commit(repo, base, "c2", {"src/one.txt": "c2\n"})
    hot = _commit(repo, base, "h", {"h.txt": "H\n"})
    batch = [
        Ask(a, "land a", "w", "w@x"),
        Ask(refused, "land r", "w", "w@x", lambda merged, now: False),
        Ask(b, "land b", "w", "w@x"),
    ]
    done, moved = land_batch(repo, "refs/heads/shared", base, tree, batch)
    assert moved is True and [d.result for d in done] == ["landed", "refused", "landed"]
    tip = sh_git(repo, "rev-parse", "shared")
    assert done[2].tip == tip and done[2].onto == done[0].tip == done[1].onto
    assert sh_git(repo, "log", "--format=%s", f"{base}..shared").splitlines() == ["land b", "land a"]
    assert sh_git(repo, "ls-tree", "--name-only", "shared").split() == [
        "README.md", "a.txt", "b.txt", "lonely", "src",
    ]  # fmt: skip
    now_tree = sh_git(repo, "rev-parse", "shared^{tree}")
    more = [
        Ask(conflict, "c1", "w", "w@x", task_id="t1"),
        Ask(again, "c2", "w", "w@x", task_id="t2"),  # src/one.txt changed on both sides: git decides
        Ask(hot, "h", "w", "w@x", task_id="t3"),  # h.txt is another task's turn
    ]
    done, moved = land_batch(repo, "refs/heads/shared", tip, now_tree, more, owners={"h.txt": "t9"})
    assert moved is True and [d.result for d in done] == ["landed", "slow", "held"]
    assert done[1].onto == done[0].tip == sh_git(repo, "rev-parse", "shared") and done[2].touched == ["h.txt"]
    assert sh_git(repo, "log", "--format=%s", f"{tip}..shared").splitlines() == ["c1"]
    stale = land_batch(repo, "refs/heads/shared", base, tree, batch[:1])
    assert stale[1] is False and sh_git(repo, "rev-parse", "shared") == done[0].tip  # the CAS refuses


def test_git_s_merge_made_outside_lands_onto_a_newer_tip_as_its_change(tmp_path: Path) -> None:
    """A request git merged onto an earlier tip (both sides edited one file, apart) lands later as that merge's
    change, put onto the tip as it is then; no git process in the batch."""
    repo, base = _repo(tmp_path)
    lines = "".join(f"{n}\n" for n in range(1, 9))
    t1 = _commit(repo, base, "shared", {"m.txt": lines})
    head = _commit(repo, t1, "task", {"m.txt": lines.replace("1\n", "one\n", 1)})
    t2 = _commit(repo, t1, "shared", {"m.txt": lines.replace("8\n", "eight\n")})
    t2_tree = sh_git(repo, "rev-parse", f"{t2}^{{tree}}")
    done, moved = land_batch(repo, "refs/heads/shared", t2, t2_tree, [Ask(head, "t", "w", "w@x")])
    assert [d.result for d in done] == ["slow"] and done[0].onto == t2 and moved is None
    clean, merged_tree = _git_merge(repo, t2, head)
    assert clean
    t3 = _commit(repo, t2, "shared", {"q.txt": "Q\n"})
    t3_tree = sh_git(repo, "rev-parse", f"{t3}^{{tree}}")
    ask = Ask(head, "t", "w", "w@x", premerged=(t2, merged_tree))
    done, moved = land_batch(repo, "refs/heads/shared", t3, t3_tree, [ask])
    assert moved is True and [d.result for d in done] == ["landed"]
    assert sh_git(repo, "rev-parse", "shared^") == t3
    assert sh_git(repo, "show", "shared:m.txt").splitlines()[::7] == ["one", "eight"]
    assert sh_git(repo, "show", "shared:q.txt") == "Q"


def test_a_known_tip_replaces_the_merge_base_walk_only_on_a_linear_task_branch(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    landed = _commit(repo, base, "shared", {"a.txt": "A\n"})
    first = _commit(repo, base, "task", {"t.txt": "1\n"})
    second = _commit(repo, first, "task", {"t.txt": "2\n"})
    resolved = _commit(repo, second, "task", {})
    sh_git(repo, "checkout", "-q", "task")
    sh_git(repo, "merge", "-q", "--no-edit", "shared")  # a hand-back's merge of the tip
    sh_git(repo, "checkout", "-q", "main")
    merged = sh_git(repo, "rev-parse", "task")
    with inproc.repository(repo) as handle:
        oid = __import__("pygit2").Oid
        assert str(inproc._known_base(handle, oid(hex=second), {base, landed})) == base
        assert str(inproc._known_base(handle, oid(hex=resolved), {base})) == base
        assert inproc._known_base(handle, oid(hex=merged), {base, landed}) is None  # two parents: git decides
        assert inproc._known_base(handle, oid(hex=second), {landed}) is None  # nothing known on the way
        assert inproc._known_base(handle, oid(hex=second), ()) is None
    tree = sh_git(repo, "rev-parse", f"{landed}^{{tree}}")
    sh_git(repo, "branch", "-f", "shared", landed)
    done, moved = land_batch(
        repo, "refs/heads/shared", landed, tree, [Ask(second, "t", "w", "w@x")], known={base}
    )
    assert moved and done[0].tree == _git_merge(repo, landed, second)[1]
