"""The scripted model server as a separate process, so its CPU is not counted with the code under test.

``python -m tests.scripted_process --latency 2 --responder pkg.module:function`` (or ``python -m
tests.scripted_server``) prints the base URL as its first stdout line and serves until SIGTERM/SIGINT; after a
SIGUSR1 every chat request fails with HTTP 500. :func:`spawn_server_process` starts it from a test or a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.scripted_server import DEFAULT_MODEL, REPO_ROOT, Failure, Reply, Responder, ScriptedServer


def load_responder(spec: str) -> Responder:
    """Import a responder named ``package.module:function``."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"a responder looks like 'package.module:function', not {spec!r}")
    return getattr(importlib.import_module(module_name), attr)


def spawn_server_process(
    *,
    responder: str | None = None,
    script: str | Path | Sequence[Reply] | None = None,
    latency: float = 0.0,
    n_ctx: int = 8192,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 20.0,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m tests.scripted_server`` and return ``(process, base_url)`` once it serves.

    ``responder`` is ``package.module:function``; ``script`` a JSON file or a list of replies; ``extra_args``
    more command-line options (``--model``, ``--retry-after``...). Stop it with :func:`stop_server_process`.
    """
    cmd = [sys.executable, "-m", "tests.scripted_process", f"--latency={latency}", f"--n-ctx={n_ctx}"]
    if responder:
        cmd.append(f"--responder={responder}")
    if isinstance(script, str | Path):
        cmd.append(f"--script={script}")
    elif script is not None:
        cmd.append(f"--script-json={json.dumps(list(script))}")
    proc = subprocess.Popen([*cmd, *extra_args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], startup_timeout)
    line = proc.stdout.readline().strip() if readable else ""
    if not line.startswith("http://"):
        stop_server_process(proc)
        raise RuntimeError(
            f"the scripted server process did not start (exit code {proc.returncode}): {line!r}"
        )
    return proc, line


def stop_server_process(proc: subprocess.Popen[str], timeout: float = 10.0) -> int:
    """SIGTERM the process, wait (kill after ``timeout``), and return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line is the base URL, a summary goes to stderr at exit."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.scripted_process", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--responder", help="package.module:function (default: echo the last user message)")
    parser.add_argument("--script", help="a JSON file holding a list of replies")
    parser.add_argument("--script-json", help="a JSON list of replies, inline")
    parser.add_argument("--on-exhausted", choices=("error", "repeat"), default="error")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--stream-chunk-chars", type=int, default=16)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", help="require this bearer key (401 otherwise)")
    parser.add_argument("--strict-model", action="store_true", help="404 for any other model name")
    parser.add_argument("--enforce-context", action="store_true", help="400 for prompts longer than --n-ctx")
    parser.add_argument("--fail-always", help="every chat request fails in this mode")
    options = vars(parser.parse_args(argv))
    responder, script, script_json = (
        options.pop("responder"),
        options.pop("script"),
        options.pop("script_json"),
    )
    replies = (
        json.loads(Path(script).read_text()) if script else json.loads(script_json) if script_json else None
    )
    server = ScriptedServer(load_responder(responder) if responder else None, replies, **options)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        # SIGUSR1: from now on every chat request fails with HTTP 500 (a server that starts failing mid-run)
        loop.add_signal_handler(signal.SIGUSR1, lambda: setattr(server, "fail_always", Failure("500")))
        await server.serve(lambda: print(server.base_url, flush=True))

    asyncio.run(run())
    summary = f"{server.request_count} chat requests, max in flight {server.max_in_flight}"
    print(f"scripted server: {summary}, {len(server.errors)} errors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
