"""Running a worker's shell command: bubblewrap isolation, a scrubbed environment, a timeout that kills the tree.

Under bubblewrap the whole filesystem is read-only; the worktree is the one writable place. ``/tmp`` is a
private tmpfs; ``$HOME`` and formicary's own config/data/cache dirs are hidden (tool folders on ``PATH`` that
live in ``$HOME`` are bound back read-only); ``/run`` is hidden when the network is off, so host Unix sockets
are out of reach. The main repository's git dir is bound read-only: ``git status``/``diff``/``log`` work inside,
but nothing can change refs, config or hooks, and the worktree's own ``.git`` file cannot be rewritten to point
elsewhere. Capabilities are dropped and the writable corners of /proc are bound read-only: run as root, bwrap
otherwise keeps every capability (``mount -o remount,rw /`` escapes) and leaves ``/proc/sys`` writable
(``kernel/core_pattern`` runs code on the host). PID, IPC, UTS and, unless allowed, network namespaces are
private.

Commands run with ``bash -c`` (not ``-lc``: a login shell's /etc/profile resets ``PATH``) in a new session. When
the command ends or times out, the process group and the PID namespace's init are SIGKILLed, and we wait on a
pidfd of that init: it exits only after the kernel has killed every process in the namespace, so nothing the
command started outlives :func:`run_command`. Output (stdout and stderr merged) keeps its head and tail within
the cap. ``mode="none"`` is the operator's explicit opt-in to run without isolation: same env, timeout, group
kill and cap; background processes that leave the process group with ``setsid`` are the one thing it cannot reap.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ...store.redact import secret_env_names

SANDBOX_MODES = ("bubblewrap", "none")
DRAIN_SECONDS = 2.0
"""How long output is still read after the command ended (a daemonised grandchild may hold the pipe)."""

_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
_FIXED_ENV = {
    "TERM": "dumb",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "NO_COLOR": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_HOME_SECRETS = (".cargo/credentials", ".cargo/credentials.toml", ".local/share/keyrings")
"""Credential files inside tool folders that are bound back from a hidden $HOME; masked again."""
_HOST_SECRETS = ("/etc/shadow", "/etc/gshadow")
_HOST_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/podman/podman.sock")
"""Sockets that are root on the host, masked when the network is allowed (otherwise all of /run is hidden)."""
_BASE = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc")
# fmt: off
_LOCKDOWN = (
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--cap-drop", "ALL", "--die-with-parent", "--new-session",
)
"""Private PID/IPC/UTS namespaces, no capabilities, killed with its parent, no access to our terminal."""
_PROC_COVERED = (
    "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/mtrr", "/proc/pressure", "/proc/acpi",
    "/proc/scsi", "/proc/fs",
)
"""Writable corners of a fresh /proc, bound read-only over themselves."""
# fmt: on
_PROBE_LOCK = threading.Lock()
_PROBED: dict[str, str | None] = {}


@dataclass(frozen=True)
class SandboxOptions:
    """The sandbox knobs, shaped like the config's ``SandboxSettings`` (either can be passed where one is asked)."""

    mode: str = "bubblewrap"
    """``bubblewrap``, or ``none``: the operator's explicit opt-in to run commands unsandboxed."""
    network: bool = False
    timeout: float = 120.0
    """Default seconds a command may run."""
    max_timeout: float = 600.0
    output_cap: int = 16_000
    """Characters of output kept (head and tail)."""


SandboxLike = SandboxOptions | Any
"""A :class:`SandboxOptions`, the config's ``SandboxSettings``, a mode string, or None (the defaults)."""


def options(settings: SandboxLike = None) -> SandboxOptions:
    """Normalise whatever the caller holds into :class:`SandboxOptions`."""
    if settings is None:
        return SandboxOptions()
    if isinstance(settings, str):
        return SandboxOptions(mode=settings)
    if isinstance(settings, SandboxOptions):
        return settings
    return SandboxOptions(
        mode=settings.mode,
        network=settings.network,
        timeout=settings.timeout,
        max_timeout=settings.max_timeout,
        output_cap=settings.output_cap,
    )


@dataclass
class CommandResult:
    output: str
    """Merged stdout and stderr, head and tail kept within the cap (the refusal text when ``refused``)."""
    exit_code: int | None
    """None when the command was killed at its timeout or never ran."""
    timed_out: bool = False
    duration_ms: float = 0.0
    cut_bytes: int = 0
    """Bytes of output dropped from the middle to respect the cap."""
    refused: bool = False
    """The command did not run: no usable sandbox and unsandboxed mode was not chosen."""
    timeout: float = 0.0

    @property
    def text(self) -> str:
        """The output with a closing note when the command was killed."""
        if self.timed_out:
            return (
                f"{self.output.rstrip()}\n[timed out after {self.timeout:g} s: the command and every process it "
                "started were killed]"
            )
        return self.output


def _which_bwrap() -> str | None:
    return shutil.which("bwrap")


def _probe(bwrap: str) -> str | None:
    """None when bwrap can build the sandbox here; else why not (containers often forbid user namespaces)."""
    argv = [bwrap, *_BASE, *_proc_covers(), "--tmpfs", "/tmp", "--unshare-net", *_LOCKDOWN, "--", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=scrubbed_env("/tmp"))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not be started ({exc})"
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return (
            f"bwrap is installed but cannot create a sandbox here ({detail}); user namespaces may be disabled"
        )
    return None


def sandbox_problem(settings: SandboxLike = None) -> str | None:
    """Why commands are refused under ``settings`` (None: they can run). Probes bwrap once per process; blocks."""
    mode = options(settings).mode
    if mode == "none":
        return None
    if mode != "bubblewrap":
        return f"unknown sandbox mode {mode!r} (use 'bubblewrap' or 'none')"
    bwrap = _which_bwrap()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    with _PROBE_LOCK:
        if bwrap not in _PROBED:
            _PROBED[bwrap] = _probe(bwrap)
        return _PROBED[bwrap]


def sandbox_status(settings: SandboxLike = None) -> str:
    """``bubblewrap``, ``unavailable`` or ``disabled (unsandboxed)``: for the UI and headless output."""
    if options(settings).mode == "none":
        return "disabled (unsandboxed)"
    return "bubblewrap" if sandbox_problem(settings) is None else "unavailable"


def refusal(problem: str) -> str:
    """The observation a worker gets when its command cannot run."""
    return (
        f"refused: commands cannot run because {problem}. Install the bubblewrap package, or have the "
        'operator set sandbox.mode = "none" to run commands unsandboxed.'
    )


def scrubbed_env(
    home: str, environ: Mapping[str, str] | None = None, extra_secret_names: Iterable[str] = ()
) -> dict[str, str]:
    """A minimal environment: PATH and locale from ``environ``, fixed quiet defaults, nothing secret-named."""
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in _PASSED_ENV if environ.get(name)}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.update(_FIXED_ENV, HOME=home)
    for name in secret_env_names(env) | set(extra_secret_names):
        env.pop(name, None)
    return env


def _proc_covers() -> list[str]:
    """Read-only binds over the writable corners of the sandbox's /proc (bwrap leaves /proc/sys writable when
    run as root, and root without capabilities may still write ``kernel/core_pattern``: code on the host)."""
    argv: list[str] = []
    for entry in _PROC_COVERED:
        if os.path.lexists(entry):
            argv += ["--ro-bind", entry, entry]
    return argv


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _git_dirs(worktree: str) -> tuple[str | None, str | None]:
    """``(dot_git, common_dir)``: the worktree's .git (file or dir) and the repository's shared git dir."""
    dot_git = os.path.join(worktree, ".git")
    if os.path.isdir(dot_git) and not os.path.islink(dot_git):
        return dot_git, None
    try:
        text = Path(dot_git).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    if not text.startswith("gitdir:"):
        return None, None
    gitdir = os.path.realpath(os.path.join(worktree, text[len("gitdir:") :].strip()))
    try:
        common = (Path(gitdir) / "commondir").read_text(encoding="utf-8").strip()
        common_dir = os.path.realpath(os.path.join(gitdir, common))
    except OSError:
        common_dir = gitdir
    return dot_git, common_dir if os.path.isdir(common_dir) else None


def _hidden_dirs(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``(homes, app_dirs)``: folders replaced by an empty tmpfs inside the sandbox."""
    from .. import paths

    homes: list[str] = []
    for home in (environ.get("HOME", ""), os.path.expanduser("~")):
        if home and os.path.isdir(home):
            home = os.path.realpath(home)
            if home != "/" and home not in homes:
                homes.append(home)
    app_dirs = []
    for folder in (paths.config_dir(), paths.data_dir(), paths.cache_dir()):
        real = os.path.realpath(folder)
        if os.path.isdir(real) and real != "/" and real not in app_dirs:
            app_dirs.append(real)
    return homes, app_dirs


def _tool_roots(path_value: str, homes: list[str]) -> list[str]:
    """Top folders of PATH entries inside a hidden home (``~/.cargo``, ``~/.pyenv``), bound back read-only."""
    roots: list[str] = []
    for entry in path_value.split(":"):
        if not entry or not os.path.isdir(entry):
            continue
        entry = os.path.realpath(entry)
        for home in homes:
            if entry != home and _under(entry, home):
                top = os.path.join(home, os.path.relpath(entry, home).split("/")[0])
                if top not in roots:
                    roots.append(top)
    return roots


def bwrap_argv(
    bwrap: str,
    worktree: str,
    command: str,
    *,
    network: bool = False,
    environ: Mapping[str, str] | None = None,
    info_fd: int | None = None,
) -> list[str]:
    """The bubblewrap command line for ``command`` in ``worktree`` (a real path). Mount order matters: later
    mounts cover earlier ones, so hiding comes first and the writable worktree last. ``info_fd`` receives
    bwrap's JSON with the host PID of the namespace's init."""
    environ = os.environ if environ is None else environ
    homes, app_dirs = _hidden_dirs(environ)
    argv = [bwrap, *_BASE, *_proc_covers()]
    for home in homes:
        argv += ["--tmpfs", home]
    for root in _tool_roots(environ.get("PATH", ""), homes):
        argv += ["--ro-bind", root, root]
        for secret in _HOME_SECRETS:
            full = os.path.join(os.path.dirname(root), secret)
            if _under(full, root) and os.path.lexists(full):
                argv += ["--tmpfs", full] if os.path.isdir(full) else ["--ro-bind", "/dev/null", full]
    for folder in app_dirs:
        argv += ["--tmpfs", folder]
    for secret in _HOST_SECRETS:
        if os.path.isfile(secret):
            argv += ["--ro-bind", "/dev/null", secret]
    argv += ["--tmpfs", "/tmp"]
    if not network and os.path.isdir("/run"):
        argv += ["--tmpfs", "/run"]
    else:
        if os.path.isdir("/run/user"):
            argv += ["--tmpfs", "/run/user"]
        for sock in sorted({os.path.realpath(p) for p in _HOST_SOCKETS if os.path.exists(p)}):
            argv += ["--ro-bind", "/dev/null", sock]
    dot_git, common_dir = _git_dirs(worktree)
    if common_dir and not _under(common_dir, worktree):
        argv += ["--ro-bind", common_dir, common_dir]
    argv += ["--bind", worktree, worktree]
    if dot_git:
        argv += ["--ro-bind", dot_git, dot_git]
    if not network:
        argv.append("--unshare-net")
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    return [*argv, *_LOCKDOWN, "--chdir", worktree, "--", _shell(), "-c", command]


def _shell() -> str:
    return shutil.which("bash") or "/bin/sh"


class _CappedOutput:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.head_cap = max(cap // 2, 1)
        self.tail_cap = max(cap - self.head_cap, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def cut(self) -> int:
        return max(self.total - self.head_cap - self.tail_cap, 0)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        if not self.cut:
            return head + self.tail.decode("utf-8", "replace")
        tail = bytes(self.tail[-self.tail_cap :]).decode("utf-8", "replace")
        return (
            f"{head}\n[... {self.cut} bytes of output cut ({self.total} in all); the head and tail are "
            f"kept ...]\n{tail}"
        )


async def _pump(stream: anyio.abc.ByteReceiveStream, out: _CappedOutput, done: anyio.Event) -> None:
    try:
        async for chunk in stream:
            out.feed(chunk)
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        done.set()


async def run_command(
    command: str,
    worktree: str | Path,
    settings: SandboxLike = None,
    *,
    timeout: float | None = None,
    output_cap: int | None = None,
    extra_secret_names: Iterable[str] = (),
) -> CommandResult:
    """Run ``command`` in ``worktree`` as ``settings`` say; the whole process tree is dead when this returns.

    ``timeout`` and ``output_cap`` override the settings' defaults. When no sandbox can be had (and ``mode`` is
    not ``none``) nothing runs: the result is ``refused`` and its output says why.
    """
    opts = options(settings)
    timeout = opts.timeout if timeout is None else timeout
    worktree = os.path.realpath(worktree)
    if opts.mode != "none":
        problem = await anyio.to_thread.run_sync(sandbox_problem, opts)
        if problem is not None:
            return CommandResult(refusal(problem), None, refused=True)
    out = _CappedOutput(opts.output_cap if output_cap is None else output_cap)
    started = time.perf_counter()
    async with _spawn(command, worktree, opts, extra_secret_names) as (process, init):
        timed_out = False
        async with anyio.create_task_group() as tg:
            done = anyio.Event()
            assert process.stdout is not None
            tg.start_soon(_pump, process.stdout, out, done)
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            timed_out = scope.cancelled_caught
            await _end_tree(process, init)
            with anyio.move_on_after(DRAIN_SECONDS):
                await done.wait()
            tg.cancel_scope.cancel()
    return CommandResult(
        output=out.text(),
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        duration_ms=(time.perf_counter() - started) * 1000,
        cut_bytes=out.cut,
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def _spawn(
    command: str, worktree: str, opts: SandboxOptions, extra_secret_names: Iterable[str]
) -> AsyncIterator[tuple[anyio.abc.Process, int | None]]:
    """Start the command in a new session; yield it and (under bwrap) a pidfd of its namespace's init.
    On the way out, whatever happened, every process it started is killed and reaped."""
    private_home = init = None
    info_r = info_w = -1
    if opts.mode == "none":
        private_home = tempfile.mkdtemp(prefix="formicary-home-")
        argv = [_shell(), "-c", command]
        env = scrubbed_env(private_home, extra_secret_names=extra_secret_names)
    else:
        info_r, info_w = os.pipe()
        argv = bwrap_argv(_which_bwrap() or "bwrap", worktree, command, network=opts.network, info_fd=info_w)
        env = scrubbed_env("/tmp", extra_secret_names=extra_secret_names)
    try:
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=worktree,
            env=env,
            start_new_session=True,
            pass_fds=(info_w,) if info_w >= 0 else (),
        )
    except BaseException:
        for fd in (info_r, info_w):
            if fd >= 0:
                os.close(fd)
        if private_home:
            shutil.rmtree(private_home, ignore_errors=True)
        raise
    try:
        if info_w >= 0:
            os.close(info_w)
            init = await _init_pidfd(info_r)
        yield process, init
    finally:
        with anyio.CancelScope(shield=True):
            await _end_tree(process, init)
            await process.wait()
            await process.aclose()
            if init is not None:
                os.close(init)
            if private_home:
                shutil.rmtree(private_home, ignore_errors=True)


def _read_info(fd: int) -> bytes:
    """bwrap's ``--info-fd`` JSON: read up to its closing brace (or EOF, when bwrap failed first)."""
    try:
        data = b""
        while b"}" not in data and (chunk := os.read(fd, 4096)):
            data += chunk
        return data
    finally:
        os.close(fd)


async def _init_pidfd(info_r: int) -> int | None:
    """A pidfd of bwrap's PID-namespace init, from ``--info-fd``. The init exits only after the kernel has
    killed and reaped every process in its namespace, so its exit is the proof that the tree is gone."""
    data = await anyio.to_thread.run_sync(_read_info, info_r)
    try:
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (ValueError, KeyError, TypeError, OSError, AttributeError):
        return None  # bwrap failed before starting (its error is in the output), or no pidfd support


async def _end_tree(process: anyio.abc.Process, init: int | None) -> None:
    """SIGKILL the process group (bwrap, or the shell and its children) and the namespace's init, then wait
    (at most :data:`DRAIN_SECONDS`) until the init is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if init is None:
        return
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(init, signal.SIGKILL)
    with anyio.move_on_after(DRAIN_SECONDS):
        while not select.select([init], [], [], 0)[0]:
            await anyio.sleep(0.002)
