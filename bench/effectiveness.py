"""Does the swarm get more done? formicary with 4 workers, with 1 worker, and mini-swe-agent on the same tasks.

A benchmark, not a CI test (it runs the real embedded model for ~25 minutes). Tasks are made by stubbing out
functions (body → ``raise NotImplementedError``, docstring kept) in two real, small, permissively licensed
libraries vendored under bench/libs/ with their own tests (see bench/libs/README.md). One llama-server (the
embedded model, 4 slots) serves every system; each system gets the same goal text and a fixed wall-time budget,
one after another, each on a fresh git repository of the stubbed libraries.

Figures, one JSON line: per system, the functions restored (the stub's own tests pass on the result: the shared
branch's tip for formicary, the working tree for mini-swe-agent; and calls no test makes answer as the original
function does) and ``tests_only``, those whose tests pass but whose held-out calls do not (code fitted to the
tests' cases, seen once: ``tableize()`` as ``.replace('childtoys', 'child_toys')``), tokens (from the server's
own counters, so every system is measured alike), model calls, wall time, gate refusals, and ``regressions``:
commits on the shared branch after which the check (the libraries' whole test suite) got worse.

mini-swe-agent is pinned (``mini-swe-agent==2.4.6``) and installed by this script into its own virtualenv
under the user cache (``--mini-venv``), then run with its text-based config pointed at the same endpoint.

Run: ``python -m bench.effectiveness [--budget 480] [--systems formicary4,formicary1,mini]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for formicary when run as a script

LIBS = Path(__file__).resolve().parent / "libs"
MINI_VERSION = "2.4.6"
SLOTS = 4
CTX = 8192


@dataclass(frozen=True)
class Stub:
    lib: str
    path: str  # relative to the bench repository
    function: str
    tests: str  # test file relative to the bench repository
    select: str  # pytest -k expression choosing the function's own tests
    module: str  # the module to import it from
    held_out: tuple[str, ...]  # calls no test makes: a restored function answers them as the original does


STUBS = [
    Stub("inflection", "inflection/inflection/__init__.py", "dasherize", "inflection/test_inflection.py", "dasherize",
         "inflection", ("dasherize('big_red_dog')", "dasherize('a_b')")),
    Stub("inflection", "inflection/inflection/__init__.py", "ordinal", "inflection/test_inflection.py", "ordinal",
         "inflection", ("ordinal('21')", "ordinal(112)", "ordinal(-3)", "ordinal('1000')")),
    Stub("inflection", "inflection/inflection/__init__.py", "tableize", "inflection/test_inflection.py", "tableize",
         "inflection", ("tableize('ItemCategory')", "tableize('MousePad')", "tableize('big_box')")),
    Stub("webcolors", "webcolors/src/webcolors/_normalization.py", "_normalize_integer_rgb",
         "webcolors/tests/test_normalization.py", "normalize_integer", "webcolors._normalization",
         ("_normalize_integer_rgb(300)", "_normalize_integer_rgb(-5)", "_normalize_integer_rgb(77)")),
    Stub("webcolors", "webcolors/src/webcolors/_conversion.py", "hex_to_rgb",
         "webcolors/tests/test_conversion.py", "hex_to_rgb", "webcolors._conversion",
         ("hex_to_rgb('#abc')", "hex_to_rgb('#123456')", "hex_to_rgb('#ABCDEF')")),
    Stub("webcolors", "webcolors/src/webcolors/_conversion.py", "rgb_to_hex",
         "webcolors/tests/test_conversion.py", "rgb_to_hex", "webcolors._conversion",
         ("rgb_to_hex((1, 2, 3))", "rgb_to_hex((255, 128, 0))")),
]  # fmt: skip
PYTHONPATH = ("inflection", "webcolors/src")
"""Where the libraries import from, relative to a tree (the vendored originals or a result)."""

PYTEST_INI = """[pytest]
pythonpath = inflection webcolors/src
testpaths = inflection webcolors/tests
addopts = -p no:cacheprovider
"""
PYTHON = sys.executable
"""This interpreter (it has pytest): the check of every system, since the machine's ``python3`` may lack it."""
CHECK = f"{PYTHON} -m pytest -q"


def goal_text() -> str:
    parts = [
        f"Make every test pass (`{CHECK}`). Six functions are stubs that raise NotImplementedError; "
        "each is specified by its docstring and its tests, and can be finished by rewriting only that function:"
    ]
    for s in STUBS:
        parts.append(f"- `{s.function}()` in `{s.path}` (tests in `{s.tests}`)")
    parts.append("Do not edit the test files or the functions that already work.")
    return "\n".join(parts)


# -- the task repository ----------------------------------------------------------------------------


def stub_out(source: str, name: str) -> str:
    """``source`` with function ``name``'s body replaced by ``raise NotImplementedError`` (docstring kept)."""
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = source.split("\n")
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    first_code = body[1] if has_doc and len(body) > 1 else (None if has_doc else body[0])
    indent = " " * body[0].col_offset
    start = (first_code.lineno - 1) if first_code is not None else node.end_lineno
    out = lines[:start] + [f"{indent}raise NotImplementedError"] + lines[node.end_lineno :]
    return "\n".join(out)


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    res = subprocess.run(["git", "-C", str(cwd), *ident, *args], capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


def make_task_repo(dest: Path) -> Path:
    """A fresh repository of the vendored libraries with the stubs in place, committed on ``main``."""
    for lib in ("inflection", "webcolors"):
        shutil.copytree(LIBS / lib, dest / lib, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "pytest.ini").write_text(PYTEST_INI)
    (dest / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n*.pyc\n")
    for stub in STUBS:
        path = dest / stub.path
        path.write_text(stub_out(path.read_text(), stub.function))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "Six functions stubbed out")
    return dest


# -- measuring a result ----------------------------------------------------------------------------


def pytest_run(tree: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    try:
        res = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=tree, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return res.returncode, res.stdout + res.stderr


def badness(tree: Path) -> int:
    """How bad the check is on ``tree``: failing + erroring tests; a suite that does not collect is worst."""
    code, out = pytest_run(tree)
    if code == 0:
        return 0
    if code not in (1,):  # interrupted, collection errors, usage error, timeout
        return 10**6
    numbers = re.findall(r"(\d+) (failed|error)", out)
    return sum(int(n) for n, _ in numbers) or 1


HELD_OUT = """
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[3])
module = importlib.import_module(sys.argv[1])
out = []
for call in json.loads(sys.argv[2]):
    try:
        out.append(repr(eval(call, vars(module))))
    except Exception as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def held_out(tree: Path, stub: Stub) -> list[str] | None:
    """What ``stub``'s held-out calls return on ``tree`` (their reprs, or the exception's name); None when the
    module does not import."""
    paths = json.dumps([str(tree / p) for p in PYTHONPATH])
    args = [sys.executable, "-I", "-c", HELD_OUT, stub.module, json.dumps(stub.held_out), paths]
    try:
        res = subprocess.run(args, cwd=tree, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(res.stdout) if res.returncode == 0 else None


def restored(tree: Path) -> tuple[list[str], list[str]]:
    """(the stubs whose own tests pass on ``tree`` and whose held-out calls answer as the original's do, those
    whose tests pass but held-out calls do not: code fitted to the tests, not restored)."""
    passing = [s for s in STUBS if pytest_run(tree, s.tests, "-k", s.select)[0] == 0]
    general = [s.function for s in passing if held_out(tree, s) == held_out(LIBS, s)]
    return general, [s.function for s in passing if s.function not in general]


def checkout(repo: Path, rev: str, into: Path) -> Path:
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def regressions(repo: Path, base: str, branch: str, scratch: Path) -> tuple[int, int, list[int]]:
    """(commits on the branch's first-parent line, commits after which the check got worse, badness line)."""
    commits = git(repo, "rev-list", "--first-parent", "--reverse", f"{base}..{branch}").split()
    line = [badness(checkout(repo, base, scratch))]
    worse = 0
    for sha in commits:
        line.append(badness(checkout(repo, sha, scratch)))
        worse += line[-1] > line[-2]
    return len(commits), worse, line


# -- the endpoint ----------------------------------------------------------------------------------


def server_tokens(root_url: str) -> tuple[int, int]:
    """(prompt tokens processed, tokens generated) so far, from llama-server's ``/metrics`` counters."""
    import httpx

    text = httpx.get(f"{root_url}/metrics", timeout=10).text
    values = {}
    for name in ("prompt_tokens_total", "tokens_predicted_total"):
        m = re.search(rf"^llamacpp:{name} (\S+)", text, re.M)
        values[name] = int(float(m.group(1))) if m else 0
    return values["prompt_tokens_total"], values["tokens_predicted_total"]


# -- the systems -----------------------------------------------------------------------------------


async def run_formicary(base_url: str, repo: Path, workers: int, budget: float, db: Path) -> dict:
    import anyio

    from formicary.agents.session.engine import Engine
    from formicary.agents.settings import Settings
    from formicary.store import db as store_db

    settings = Settings.model_validate(
        {
            "model": {"base_url": base_url, "llama_cpp": True, "max_concurrency": SLOTS, "context_length": CTX,
                      "max_tokens": 1024, "timeout": 600},
            "limits": {"workers": workers, "wall_time": budget},
            "check_command": CHECK,
        }
    )  # fmt: skip
    engine = Engine.create(settings, repo, goal_text(), db_path=db)
    started = time.monotonic()
    with anyio.move_on_after(budget + 120):
        outcome = await engine.run()
    wall = time.monotonic() - started
    conn = store_db.connect(db)
    sid = engine.session_id
    calls = list(conn.query("SELECT role, queue_ms, prompt_ms, cached_tokens, prompt_tokens FROM llm_calls "
                            "WHERE session_id = ?", [sid]))  # fmt: skip
    refusals = conn.execute(
        "SELECT COUNT(*) FROM events WHERE session_id = ? AND kind = 'gate' AND data LIKE '%\"verdict\": \"refused\"%'",
        [sid],
    ).fetchone()[0]
    roles: dict[str, int] = {}
    for c in calls:
        roles[c["role"]] = roles.get(c["role"], 0) + 1
    cached = sum(c["cached_tokens"] or 0 for c in calls)
    prompt = sum(c["prompt_tokens"] or 0 for c in calls)
    return {
        "branch": engine.git.branch,
        "base": engine.git.base_sha,
        "outcome": f"{outcome.status}: {outcome.reason}" if "outcome" in locals() else "cut off",
        "wall_s": round(wall, 1),
        "calls": len(calls),
        "calls_by_role": roles,
        "gate_refusals": refusals,
        "prompt_cache_hit": round(cached / prompt, 3) if prompt else None,
        "queue_ms_median": _median([c["queue_ms"] for c in calls if c["queue_ms"] is not None]),
    }


def _median(values: list[float]) -> float | None:
    import statistics

    return round(statistics.median(values), 1) if values else None


def mini_venv(path: Path) -> Path:
    """mini-swe-agent's own virtualenv (made and installed from the package index on first use)."""
    binary = path / "bin" / "mini"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "pip"), "install", "-q", f"mini-swe-agent=={MINI_VERSION}"], check=True
        )
    return binary


MINI_CONFIG = """model:
  model_name: "openai/qwen2.5-coder-1.5b-instruct"
  model_class: litellm_textbased
  cost_tracking: ignore_errors
  model_kwargs:
    api_base: "{base_url}"
    api_key: "not-needed"
    temperature: 0.2
    max_tokens: 1024
    drop_params: true
agent:
  mode: yolo
  confirm_exit: false
  step_limit: 0
  cost_limit: 0
  max_consecutive_format_errors: 0
environment:
  environment_class: bubblewrap
  cwd: "{repo}"
  timeout: 120
  wrapper_args: ["--unshare-user-try", "--unshare-net", "--die-with-parent", "--ro-bind", "/usr", "/usr",
    "--ro-bind", "/bin", "/bin", "--ro-bind", "/lib", "/lib", "--ro-bind", "/lib64", "/lib64", "--ro-bind",
    "/etc", "/etc", "--ro-bind", "{prefix}", "{prefix}", "--ro-bind", "{base}", "{base}", "--tmpfs", "/tmp",
    "--proc", "/proc", "--dev", "/dev", "--new-session",
    "--setenv", "PATH", "{bindir}:/usr/local/bin:/usr/sbin:/usr/bin:/bin"]
"""
# mini-swe-agent's own bubblewrap environment (its default runs commands unconfined), with the network off
# like formicary's sandbox. Its default gives up after 3 replies in a row without exactly one command block
# (RepeatedFormatError): with the 1.5B model that ended a run at 155 s of 480, so here it is told the format
# error and goes on, like formicary's workers, until the budget ends.


def run_mini(binary: Path, base_url: str, repo: Path, budget: float, work: Path) -> dict:
    config = work / "mini-bench.yaml"
    config.write_text(
        MINI_CONFIG.format(
            base_url=base_url,
            repo=repo,
            prefix=sys.prefix,
            base=sys.base_prefix,
            bindir=Path(PYTHON).parent,
        )
    )
    trajectory = work / "mini-trajectory.json"
    env = {**os.environ, "MSWEA_CONFIGURED": "true", "MSWEA_COST_TRACKING": "ignore_errors",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENAI_API_KEY": "not-needed"}  # fmt: skip
    command = [str(binary), "-c", "mini_textbased.yaml", "-c", str(config), "-t", goal_text(), "-y",
               "--exit-immediately", "-o", str(trajectory)]  # fmt: skip
    started = time.monotonic()
    log = (work / "mini.log").open("w")
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout=budget)
        ended = "finished"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        ended = "budget"
    log.close()
    wall = time.monotonic() - started
    calls, exit_status = 0, ended
    if trajectory.exists():
        data = json.loads(trajectory.read_text())
        info = data.get("info") or {}
        calls = (info.get("model_stats") or {}).get("api_calls", 0)
        exit_status = info.get("exit_status") or ended
    return {"wall_s": round(wall, 1), "calls": calls, "outcome": exit_status, "gate_refusals": 0}


# -- main ------------------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def main_async(args: argparse.Namespace) -> dict:
    from formicary.agents.model.server import EmbeddedServer

    systems = args.systems.split(",")
    binary = mini_venv(args.mini_venv) if "mini" in systems else None
    work = Path(tempfile.mkdtemp(prefix="formicary-effectiveness-"))
    result: dict = {"bench": "effectiveness", "budget_s": args.budget, "stubs": len(STUBS), "slots": SLOTS,
                    "cores": os.cpu_count(), "load_before": load_average(), "systems": {}}  # fmt: skip
    server = EmbeddedServer(ctx=CTX, parallel=SLOTS, extra_args=("--metrics",))
    await server.start()
    try:
        for name in systems:
            repo = make_task_repo(work / name / "repo")
            before = server_tokens(server.root_url)
            if name.startswith("formicary"):
                workers = int(name.removeprefix("formicary") or 4)
                info = await run_formicary(server.base_url, repo, workers, args.budget, work / name / "f.db")
                tree = checkout(repo, info["branch"], work / name / "result")
                commits, worse, line = regressions(
                    repo, info.pop("base"), info.pop("branch"), work / name / "scratch"
                )
                info.update(commits=commits, regressions=worse, check_badness=line)
            else:
                info = run_mini(binary, server.base_url, repo, args.budget, work / name)
                tree = repo
                info.update(
                    commits=0,
                    regressions=int(badness(tree) > badness(checkout(repo, "HEAD", work / name / "base"))),
                )
            after = server_tokens(server.root_url)
            info["tokens"] = {"prompt": after[0] - before[0], "generated": after[1] - before[1]}
            info["restored"], info["tests_only"] = restored(tree)
            info["restored_n"] = len(info["restored"])
            info["load_after"] = load_average()
            result["systems"][name] = info
            print(json.dumps({"progress": name, **info}), file=sys.stderr, flush=True)
    finally:
        await server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    got = {k: v["restored_n"] for k, v in result["systems"].items()}
    swarm = got.get("formicary4")
    if swarm is not None:
        result["targets"] = {
            "two_thirds": swarm >= 2 * len(STUBS) / 3,
            "vs_mini_2x": ("mini" in got) and swarm >= 2 * got["mini"] and swarm > 0,
            "vs_single_1_5x": ("formicary1" in got) and swarm >= 1.5 * got["formicary1"] and swarm > 0,
            "no_regressions": all(v.get("regressions", 0) == 0 for v in result["systems"].values()),
        }
    if args.keep:
        result["work"] = str(work)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budget", type=float, default=480.0, help="wall-time seconds per system (default 480)"
    )
    parser.add_argument(
        "--systems", default="formicary4,formicary1,mini", help="comma-separated, run in order"
    )
    parser.add_argument("--mini-venv", type=Path, default=None, help="mini-swe-agent's virtualenv")
    parser.add_argument("--keep", action="store_true", help="keep the repositories and records")
    args = parser.parse_args()
    if args.mini_venv is None:
        from formicary.agents import paths

        args.mini_venv = paths.cache_dir() / "bench" / f"mini-swe-agent-{MINI_VERSION}"
    import anyio

    print(json.dumps(anyio.run(main_async, args)))


if __name__ == "__main__":
    main()
