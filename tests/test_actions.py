"""The worker's actions: schema, parsing, file actions in a real git worktree, and adversarial paths.

``test_escape_*`` try every adversarial path with every file action and check that each is refused and that
nothing outside the worktree changed. The figures for docs/reliability.md are :data:`PATHS_TRIED` and
:data:`PATH_ATTEMPTS` (printed by ``test_escape_figures``); escapes are 0 when the suite passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from formicary.agents.tools import actions as act
from formicary.agents.tools.actions import (
    ACTION_SCHEMA,
    ActionContext,
    ActionReply,
    FormatError,
    Observation,
    execute,
    parse_action,
    parse_reply,
)
from formicary.agents.tools.sandbox import SandboxOptions

GIT_ENV = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
IDENTITY = ("-c", "user.name=Test Operator", "-c", "user.email=operator@example.com")
PROBE = "formicary-escape-probe"
"""A file name that must never appear outside the worktree (used instead of real system files for writes)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def git(path: Path, *args: str) -> str:
    res = subprocess.run(
        ["git", "-C", str(path), *IDENTITY, *args], env=GIT_ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def make_worktree(tmp: Path) -> tuple[Path, Path, Path]:
    """``(main, wt, outside)``: a repository, a linked worktree of it (.git is a file there), a folder beside."""
    main, wt, outside = tmp / "main", tmp / "wt", tmp / "outside"
    main.mkdir()
    git(main, "init", "-q", "-b", "main")
    (main / "README.md").write_text("# demo\nhello world\n")
    (main / "src").mkdir()
    (main / "src" / "app.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    git(main, "add", "-A")
    git(main, "commit", "-q", "-m", "initial")
    git(main, "worktree", "add", "-q", "-b", "work", str(wt))
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    return main, wt, outside


def plant_links(wt: Path, main: Path, outside: Path) -> None:
    """Symlinks (and a hard link) that lead out of the worktree or into .git."""
    links = {
        "link_etc": "/etc",
        "link_etc_probe": f"/etc/{PROBE}",
        "link_outside_dir": str(outside),
        "link_secret": str(outside / "secret.txt"),
        "chain1": "chain2",
        "chain2": "chain3",
        "chain3": str(outside / "secret.txt"),
        "dangling_out": str(outside / PROBE),
        "link_rel_up": "../outside",
        "link_git": ".git",
        "link_main": str(main),
        "link_main_git_config": str(main / ".git" / "config"),
        "link_proc": "/proc/self/root/etc",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "inside_link": "README.md",
    }
    for name, target in links.items():
        os.symlink(target, wt / name)
    (wt / "sub").mkdir()
    os.symlink("../../outside/secret.txt", wt / "sub" / "link_up")
    os.link(outside / "secret.txt", wt / "hard")


ADVERSARIAL_PATHS = [
    f"/etc/{PROBE}",
    "/etc/passwd",
    "{outside}/secret.txt",
    "{main}/README.md",
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "src/../../outside/secret.txt",
    "..",
    "./..",
    "src/../..",
    " /etc/passwd",
    f"link_etc/{PROBE}",
    "link_etc_probe",
    "link_outside_dir/secret.txt",
    "link_outside_dir",
    "link_secret",
    "chain1",
    "dangling_out",
    "link_rel_up/secret.txt",
    "sub/link_up",
    f"link_proc/{PROBE}",
    "link_main/README.md",
    "link_main_git_config",
    ".git",
    ".git/config",
    ".GIT/HEAD",
    "./.git",
    ".git/",
    "src/.Git/config",
    "link_git",
    "link_git/config",
    "evil\x00.txt",
    "src/evil\x00/../../x",
    "a" * 300,
    "/".join(["d"] * 2100),
    "hard",
    "loop_a",
]
PATHS_TRIED = len(ADVERSARIAL_PATHS)


def _actions_for(path: str) -> list[act._Action]:
    return [
        act.ReadFile(name="read_file", path=path),
        act.WriteFile(name="write_file", path=path, content="pwned\n"),
        act.Replace(name="replace", path=path, search="TOP", replace="PWNED"),
        act.ListFiles(name="list_files", path=path),
        act.Search(name="search", pattern="SECRET", path=path),
    ]


PATH_ATTEMPTS = PATHS_TRIED * len(_actions_for("x"))


def _snapshot(*folders: Path) -> dict[str, str]:
    """Digest of every file under ``folders`` (not following symlinks), to prove nothing outside changed."""
    out: dict[str, str] = {}
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    main, wt, outside = make_worktree(tmp_path)
    plant_links(wt, main, outside)
    return main, wt, outside


def ctx_for(wt: Path, **options: object) -> ActionContext:
    return ActionContext(root=wt, sandbox=SandboxOptions(**options))  # type: ignore[arg-type]


# -- the schema and parsing ------------------------------------------------------------------------------


def test_schema_is_strict_and_grammar_friendly() -> None:
    text = json.dumps(ACTION_SCHEMA)
    assert "$ref" not in text and '"default":' not in text and "oneOf" not in text
    assert ACTION_SCHEMA["required"] == ["thought", "action"]
    variants = ACTION_SCHEMA["properties"]["action"]["anyOf"]
    assert [v["properties"]["name"]["enum"][0] for v in variants] == list(act.ACTIONS)
    for variant in variants:
        assert variant["additionalProperties"] is False
        assert variant["required"] == list(variant["properties"])
        assert list(variant["properties"])[0] == "name"
        for spec in variant["properties"].values():
            assert spec["type"] in ("string", "integer")
    assert ActionReply.model_json_schema() == ACTION_SCHEMA
    assert act.reply_schema() is ActionReply


def test_parse_every_action_and_arguments() -> None:
    samples = {
        "list_files": {"path": "."},
        "read_file": {"path": "a.py", "start": 2, "end": 5},
        "write_file": {"path": "a.py", "content": "x = 1\n"},
        "replace": {"path": "a.py", "search": "1", "replace": "2"},
        "search": {"pattern": "def ", "path": "src"},
        "run": {"command": "pytest -q", "timeout": 30},
        "finish": {"summary": "done", "notes": ""},
    }
    for name, fields in samples.items():
        reply = parse_reply(json.dumps({"thought": "t", "action": {"name": name, **fields}}))
        assert reply.thought == "t" and reply.action.name == name
        assert reply.action.arguments() == fields


def test_parse_lenient_forms() -> None:
    fenced = '```json\n{"thought": "x", "action": {"name": "read_file", "path": "a.py"}}\n```'
    assert parse_action(fenced) == act.ReadFile(name="read_file", path="a.py", start=0, end=0)
    assert parse_action('{"name": "run", "command": "ls"}') == act.Run(name="run", command="ls", timeout=0)
    assert parse_action('Sure! {"action": "list_files", "path": "src"}').path == "src"  # type: ignore[union-attr]
    assert ActionReply.model_validate_json('{"name": "finish", "summary": "ok"}').action.name == "finish"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("", "empty"),
        ("I will read the file", "not valid JSON"),
        ('{"thought": "x", "action": {"name": "read_file", "path": "a.py"', "not valid JSON"),
        ("[1, 2]", "no action object"),
        ('{"thought": "x"}', "no action object"),
        ('{"action": {"name": "edit_file", "path": "a"}}', "Unknown action 'edit_file'"),
        ('{"action": {"path": "a"}}', "Unknown action None"),
        ('{"action": {"name": "read_file"}}', "path: Field required"),
        ('{"action": {"name": "read_file", "path": "a", "start": "ten"}}', "start"),
        ('{"action": {"name": "write_file", "path": "a"}}', "write_file takes: path, content"),
    ],
)
def test_parse_errors_tell_the_model_what_to_fix(reply: str, expected: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_action(reply)
    assert expected in info.value.observation


# -- legitimate file actions ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_file_numbers_lines_and_ranges(tree) -> None:
    _main, wt, _outside = tree
    ctx = ctx_for(wt)
    obs = await execute(act.ReadFile(name="read_file", path="./src//app.py"), ctx)
    assert not obs.error and obs.exit_code is None and obs.duration_ms > 0
    assert obs.text.splitlines()[0] == "src/app.py (lines 1-6 of 6)"
    assert "     2\t    return a + b" in obs.text
    part = await execute(act.ReadFile(name="read_file", path="src/app.py", start=5, end=99), ctx)
    assert "(lines 5-6 of 6)" in part.text and "return a + b" not in part.text
    beyond = await execute(act.ReadFile(name="read_file", path="src/app.py", start=40), ctx)
    assert beyond.error and "only 6 lines" in beyond.text
    missing = await execute(act.ReadFile(name="read_file", path="nope.py"), ctx)
    assert missing.error and missing.text == "error: nope.py does not exist" and str(wt) not in missing.text
    folder = await execute(act.ReadFile(name="read_file", path="src"), ctx)
    assert folder.error and "is a directory" in folder.text


@pytest.mark.anyio
async def test_read_file_caps_and_binary(tree) -> None:
    _main, wt, _outside = tree
    (wt / "big.txt").write_text("".join(f"line {n}\n" for n in range(5000)))
    (wt / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    ctx = ctx_for(wt, output_cap=1000)
    big = await execute(act.ReadFile(name="read_file", path="big.txt"), ctx)
    assert len(big.text) < 1300 and "read from start=" in big.text
    blob = await execute(act.ReadFile(name="read_file", path="blob.bin"), ctx)
    assert "binary file (300 bytes)" in blob.text


@pytest.mark.anyio
async def test_write_file_creates_parents_and_allows_git_lookalikes(tree) -> None:
    _main, wt, _outside = tree
    ctx = ctx_for(wt)
    for rel in [
        "new/deep/dir/file.txt",
        ".gitignore",
        ".github/workflows/ci.yml",
        "git/notes.txt",
        "docs/.git-notes",
        "docs/my file.md",
        "docs/ünïcode.md",
        "x" * 255,
    ]:
        obs = await execute(act.WriteFile(name="write_file", path=rel, content="hi\n"), ctx)
        assert not obs.error, (rel, obs.text)
        assert (wt / rel).read_text() == "hi\n"
    again = await execute(act.WriteFile(name="write_file", path="README.md", content="new\n"), ctx)
    assert again.text == "wrote README.md (1 lines, 4 bytes)"
    through = await execute(act.WriteFile(name="write_file", path="inside_link", content="via link\n"), ctx)
    assert not through.error and (wt / "README.md").read_text() == "via link\n"
    under_file = await execute(act.WriteFile(name="write_file", path="README.md/x", content=""), ctx)
    assert under_file.error


@pytest.mark.anyio
async def test_replace_must_match_exactly_once(tree) -> None:
    _main, wt, _outside = tree
    ctx = ctx_for(wt)
    none = await execute(act.Replace(name="replace", path="src/app.py", search="mul(", replace="x"), ctx)
    assert none.error and "occurs 0 times" in none.text
    twice = await execute(act.Replace(name="replace", path="src/app.py", search="(a, b)", replace="()"), ctx)
    assert twice.error and "occurs 2 times" in twice.text
    empty = await execute(act.Replace(name="replace", path="src/app.py", search="", replace="x"), ctx)
    assert empty.error
    once = await execute(
        act.Replace(name="replace", path="src/app.py", search="return a - b", replace="return b - a"), ctx
    )
    assert once.text == "replaced 1 occurrence in src/app.py at line 6"
    assert "return b - a" in (wt / "src" / "app.py").read_text()


@pytest.mark.anyio
async def test_list_and_search_skip_git_and_do_not_follow_links(tree) -> None:
    _main, wt, _outside = tree
    (wt / "node_modules" / "pkg").mkdir(parents=True)
    (wt / "node_modules" / "pkg" / "index.js").write_text("SECRET\n")
    (wt / "blob.bin").write_bytes(b"SECRET\x00")
    ctx = ctx_for(wt)
    listing = (await execute(act.ListFiles(name="list_files", path="."), ctx)).text.splitlines()
    assert "README.md" in listing and "src/" in listing and "src/app.py" in listing
    assert "node_modules/ (not expanded)" in listing
    assert not any(line.lower().startswith(".git") for line in listing)
    assert any(line.startswith("link_outside_dir -> ") for line in listing)
    assert not any("secret.txt" in line and "->" not in line for line in listing)
    found = await execute(act.Search(name="search", pattern=r"def \w+\(", path="."), ctx)
    assert found.text.splitlines() == ["src/app.py:1: def add(a, b):", "src/app.py:5: def sub(a, b):"]
    nothing = await execute(act.Search(name="search", pattern="SECRET", path="."), ctx)
    assert nothing.text.startswith("no matches")
    literal = await execute(act.Search(name="search", pattern="add(", path="src"), ctx)
    assert "searched for the literal text" in literal.text and "src/app.py:1:" in literal.text
    modules = await execute(act.ListFiles(name="list_files", path="node_modules"), ctx)
    assert "node_modules/pkg/index.js" in modules.text


@pytest.mark.anyio
async def test_search_caps_matches(tree) -> None:
    _main, wt, _outside = tree
    (wt / "many.txt").write_text("hit\n" * 500)
    obs = await execute(act.Search(name="search", pattern="hit", path="many.txt"), ctx_for(wt))
    assert len(obs.text.splitlines()) == act.confine.MAX_SEARCH_MATCHES + 1 and "more than" in obs.text


@pytest.mark.anyio
async def test_execute_never_raises_on_raw_or_strange_input(tree) -> None:
    _main, wt, _outside = tree
    ctx = ctx_for(wt)
    bad = await execute("not json", ctx)
    assert isinstance(bad, Observation) and bad.error and "not valid JSON" in bad.text
    done = await execute(
        '{"thought": "", "action": {"name": "finish", "summary": "all good", "notes": ""}}', ctx
    )
    assert done.text == "finished: all good" and not done.error
    negative = await execute(act.ReadFile(name="read_file", path="README.md", start=-5, end=-1), ctx)
    assert not negative.error and "(lines 1-2 of 2)" in negative.text


@pytest.mark.anyio
async def test_escape_fifo_and_special_files_do_not_hang(tree) -> None:
    _main, wt, _outside = tree
    os.mkfifo(wt / "fifo")
    ctx = ctx_for(wt)
    for action in _actions_for("fifo")[:3]:
        obs = await execute(action, ctx)
        assert obs.error and "not a regular file" in obs.text


# -- adversarial paths --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_escape_adversarial_paths_are_refused(tree) -> None:
    main, wt, outside = tree
    before = _snapshot(outside, main)
    etc_before = sorted(os.listdir("/etc"))
    ctx = ctx_for(wt)
    attempts = 0
    for template in ADVERSARIAL_PATHS:
        path = template.replace("{outside}", str(outside)).replace("{main}", str(main))
        for action in _actions_for(path):
            attempts += 1
            obs = await execute(action, ctx)
            assert obs.error, (path, action.name, obs.text)
            assert obs.text.startswith("refused"), (path, action.name, obs.text)
            assert "TOP SECRET" not in obs.text and "root:" not in obs.text, (path, action.name)
    assert attempts == PATH_ATTEMPTS
    assert _snapshot(outside, main) == before
    assert not (outside / PROBE).exists() and not os.path.lexists(f"/etc/{PROBE}")
    assert sorted(os.listdir("/etc")) == etc_before
    assert (wt / ".git").read_text().startswith("gitdir: ")


@pytest.mark.anyio
async def test_escape_refusals_say_why(tree) -> None:
    _main, wt, _outside = tree
    ctx = ctx_for(wt)

    async def text(path: str) -> str:
        return (await execute(act.ReadFile(name="read_file", path=path), ctx)).text

    assert (await text("/etc/passwd")).startswith("refused: path escapes the worktree (absolute paths")
    assert (await text("../x")).startswith("refused: path escapes the worktree ('..'")
    assert (await text("link_secret")).startswith("refused: path escapes the worktree (through a symlink)")
    assert (await text(".git/config")) == "refused: .git is off limits"
    assert (await text("link_git")) == "refused: .git is off limits (through a symlink)"
    assert (await text("a\x00b")) == "refused: path contains a NUL byte"
    assert (
        "hard links" in (await execute(act.WriteFile(name="write_file", path="hard", content=""), ctx)).text
    )


def test_escape_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the numbers docs/reliability.md quotes (run with ``-s`` to see them)."""
    with capsys.disabled():
        print(
            f"\nadversarial paths: {PATHS_TRIED} paths x 5 file actions = {PATH_ATTEMPTS} attempts, 0 escapes"
        )
    assert PATHS_TRIED >= 20
