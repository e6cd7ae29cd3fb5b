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
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ...store.redact import secret_env_names
from . import changes
from .bwrap import (
    BASE_BINDS,
    PROBE_LOCK,
    bwrap_argv,
    bwrap_features,
    lockdown_args,
    proc_covers,
    shell_path,
    tmpfs_args,
    tool_homes,
)
from .limits import Limits, PidsCgroup, keyring_filter, limit_note, pids_base, seccomp_fd, ulimit_prefix
from .proctree import DRAIN_SECONDS, CappedOutput, end_tree, init_pidfd, pump
from .project_env import command_env, dependency_binds, unsandboxed_env

SANDBOX_MODES = ("bubblewrap", "none")

_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
_FIXED_ENV = {
    "TERM": "dumb",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "NO_COLOR": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
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
    processes: int = 512
    """Processes (threads included) one command may run at once."""
    memory_mb: int = 4096
    """Private memory per process, MiB (``RLIMIT_DATA``)."""
    file_size_mb: int = 1024
    """Largest file a command may write, MiB."""
    cpu_seconds: int = 600
    """CPU seconds per process."""
    tmp_mb: int = 512
    """Size of each writable tmpfs in the sandbox (``/tmp``, ``/dev/shm``, the hidden home), MiB."""
    nice: int = 5
    """CPU niceness the command runs at (measured: a gate's test run on 2 cores halved a local model's speed)."""

    @property
    def limits(self) -> Limits:
        return Limits(self.processes, self.memory_mb, self.file_size_mb, self.cpu_seconds, self.tmp_mb)


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
    defaults = SandboxOptions()
    return SandboxOptions(
        mode=settings.mode,
        network=settings.network,
        timeout=settings.timeout,
        max_timeout=settings.max_timeout,
        output_cap=settings.output_cap,
        **{k: getattr(settings, k, getattr(defaults, k)) for k in (*_LIMIT_KEYS, "nice")},
    )


_LIMIT_KEYS = ("processes", "memory_mb", "file_size_mb", "cpu_seconds", "tmp_mb")


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
    limit: str = ""
    """Which resource limit the command ran into, when one clearly did (one line; empty otherwise)."""

    @property
    def text(self) -> str:
        """The output with a closing note when the command was killed or hit a limit."""
        text = self.output
        if self.timed_out:
            text = (
                f"{text.rstrip()}\n[timed out after {self.timeout:g} s: the command and every process it "
                "started were killed]"
            )
        if self.limit:
            text = f"{text.rstrip()}\n[{self.limit}]"
        return text


def _which_bwrap() -> str | None:
    return shutil.which("bwrap")


def _probe(bwrap: str) -> str | None:
    """None when bwrap can build the sandbox here; else why not (containers often forbid user namespaces)."""
    features = bwrap_features(bwrap)
    argv = [
        bwrap,
        *BASE_BINDS,
        *proc_covers(),
        *tmpfs_args(features, "/tmp", 1),
        "--unshare-net",
        *lockdown_args(features),
    ]
    argv += ["--", "true"]
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
    with PROBE_LOCK:
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


async def run_command(
    command: str,
    worktree: str | Path,
    settings: SandboxLike = None,
    *,
    timeout: float | None = None,
    output_cap: int | None = None,
    extra_secret_names: Iterable[str] = (),
    checkout: str | None = None,
) -> CommandResult:
    """Run ``command`` in ``worktree`` as ``settings`` say; the whole process tree is dead when this returns.

    ``timeout`` and ``output_cap`` override the settings' defaults. The command sees the project's code and
    virtualenv (:mod:`.project_env`; ``checkout`` names the operator's checkout when ``worktree`` is not one of
    its worktrees). When no sandbox can be had (and ``mode`` is
    not ``none``) nothing runs: the result is ``refused`` and its output says why.
    """
    opts = options(settings)
    timeout = opts.timeout if timeout is None else timeout
    worktree = os.path.realpath(worktree)
    if opts.mode != "none":
        problem = await anyio.to_thread.run_sync(sandbox_problem, opts)
        if problem is not None:
            return CommandResult(refusal(problem), None, refused=True)
    # Whatever it does there (and, unsandboxed, anywhere) is unknown to formicary from now on: commits and resets
    # of the worktrees it could write in scan them again.
    # In a thread: files a lazy reset left for later are written first.
    await anyio.to_thread.run_sync(lambda: changes.ran(worktree, confined=opts.mode != "none"))
    out = CappedOutput(opts.output_cap if output_cap is None else output_cap)
    started = time.perf_counter()
    async with _spawn(command, worktree, opts, extra_secret_names, checkout) as (process, init, cgroup):
        timed_out = False
        async with anyio.create_task_group() as tg:
            done = anyio.Event()
            assert process.stdout is not None
            tg.start_soon(pump, process.stdout, out, done)
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            timed_out = scope.cancelled_caught
            await end_tree(process, init)
            if (
                cgroup is not None
            ):  # unsandboxed, the cgroup is what reaches every process the command started
                await anyio.to_thread.run_sync(cgroup.kill_all)
            with anyio.move_on_after(DRAIN_SECONDS):
                await done.wait()
            tg.cancel_scope.cancel()
        forks_refused = cgroup is not None and cgroup.hit()
    output = out.text()
    exit_code = None if timed_out else process.returncode
    return CommandResult(
        output=output,
        exit_code=exit_code,
        timed_out=timed_out,
        duration_ms=(time.perf_counter() - started) * 1000,
        cut_bytes=out.cut,
        timeout=timeout,
        limit=limit_note(opts.limits, exit_code, output, forks_refused),
    )


_FILTER: list[bytes | None] = []


def _keyring_filter() -> bytes | None:
    if not _FILTER:
        _FILTER.append(keyring_filter())
    return _FILTER[0]


@contextlib.asynccontextmanager
async def _spawn(
    command: str, worktree: str, opts: SandboxOptions, extra_secret_names: Iterable[str], checkout: str | None
) -> AsyncIterator[tuple[anyio.abc.Process, int | None, PidsCgroup | None]]:
    """Start the command in a new session; yield it, (under bwrap) a pidfd of its namespace's init, and its pids
    cgroup when one could be made. On the way out, whatever happened, every process it started is killed and
    reaped."""
    private_home = init = None
    info_r = info_w = filter_r = -1
    limits = opts.limits
    base = await anyio.to_thread.run_sync(pids_base)
    cgroup = None
    try:
        if base is not None:
            cgroup = PidsCgroup(base, limits.processes)
        if opts.mode == "none":
            private_home = tempfile.mkdtemp(prefix="formicary-home-")
        env = scrubbed_env(private_home or "/tmp", extra_secret_names=extra_secret_names)
        env.update(command_env(worktree, env["PATH"], checkout))
        env.update(tool_homes({**os.environ, "PATH": env["PATH"]}))
        if opts.mode == "none":
            argv = [shell_path(), "-c", ulimit_prefix(limits) + command]
            env.update(unsandboxed_env(worktree, env["PATH"]))
        else:
            info_r, info_w = os.pipe()
            program = _keyring_filter()
            if program is not None:
                filter_r = seccomp_fd(program)
            argv = bwrap_argv(
                _which_bwrap() or "bwrap",
                worktree,
                command,
                network=opts.network,
                info_fd=info_w,
                limits=limits,
                seccomp=filter_r if filter_r >= 0 else None,
                environ={**os.environ, "PATH": env["PATH"]},  # the project's virtualenv is bound back too
                binds=dependency_binds(worktree),
            )
        if opts.nice > 0 and (nice := shutil.which("nice")) is not None:
            argv = [nice, "-n", str(opts.nice), *argv]
        if cgroup is not None:
            argv = cgroup.wrap(argv)
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=worktree,
            env=env,
            start_new_session=True,
            pass_fds=tuple(fd for fd in (info_w, filter_r) if fd >= 0),
        )
    except BaseException:
        for fd in (info_r, info_w, filter_r):
            if fd >= 0:
                os.close(fd)
        if private_home:
            shutil.rmtree(private_home, ignore_errors=True)
        if cgroup is not None:
            cgroup.close()
        raise
    try:
        if filter_r >= 0:
            os.close(filter_r)
        if info_w >= 0:
            os.close(info_w)
            init = await init_pidfd(info_r)
        yield process, init, cgroup
    finally:
        with anyio.CancelScope(shield=True):
            await end_tree(process, init)
            await process.wait()
            await process.aclose()
            if init is not None:
                os.close(init)
            if private_home:
                shutil.rmtree(private_home, ignore_errors=True)
            if cgroup is not None:
                cgroup.close()
