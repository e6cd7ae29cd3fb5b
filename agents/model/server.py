"""llama-server for the embedded model: built once from source, then run on a free localhost port.

``ensure_server`` builds llama.cpp's server out of the vendored copy in the llama-cpp-python sdist (no
network at build time beyond pip) and caches it by version. ``EmbeddedServer`` owns one llama-server process
serving the cached default model, the endpoint used when none is configured; its output goes to a log file
in the cache dir and ``start()`` returns once ``/health`` answers ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .setup import (
    DEFAULT_MODEL,
    LLAMA_CPP_PYTHON_VERSION,
    MB,
    Report,
    SetupError,
    Status,
    cache_lock,
    cache_root,
    is_ready,
    model_path,
    model_verified,
    quiet,
    server_ok,
    server_path,
    sibling,
    status,
    subprocess_kwargs,
    tail,
)

__all__ = ["EmbeddedServer", "ServerError", "embedded_status", "ensure_server", "is_ready", "status"]

# Flags for a portable, self-contained CPU build: no network at build time (no prebuilt web UI, no
# HTTPS client), x86-64-v3 baseline instead of -march=native, static libraries.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


# ---------------------------------------------------------------- llama-server


_TOOLS = (
    # label, candidates, env override, Debian package, Homebrew hint
    ("cmake", ("cmake",), None, "cmake", "brew install cmake"),
    ("a C compiler (cc, gcc or clang)", ("cc", "gcc", "clang"), "CC", "gcc", "xcode-select --install"),
    (
        "a C++ compiler (c++, g++ or clang++)",
        ("c++", "g++", "clang++"),
        "CXX",
        "g++",
        "xcode-select --install",
    ),
    ("make (or ninja)", ("make", "ninja"), None, "make", "xcode-select --install"),
)


def check_build_tools(path: str | None = None) -> dict[str, str]:
    """Finds cmake, the compilers and a build tool on ``path`` (default: $PATH); raises naming what is missing."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    found: dict[str, str] = {}
    for label, names, env, apt, brew in _TOOLS:
        candidates = [os.environ[env]] if env and os.environ.get(env) else list(names)
        hit = next((w for n in candidates if (w := shutil.which(n, path=path))), None)
        if hit is None:
            how = brew if sys.platform == "darwin" else f"apt-get install {apt}"
            raise SetupError(
                f"{label.split(' (')[0]} not found; install it ({how}) and run `formicary model setup` again"
            )
        found[names[0]] = hit
    return found


_MAKE_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")
_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


def build_percent(line: str) -> int | None:
    """The build progress a make or ninja output line announces, in percent."""
    if m := _MAKE_PROGRESS.match(line):
        return int(m.group(1))
    if m := _NINJA_PROGRESS.match(line):
        return 100 * int(m.group(1)) // max(1, int(m.group(2)))
    return None


def _run_logged(cmd: list[str], log, env: dict[str, str], on_line: Callable[[str], None] = quiet) -> int:
    """Runs a build command, appending its output to the log; the child is stopped if we are interrupted."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        text=True, errors="replace", **subprocess_kwargs(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            on_line(line)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.flush()


def _step(name: str, cmd: list[str], log, env: dict[str, str], report: Report) -> None:
    """One cmake step; its output goes to the log, its progress to ``report`` every 10%."""
    started, shown = time.monotonic(), -10
    report(f"server: {name} ...")

    def on_line(line: str) -> None:
        nonlocal shown
        pct = build_percent(line)
        if pct is not None and pct >= shown + 10:
            shown = pct - pct % 10
            report(f"server: {pct:3d}%  ({time.monotonic() - started:.0f}s)")

    code = _run_logged(cmd, log, env, on_line)
    if code < 0:  # killed by a signal (Ctrl-C reaches cmake and make too): the build dir is kept
        raise SetupError("llama-server build interrupted; run `formicary model setup` again to resume")
    if code:
        log.flush()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            last = tail(f.read(), 15)
        raise SetupError(f"llama-server {name.split()[0]} failed (exit {code}); full log: {log.name}\n{last}")
    report(f"server: {name.split()[0]} done in {time.monotonic() - started:.0f}s")


def _extract_vendor(sdist: Path, dest: Path) -> None:
    """Unpacks only ``vendor/llama.cpp`` from the sdist, to ``dest.part`` then renamed."""
    part = sibling(dest, ".part")
    shutil.rmtree(part, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            bits = member.name.split("/", 3)
            if len(bits) < 4 or bits[1:3] != ["vendor", "llama.cpp"] or bits[3] == ".git":
                continue  # (.git is a submodule link to a repository the sdist does not hold)
            member.name = bits[3]
            tar.extract(member, part, filter="data")
    if not (part / "CMakeLists.txt").exists():
        raise SetupError(f"{sdist.name} has no vendor/llama.cpp")
    os.replace(part, dest)


def ensure_server(
    version: str = LLAMA_CPP_PYTHON_VERSION,
    *,
    cache: Path | None = None,
    report: Report = quiet,
    path: str | None = None,
    jobs: int | None = None,
    python: str = sys.executable,
) -> Path:
    """Makes sure llama-server is built and cached; builds it from the llama-cpp-python sdist if not.

    Args:
        path: the PATH to find cmake and the compilers on (default: the environment's).
        jobs: parallel compile jobs (default: the CPU count).
    """
    target = server_path(version, cache)
    if server_ok(target):
        report(f"server: ready ({target})")
        return target
    tools = check_build_tools(path)
    with cache_lock(target.parent / ".lock", report):
        if server_ok(target):  # another run finished it while we waited
            return target
        return _build_server(version, target, tools, report, path, jobs, python)


def _build_server(
    version: str, target: Path, tools: dict[str, str], report: Report, path: str | None, jobs: int | None,
    python: str,
) -> Path:  # fmt: skip
    env = dict(os.environ, PATH=path if path is not None else os.environ.get("PATH", os.defpath))
    work = target.parent / "work"
    src, build, sdist_dir = work / "llama.cpp", work / "build", work / "sdist"
    env["GIT_CEILING_DIRECTORIES"] = str(work)  # the build-info step must not describe an enclosing repo
    work.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / "build.log"
    started = time.monotonic()
    if not (src / "CMakeLists.txt").exists():
        report(f"server: downloading the llama-cpp-python {version} source distribution with pip")
        shutil.rmtree(sdist_dir, ignore_errors=True)
        result = subprocess.run(
            [python, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--no-cache-dir",
             "--disable-pip-version-check", "--progress-bar", "off", "-q", "-d", str(sdist_dir),
             f"llama-cpp-python=={version}"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, **subprocess_kwargs(),
        )  # fmt: skip
        sdists = sorted(sdist_dir.glob("*.tar.gz"))
        if result.returncode or len(sdists) != 1:
            raise SetupError(f"pip could not download llama-cpp-python=={version}:\n{tail(result.stderr)}")
        t = time.monotonic()
        report(
            f"server: downloaded {sdists[0].name} ({sdists[0].stat().st_size / MB:.0f} MiB) in {t - started:.1f}s"
        )
        _extract_vendor(sdists[0], src)
        shutil.rmtree(sdist_dir, ignore_errors=True)
        report(f"server: unpacked vendor/llama.cpp in {time.monotonic() - t:.1f}s")
    jobs = jobs or os.cpu_count() or 1
    cmake = tools["cmake"]
    configure = [cmake, "-S", str(src), "-B", str(build), *CMAKE_FLAGS]
    if "make" not in Path(tools["make"]).name:
        configure += ["-G", "Ninja"]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} llama-server {version}, {jobs} jobs\n")
        _step("configure", configure, log, env, report)
        _step(f"build ({jobs} jobs)", [cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
              log, env, report)  # fmt: skip
    built = build / "bin" / "llama-server"
    part = sibling(target, ".part")
    shutil.copy2(built, part)
    part.chmod(0o755)
    check = subprocess.run([str(part), "--version"], capture_output=True, text=True, timeout=60)
    if check.returncode:
        raise SetupError(f"the built llama-server does not run (exit {check.returncode}); log: {log_path}")
    os.replace(part, target)
    shutil.rmtree(work, ignore_errors=True)
    report(
        f"server: ready ({target}, {target.stat().st_size / MB:.1f} MiB) in {time.monotonic() - started:.0f}s; "
        f"build log: {log_path}"
    )
    return target


# ---------------------------------------------------------------- running it


DEFAULT_CTX = 8192
DEFAULT_PARALLEL = 2
KEEP_LOGS = 20
_SERIAL = itertools.count(1)


class ServerError(RuntimeError):
    """llama-server could not be started or died; the message names its log."""


def embedded_status(cache: Path | None = None) -> Status:
    """Whether model and binary are in the cache (``.ready``, ``.reason``); stats only, fast."""
    return status(cache)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def default_threads() -> int:
    """The CPUs this process may run on (respects affinity and container cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def server_environment() -> dict[str, str]:
    """llama-server's environment: OpenMP threads that sleep instead of spinning while they wait.

    Why: with its default (active) waiting, each generation step's barrier spins; when the cores are shared
    with the agents' own processes (checks, git, the engine) a descheduled thread stalls the other. Measured on
    a loaded 2-core machine (load ~28), Qwen2.5-Coder-1.5B with 2 threads generated 0.16 tokens/s spinning and
    5.5-9.6 tokens/s with ``OMP_WAIT_POLICY=PASSIVE`` (1 thread: 1.8-4.0). A value the user set is kept.
    """
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _prune_logs(folder: Path, keep: int) -> None:
    with contextlib.suppress(OSError):  # another process may be pruning the same folder
        logs = sorted(folder.glob("llama-server-*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:-keep]:
            old.unlink(missing_ok=True)


def _die_with_us() -> list[str]:
    """``setpriv --pdeathsig KILL`` where util-linux has it: a ``kill -9`` of formicary must not leave a 2 GB
    llama-server running (a graceful exit stops it anyway). The signal survives the exec into llama-server."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class EmbeddedServer:
    """One llama-server process on 127.0.0.1; use ``async with EmbeddedServer() as server: server.base_url``.

    Args:
        port: a fixed port; by default a free one is picked (and another tried if it was taken meanwhile).
        ctx: context per slot, what one request may use (``/props`` reports it as ``n_ctx``); llama-server
            is given ``-c ctx*parallel`` since it splits ``-c`` between the ``parallel`` slots (``-np``).
        threads: generation threads (``-t``); default: the CPUs available.
        extra_args: more llama-server flags, appended last.
    """

    def __init__(
        self,
        model: Path | None = None,
        binary: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ctx: int = DEFAULT_CTX,
        parallel: int = DEFAULT_PARALLEL,
        threads: int | None = None,
        cache: Path | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 300.0,
    ) -> None:
        cache_dir = cache_root(cache)
        self.model = model or model_path(cache=cache_dir)
        self.binary = binary or server_path(cache=cache_dir)
        self.host, self.port = host, port
        self.ctx, self.parallel = ctx, parallel
        self.threads = threads or default_threads()
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.log_dir = cache_dir / "logs"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = self.log_dir / f"llama-server-{stamp}-{os.getpid()}-{next(_SERIAL)}.log"
        self._verify_model = model is None  # the default model must carry setup's checksum stamp
        self._proc: asyncio.subprocess.Process | None = None
        self._exited: asyncio.Task[int] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; only once started."""
        if self._base_url is None:
            raise ServerError("the embedded server is not running")
        return self._base_url

    @property
    def root_url(self) -> str:
        """The server root, where ``/health`` and ``/props`` live."""
        return self.base_url.removesuffix("/v1")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self, port: int) -> list[str]:
        return [
            str(self.binary), "-m", str(self.model), "--host", self.host, "--port", str(port),
            "-c", str(self.ctx * self.parallel), "-np", str(self.parallel), "-t", str(self.threads), *self.extra_args,
        ]  # fmt: skip

    async def start(self) -> str:
        """Starts llama-server and waits until ``/health`` says ok; returns the OpenAI base URL."""
        if self._proc is not None and self._proc.returncode is None:
            return self.base_url
        for what, path in (("model", self.model), ("llama-server", self.binary)):
            if not path.is_file():
                raise ServerError(f"embedded {what} not found at {path}; run `formicary model setup`")
        if self._verify_model and not model_verified(self.model, DEFAULT_MODEL):
            raise ServerError(f"embedded model at {self.model} is not verified; run `formicary model setup`")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _prune_logs(self.log_dir, KEEP_LOGS)
        try:
            return await self._launch()
        except BaseException:  # a failed or cancelled start leaves no process behind
            await self.stop()
            raise

    async def _launch(self) -> str:
        for _attempt in range(3):
            port = self.port or free_port(self.host)
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(self.command(port))}\n".encode())
                log.flush()
                self._proc = await asyncio.create_subprocess_exec(
                    *_die_with_us(),
                    *self.command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=server_environment(),
                )
            self._exited = asyncio.create_task(self._proc.wait())
            try:
                await self._wait_ready(port)
            except ServerError:
                if self.port is None and "bind" in self._logtail().lower():
                    continue  # the free port was taken before llama-server bound it: pick another
                raise
            self._base_url = f"http://{self.host}:{port}/v1"
            return self._base_url
        raise ServerError(f"llama-server could not bind a port; log: {self.log_path}")

    async def _wait_ready(self, port: int) -> None:
        import httpx

        assert self._exited is not None
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self._exited.done():
                    raise ServerError(
                        f"llama-server exited with code {self._exited.result()} before it was ready; "
                        f"log: {self.log_path}\n{self._logtail()}"
                    )
                try:
                    reply = await http.get(f"http://{self.host}:{port}/health")
                    if reply.status_code == 200 and reply.json().get("status") == "ok":
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ServerError(
                        f"llama-server not ready after {self.ready_timeout:.0f}s; log: {self.log_path}"
                    )
                await asyncio.wait({self._exited}, timeout=0.25)

    def _logtail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    async def props(self) -> dict[str, Any]:
        """llama-server's ``GET /props`` (``default_generation_settings.n_ctx`` is the per-slot context)."""
        import httpx

        async with httpx.AsyncClient(timeout=10.0) as http:
            reply = await http.get(f"{self.root_url}/props")
            reply.raise_for_status()
            return reply.json()

    async def revive(self) -> bool:
        """Start llama-server again, on the same port, if its process died; True if it was restarted."""
        if self._proc is None or self._proc.returncode is None or self._base_url is None:
            return False
        port, fixed = int(self._base_url.rsplit(":", 1)[1].split("/", 1)[0]), self.port
        self._proc = None
        self.port = port  # the pools know it by its URL
        try:
            await self.start()
        finally:
            self.port = fixed
        return True

    async def wait(self) -> int:
        """Waits for the process to exit (it should not until stopped); returns its exit code."""
        if self._exited is None:
            raise ServerError("the embedded server was never started")
        return await asyncio.shield(self._exited)  # a cancelled waiter must not hide the process from stop()

    async def stop(self, grace: float = 10.0) -> None:
        """Terminates llama-server, waits up to ``grace`` seconds, then kills it."""
        proc, self._base_url = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
