"""``formicary serve``: the TUI in a browser, on loopback by default, behind a token."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import fail


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="The address to bind (loopback by default)."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="The port to bind."
)
@click.option(
    "--public-url",
    help="The address the browser uses, when it differs (an SSH tunnel to another port, a proxy).",
)
@click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="The record to browse."
)
def serve(host: str, port: int, public_url: str | None, db_path: Path | None) -> None:
    """Serve the TUI over HTTP for a browser: the sessions browser, sessions read-only or attached (steer them
    from there). Open the printed URL (it carries the access token); from another machine, tunnel it:
    ssh -L 8765:127.0.0.1:8765 this-host."""
    import logging

    from .serve import TokenServer, app_command, is_loopback, new_token

    if public_url is not None and not public_url.startswith(("http://", "https://")):
        fail(f"--public-url must start with http:// or https://, not {public_url!r}")
    if db_path is not None and not db_path.is_file():
        fail(f"no record at {db_path}")
    if not is_loopback(host):
        click.echo(
            f"formicary: warning: serving on {host}, reachable from other machines (the token is the only lock)",
            err=True,
        )
    server = TokenServer(
        app_command(db_path.resolve() if db_path else None),
        host=host,
        port=port,
        token=new_token(),
        public_url=public_url.rstrip("/") if public_url else None,
    )
    server.initialize_logging = lambda: logging.basicConfig(level=logging.WARNING)  # type: ignore[method-assign]
    try:
        server.serve()
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
