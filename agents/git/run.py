"""The one way formicary starts git: hardened options, an allowlisted environment, a few parsers.

Nothing else in the product starts git: :func:`git` (async) and :func:`git_sync` (the TUI's blocking reads)
both build their command line with :func:`git_argv` and their environment with :func:`git_env`. Worktrees are
written by agents, so host git must never run anything found there: hooks, fsmonitor, a nested repository's
config, a rewritten ``.git`` file. See docs/reliability.md ("Threat model") for what each layer stops.

The landing hot path (a worker's commit, the merge onto the tip, commit-tree, the compare-and-swap) runs in
this process through libgit2 instead (:mod:`.inproc`), with the same trust boundary: no hooks, fsmonitor or
filter programs, and the private empty config folder defined here.

Why processes and not GitPython: GitPython is not thread-safe and ``IndexFile.add`` changes the process cwd.
Every call here passes ``cwd=`` (nothing ever chdirs), never prompts, and reads C-locale output. A git process
costs ~1.5 ms on an idle machine and far more on a busy one, so callers count them.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import RunVar

from ..tools import changes

# Options every git call gets. Agents never sign (no passphrase prompt); conflicts use the plain two-way marker
# style that :class:`formicary.agents.git.integration.Conflict` documents. The rest is the trust boundary: a
# worktree is written by agents, so nothing git could find in it may run on the host. Hooks point at an empty
# folder (a relative ``core.hooksPath`` from the repository's config would resolve inside the worktree), no
# fsmonitor, no submodule recursion or status inside submodules (a nested repository's config is read by the
# ``git status`` that git starts in it), no external diff and no signature check in ``log``.
_CONFIG = (
    "-c", "commit.gpgSign=false",
    "-c", "tag.gpgSign=false",
    "-c", "merge.conflictStyle=merge",
    "-c", "core.quotePath=false",
    "-c", "core.fsmonitor=false",
    "-c", "core.untrackedCache=false",
    "-c", "submodule.recurse=false",
    "-c", "diff.ignoreSubmodules=all",
    "-c", "status.submoduleSummary=false",
    "-c", "log.showSignature=false",
    "-c", "protocol.allow=never",
)  # fmt: skip

GIT_THREADS = 64  # git processes running at once (each is started and waited for by its own thread)
BACKGROUND_NICE = 10  # niceness of a worker's own git chores (see ``git(background=True)``)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class GitError(Exception):
    """A git operation failed; ``str(exc)`` is one line fit to print to the operator."""


GIT_FIXED_ENV = {
    "LC_ALL": "C",
    "LANG": "C",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",  # `git status` must never rewrite the operator's index
    "GIT_EDITOR": "true",
    "GIT_SEQUENCE_EDITOR": "true",
    "GIT_PAGER": "cat",
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "GIT_CONFIG_NOSYSTEM": "1",  # no /etc/gitconfig, no global config: only the repository's and ours
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
}
_PASSED_ENV = ("PATH", "TZ")
"""All that is taken from the operator's environment: nothing else (no API key) reaches a git process."""
_EXTRA_ALLOWED = re.compile(r"^GIT_(AUTHOR|COMMITTER)_(NAME|EMAIL|DATE)$|^GIT_INDEX_FILE$")
"""Variables a caller may add per call (an identity, a temporary index)."""


@dataclass(frozen=True)
class _Private:
    """The private folder git runs with: an empty HOME, an empty global config, an empty hooks folder."""

    home: str
    hooks: str
    config: str


_private: _Private | None = None
_private_lock = threading.Lock()


def _private_dir() -> _Private:
    """Made once per process, mode 0700, removed at exit; its folders stay empty (git writes nothing there)."""
    global _private
    with _private_lock:
        if _private is None or not os.path.isdir(_private.hooks):
            import atexit
            import shutil
            import tempfile

            base = tempfile.mkdtemp(prefix="formicary-git-")
            atexit.register(shutil.rmtree, base, True)
            home, hooks = os.path.join(base, "home"), os.path.join(base, "hooks")
            os.mkdir(home, 0o500)
            os.mkdir(hooks, 0o500)
            config = os.path.join(base, "gitconfig")
            with open(config, "w"):
                pass
            os.chmod(config, 0o400)
            _private = _Private(home, hooks, config)
        return _private


def private_home() -> str:
    """The empty private ``HOME`` git runs with (libgit2's config search paths point there too)."""
    return _private_dir().home


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git call: an allowlist, never the operator's own (which holds API keys).

    ``PATH`` and ``TZ`` from the process, the fixed quiet C-locale settings, a private empty ``HOME`` and
    global config, and from ``extra`` only identity and index variables.
    """
    private = _private_dir()
    env = {name: os.environ[name] for name in _PASSED_ENV if os.environ.get(name)}
    env.setdefault("PATH", os.defpath)
    env.update(GIT_FIXED_ENV)
    env["HOME"] = env["XDG_CONFIG_HOME"] = private.home
    env["GIT_CONFIG_GLOBAL"] = private.config
    if extra:
        for name, value in extra.items():
            if not _EXTRA_ALLOWED.match(name):
                raise ValueError(f"git environment variable {name} is not allowed")
            env[name] = value
    return env


_WORKTREE_GIT_DIRS: dict[str, str] = {}
"""Worktree folder → its git dir, for every worktree this process made (see :func:`register_worktree`)."""


def register_worktree(path: Path | str, git_dir: Path | str) -> None:
    """From now on, every git call with ``cwd=path`` names ``git_dir`` explicitly, whoever makes it."""
    _WORKTREE_GIT_DIRS[str(path)] = str(git_dir)


def forget_worktree(path: Path | str) -> None:
    _WORKTREE_GIT_DIRS.pop(str(path), None)


def git_argv(
    args: Iterable[str],
    git_dir: Path | str | None = None,
    work_tree: Path | str | None = None,
    cwd: Path | str | None = None,
) -> list[str]:
    """The full command line of a git call: hardened options first, then an explicit repository when given.

    ``git_dir`` (with ``work_tree``) makes git ignore the worktree's own ``.git`` file, which an agent's
    command could rewrite to point at a repository it built (with hooks and fsmonitor of its choosing). A
    ``cwd`` that is a registered worktree gets its git dir even when the caller did not name it.
    """
    argv = ["git", "-c", f"core.hooksPath={_private_dir().hooks}", *_CONFIG]
    if git_dir is None and cwd is not None and (known := _WORKTREE_GIT_DIRS.get(str(cwd))):
        git_dir, work_tree = known, cwd
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
    argv.extend(args)
    return argv


def identity_env(name: str, email: str) -> dict[str, str]:
    """Author and committer for one git call, without writing anyone's config."""
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


@dataclass(frozen=True)
class Identity:
    """Who a commit is by: always an agent of formicary, never the operator."""

    name: str
    email: str

    @classmethod
    def for_agent(cls, agent_id: str, role: str = "worker") -> Identity:
        return cls(f"formicary-{role}-{agent_id}", f"{agent_id}@formicary.local")

    def env(self) -> dict[str, str]:
        return identity_env(self.name, self.email)


@dataclass
class GitResult:
    rc: int
    out: str
    err: str


def check_name(value: str, what: str) -> str:
    """Session and task ids end up in branch and folder names: keep them plain."""
    if not _NAME_RE.match(value) or ".." in value or value.endswith((".", ".lock")):
        raise GitError(f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:  # git's own summary line is the useful one
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[0] if lines else ""


async def _run(
    args: tuple[str, ...],
    cwd: Path | str,
    env: Mapping[str, str] | None,
    input: bytes | None,
    background: bool = False,
    git_dir: Path | str | None = None,
) -> tuple[int, bytes, bytes]:
    """Start git and wait for it from a worker thread, never on the event loop.

    Why: starting a process blocks the starting thread until the child has exec'd (~3 ms here, far more on a
    busy machine), and asyncio's default child watcher starts and waits for a thread per process as well. On
    the event loop both stall every agent: a quarter of the loop's time at 256 workers (bench/efficiency.py).
    """
    lock, finished = threading.Lock(), threading.Event()
    state: dict[str, Any] = {"cancelled": False, "proc": None}

    def run() -> tuple[int, bytes, bytes]:
        try:
            with lock:  # a cancellation either comes before the start (no process) or sees the process
                if state["cancelled"]:
                    return -1, b"", b"cancelled"
                # A git process in a worktree may change its files and index (and must see its pending files).
                changes.ran(cwd, confined=True)
                proc = state["proc"] = subprocess.Popen(
                    git_argv(args, git_dir, cwd if git_dir is not None else None, cwd),
                    cwd=str(cwd),
                    env=git_env(env),
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            with proc:
                if background:
                    with contextlib.suppress(OSError, AttributeError):  # gone already, or no priorities here
                        os.setpriority(os.PRIO_PROCESS, proc.pid, BACKGROUND_NICE)
                out, err = proc.communicate(input)
            return proc.returncode or 0, out, err
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=git_thread_limiter())
    except BaseException:  # cancelled: do not leave a git process behind
        with lock:
            state["cancelled"] = True
            proc = state["proc"]
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with anyio.CancelScope(shield=True):  # its worktree is free again only once it is gone
                while not finished.is_set():
                    await anyio.sleep(0.005)
        raise


_threads: RunVar[anyio.CapacityLimiter] = RunVar("formicary_git_threads")


def per_loop_limiter(var: RunVar[anyio.CapacityLimiter], size: int) -> anyio.CapacityLimiter:
    """The capacity limiter ``var`` holds in this event loop, made with ``size`` tokens on first use."""
    try:
        return var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(size)
        var.set(limiter)
        return limiter


def git_thread_limiter() -> anyio.CapacityLimiter:
    """Git's own threads, per event loop: git never waits for threads busy with file actions, or vice versa."""
    return per_loop_limiter(_threads, GIT_THREADS)


def _failure(args: tuple[str, ...], rc: int, out: str, err: str) -> GitError:
    detail = _one_line(err) or _one_line(out) or f"exit code {rc}"
    return GitError(f"git {args[0]} failed: {detail}")


async def git(
    *args: str,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    background: bool = False,
    git_dir: Path | str | None = None,
) -> GitResult:
    """Run ``git args`` in ``cwd``; raise :class:`GitError` on a non-zero exit unless ``check`` is False.

    ``background`` lowers the process's CPU priority: a worker's own chores (checkout, add, commit) must not
    starve the one serialized step every worker waits for, the integration's merge + CAS. ``git_dir`` names
    the repository explicitly (``cwd`` is then its work tree): every call in an agent's worktree passes it.
    """
    rc, out, err = await _run(args, cwd, env, input, background, git_dir)
    result = GitResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    if check and rc != 0:
        raise _failure(args, rc, result.out, result.err)
    return result


def git_sync(
    *args: str, cwd: Path | str, timeout: float = 30.0, git_dir: Path | str | None = None
) -> GitResult:
    """Run git and wait, blocking (for code off the event loop, e.g. a TUI worker thread); never raises for rc."""
    changes.ran(cwd, confined=True)
    try:
        done = subprocess.run(
            git_argv(args, git_dir, cwd if git_dir is not None else None, cwd),
            cwd=str(cwd),
            env=git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return GitResult(-1, "", f"git {args[0]} timed out after {timeout:g} s")
    except OSError as exc:
        return GitResult(-1, "", f"git could not be started: {exc}")
    return GitResult(
        done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    )


async def cat_blobs(cwd: Path | str, specs: Iterable[str]) -> dict[str, str | None]:
    """Read many objects as text in ONE process (``cat-file --batch``); a missing object reads as None."""
    wanted = list(dict.fromkeys(specs))
    if not wanted:
        return {}
    args = ("cat-file", "--batch")
    rc, raw, err = await _run(args, cwd, None, "".join(f"{s}\n" for s in wanted).encode())
    if rc != 0:
        raise _failure(args, rc, "", err.decode("utf-8", "replace"))
    found: dict[str, str | None] = {}
    pos = 0
    for spec in wanted:
        nl = raw.index(b"\n", pos)
        header = raw[pos:nl].decode("utf-8", "replace")
        pos = nl + 1
        if header.endswith((" missing", " ambiguous")):
            found[spec] = None
            continue
        size = int(header.rsplit(" ", 1)[1])
        found[spec] = raw[pos : pos + size].decode("utf-8", "replace")
        pos += size + 1
    return found


@dataclass
class ConflictEntry:
    """One line of merge-tree's conflicted-file info: a file at one merge stage."""

    mode: str
    oid: str
    stage: int  # 1 base, 2 ours (first commit given), 3 theirs (second)
    path: str


@dataclass
class MergeTreeResult:
    """What ``git merge-tree --write-tree -z`` says: the merged tree (markers written into conflicted files)."""

    tree: str
    clean: bool
    entries: list[ConflictEntry] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(e.path for e in self.entries))


def parse_merge_tree(out: str, clean: bool) -> MergeTreeResult:
    """Parse ``merge-tree --write-tree -z`` (git >= 2.38) output.

    Layout: ``<tree>NUL``, then when not clean ``<mode> <oid> <stage>TAB<path>NUL`` entries, an empty field,
    then messages as ``<n>NUL<path>NUL...<type>NUL<text>NUL`` groups.
    """
    fields = out.split("\0")
    result = MergeTreeResult(tree=fields[0].strip(), clean=clean)
    if clean:
        return result
    i = 1
    while i < len(fields) and fields[i]:
        meta, _, path = fields[i].partition("\t")
        mode, oid, stage = meta.split(" ")
        result.entries.append(ConflictEntry(mode, oid, int(stage), path))
        i += 1
    i += 1
    while i < len(fields) and fields[i]:
        try:
            n = int(fields[i])
        except ValueError:
            break
        i += 1 + n  # the paths the message is about
        if i + 1 < len(fields):
            result.messages.append(fields[i + 1].strip())
        i += 2
    return result
