"""The bubblewrap command line a sandboxed command runs under: what is bound, hidden, masked and unshared.

See sandbox.py for the whole picture. Kept apart so the argv can be read (and tested) as one piece: every
entry here is a defence against something an agent's command could otherwise reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .limits import Limits, ulimit_prefix

_HOME_SECRETS = (".cargo/credentials", ".cargo/credentials.toml", ".local/share/keyrings")
"""Credential files inside tool folders that are bound back from a hidden $HOME; masked again."""
_TOOL_SECRETS = ("credentials", "credentials.toml")
"""The same, directly in any bound tool folder (a ``CARGO_HOME`` that is not ``~/.cargo``)."""
_HOST_SECRETS = ("/etc/shadow", "/etc/gshadow")
_HOST_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/podman/podman.sock")
"""Sockets that are root on the host, masked when the network is allowed (otherwise all of /run is hidden)."""
BASE_BINDS = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc")
# fmt: off
_LOCKDOWN = (
    "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
    "--unshare-cgroup-try", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
)
"""Private user (a fresh user keyring; no nested user namespaces), PID, IPC and UTS namespaces, no capabilities,
killed with its parent, no access to our terminal."""
_PROC_HIDDEN = ("/proc/keys", "/proc/key-users")
"""Listings of the host's keys (descriptions only, but still): covered with an empty file."""
_PROC_COVERED = (
    "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/mtrr", "/proc/pressure", "/proc/acpi",
    "/proc/scsi", "/proc/fs",
)
"""Writable corners of a fresh /proc, bound read-only over themselves."""
# fmt: on
PROBE_LOCK = threading.RLock()  # the probe asks for the features under it


def proc_covers() -> list[str]:
    """Read-only binds over the writable corners of the sandbox's /proc (bwrap leaves /proc/sys writable when
    run as root, and root without capabilities may still write ``kernel/core_pattern``: code on the host)."""
    argv: list[str] = []
    for entry in _PROC_COVERED:
        if os.path.lexists(entry):
            argv += ["--ro-bind", entry, entry]
    for entry in _PROC_HIDDEN:
        if os.path.lexists(entry):
            argv += ["--ro-bind", "/dev/null", entry]
    return argv


_FEATURES: dict[str, frozenset[str]] = {}


def bwrap_features(bwrap: str) -> frozenset[str]:
    """Options this bwrap knows among the optional ones (``--size`` and ``--disable-userns`` came in 0.7-0.8)."""
    with PROBE_LOCK:
        if bwrap not in _FEATURES:
            try:
                done = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=20)
                text = done.stdout + done.stderr
            except (OSError, subprocess.SubprocessError):
                text = ""
            _FEATURES[bwrap] = frozenset(o for o in ("--size", "--disable-userns", "--seccomp") if o in text)
        return _FEATURES[bwrap]


def lockdown_args(features: frozenset[str]) -> list[str]:
    return [a for a in _LOCKDOWN if a != "--disable-userns" or "--disable-userns" in features]


def tmpfs_args(features: frozenset[str], folder: str, mb: int) -> list[str]:
    """A writable tmpfs, sized when this bwrap can (an unsized one is backed by host memory without bound)."""
    sized = ["--size", str(mb * 1024 * 1024)] if "--size" in features else []
    return [*sized, "--tmpfs", folder]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def git_dirs(worktree: str) -> tuple[str | None, str | None]:
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


def _tool_dirs(path_value: str) -> list[str]:
    """PATH's folders (real paths), each virtualenv's base interpreter folder after its ``bin``: a venv's
    ``python`` is a link to it, often in a hidden home and not on PATH (uv keeps its Pythons in
    ``~/.local/share/uv/python``), and the venv would not start without it."""
    dirs: list[str] = []
    for entry in path_value.split(":"):
        if not entry or not os.path.isdir(entry):
            continue
        entry = os.path.realpath(entry)
        dirs.append(entry)
        if (base := _venv_base(entry)) is not None:
            dirs.append(base)
    return dirs


def _venv_base(bin_dir: str) -> str | None:
    """The ``home`` of ``bin_dir``'s virtualenv (``pyvenv.cfg`` beside it), None when it is not one."""
    try:
        with open(os.path.join(os.path.dirname(bin_dir), "pyvenv.cfg"), encoding="utf-8") as cfg:
            for line in cfg.read(8192).splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and os.path.isdir(value.strip()):
                    return os.path.realpath(value.strip())
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _tmp_tool_dirs(path_value: str, tmp: str = "/tmp") -> list[str]:
    """PATH's folders under ``/tmp`` (a virtualenv made there: its whole folder), bound back read-only over the
    sandbox's private ``/tmp``; nothing else of the host's ``/tmp`` (agent sockets, other users' files)."""
    tmp = os.path.realpath(tmp)
    roots: list[str] = []
    for entry in _tool_dirs(path_value):
        if entry == tmp or not _under(entry, tmp):
            continue
        venv = os.path.dirname(entry)
        root = venv if os.path.isfile(os.path.join(venv, "pyvenv.cfg")) and venv != tmp else entry
        if root not in roots:
            roots.append(root)
    return roots


def _tool_roots(path_value: str, homes: list[str]) -> list[str]:
    """Top folders of PATH entries inside a hidden home (``~/.cargo``, ``~/.pyenv``), bound back read-only."""
    roots: list[str] = []
    for entry in _tool_dirs(path_value):
        for home in homes:
            if entry != home and _under(entry, home):
                top = os.path.join(home, os.path.relpath(entry, home).split("/")[0])
                if top not in roots:
                    roots.append(top)
    return roots


def tool_homes(environ: Mapping[str, str]) -> dict[str, str]:
    """Where tools on PATH keep what they need apart from PATH, as variables for a command (whose ``HOME`` is
    not the operator's): rustup's toolchains (``~/.cargo/bin/cargo`` is a proxy that runs one from
    ``RUSTUP_HOME``, and failed in every worktree with "rustup could not choose a version of cargo to run"),
    cargo's registry, and Go's module cache (the dependencies ``go test`` would otherwise download, with no
    network). Only folders that exist; the sandbox binds them back read-only (:func:`bwrap_argv`)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    wanted: dict[str, str] = {}
    if _on_path(environ, "rustup"):
        wanted["RUSTUP_HOME"] = environ.get("RUSTUP_HOME") or os.path.join(home, ".rustup")
    if _on_path(environ, "cargo"):
        wanted["CARGO_HOME"] = environ.get("CARGO_HOME") or os.path.join(home, ".cargo")
    if _on_path(environ, "go"):
        gopath = (environ.get("GOPATH") or os.path.join(home, "go")).split(os.pathsep)[0]
        wanted["GOMODCACHE"] = environ.get("GOMODCACHE") or os.path.join(gopath, "pkg", "mod")
    return {
        name: os.path.realpath(folder)
        for name, folder in wanted.items()
        if os.path.isabs(folder) and os.path.isdir(folder)
    }


def _bound_tools(environ: Mapping[str, str], homes: list[str]) -> list[str]:
    """What comes back read-only from a hidden home: PATH's tool folders, then the folders they need."""
    roots = _tool_roots(environ.get("PATH", ""), homes)
    for folder in tool_homes(environ).values():
        hidden = any(_under(folder, home) and folder != home for home in homes)
        if hidden and not any(_under(folder, root) for root in roots):
            roots.append(folder)
    return roots


def _secrets_in(root: str) -> list[str]:
    """Credential files inside a bound tool folder (cargo's, wherever ``CARGO_HOME`` is), masked again."""
    names = [os.path.join(os.path.dirname(root), secret) for secret in _HOME_SECRETS]
    names += [os.path.join(root, name) for name in _TOOL_SECRETS]
    return [name for name in dict.fromkeys(names) if _under(name, root) and os.path.lexists(name)]


def _on_path(environ: Mapping[str, str], program: str) -> bool:
    return shutil.which(program, path=environ.get("PATH", "")) is not None


def bwrap_argv(
    bwrap: str,
    worktree: str,
    command: str,
    *,
    network: bool = False,
    environ: Mapping[str, str] | None = None,
    info_fd: int | None = None,
    limits: Limits | None = None,
    seccomp: int | None = None,
    binds: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The bubblewrap command line for ``command`` in ``worktree`` (a real path). Mount order matters: later
    mounts cover earlier ones, so hiding comes first and the writable worktree last. ``info_fd`` receives
    bwrap's JSON with the host PID of the namespace's init; ``seccomp`` an fd holding the keyring filter;
    ``binds`` are ``(source, target)`` folders bound read-only inside the worktree (the project's packages)."""
    environ = os.environ if environ is None else environ
    limits = limits or Limits()
    features = bwrap_features(bwrap)
    homes, app_dirs = _hidden_dirs(environ)
    argv = [bwrap, *BASE_BINDS, *tmpfs_args(features, "/dev/shm", limits.tmp_mb), *proc_covers()]
    argv += tmpfs_args(features, "/tmp", limits.tmp_mb)
    for root in _tmp_tool_dirs(environ.get("PATH", "")):
        argv += ["--ro-bind", root, root]
    for home in homes:
        argv += tmpfs_args(features, home, limits.tmp_mb)
    for root in _bound_tools(environ, homes):
        argv += ["--ro-bind", root, root]
        for secret in _secrets_in(root):
            argv += ["--tmpfs", secret] if os.path.isdir(secret) else ["--ro-bind", "/dev/null", secret]
    for folder in app_dirs:
        argv += tmpfs_args(features, folder, 1)
    for secret in _HOST_SECRETS:
        if os.path.isfile(secret):
            argv += ["--ro-bind", "/dev/null", secret]
    if not network and os.path.isdir("/run"):
        argv += tmpfs_args(features, "/run", 1)
    else:
        if os.path.isdir("/run/user"):
            argv += ["--tmpfs", "/run/user"]
        for sock in sorted({os.path.realpath(p) for p in _HOST_SOCKETS if os.path.exists(p)}):
            argv += ["--ro-bind", "/dev/null", sock]
    dot_git, common_dir = git_dirs(worktree)
    if common_dir and not _under(common_dir, worktree):
        argv += ["--ro-bind", common_dir, common_dir]
    argv += ["--bind", worktree, worktree]
    if dot_git:
        argv += ["--ro-bind", dot_git, dot_git]
    for source, target in binds:  # after the worktree's bind, which they cover
        argv += ["--ro-bind", source, target]
    if not network:
        argv.append("--unshare-net")
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if seccomp is not None and "--seccomp" in features:
        argv += ["--seccomp", str(seccomp)]
    shell = [shell_path(), "-c", ulimit_prefix(limits) + command]
    return [*argv, *lockdown_args(features), "--chdir", worktree, "--", *shell]


def shell_path() -> str:
    return shutil.which("bash") or "/bin/sh"
