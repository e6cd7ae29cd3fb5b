"""llama-server for the embedded model: run on a free localhost port, once built (:mod:`.server_build`).

``EmbeddedServer`` owns one llama-server process serving the cached default model, the endpoint used when none
is configured; its output goes to a log file in the cache dir and ``start()`` returns once ``/health`` answers
ok. ``ensure_server`` (re-exported) builds the binary the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from .server_build import build_percent, check_build_tools, ensure_server
from .setup import (
    DEFAULT_MODEL,
    Status,
    cache_root,
    is_ready,
    model_path,
    model_verified,
    server_path,
    status,
)

__all__ = [
    "EmbeddedServer",
    "ServerError",
    "build_percent",
    "check_build_tools",
    "embedded_status",
    "ensure_server",
    "is_ready",
    "status",
]

# ---------------------------------------------------------------- running it


DEFAULT_CTX = 8192
DEFAULT_PARALLEL = 2
KEEP_LOGS = 20
BATCH = 512
"""Tokens llama-server decodes per step (``-b``/``-ub``; its default step is 2,048). Every slot that is
generating adds its next token to the step that also reads other slots' prompts, so on 2 cores (~70 prompt
tokens/s) a 2,048-token step held every generating slot for ~28 s per token: a draft of 59 tokens took 150 s
behind two workers reading their first prompts. At 512 a step takes ~7 s and prompts read about as fast."""
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
            "-c", str(self.ctx * self.parallel), "-np", str(self.parallel), "-t", str(self.threads),
            "-b", str(BATCH), "-ub", str(BATCH), *self.extra_args,
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
