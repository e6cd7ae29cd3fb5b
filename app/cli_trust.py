"""``formicary trust [REPO]``: let a repository's own ``formicary.toml``, exactly as it is now, set security keys."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import fail


@click.command()
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--forget", is_flag=True, help="Stop trusting the file.")
def trust(repo: Path, forget: bool) -> None:
    """Trust REPO's formicary.toml (default: the current folder) as it is now.

    Until trusted, a repository's config may not set sandbox.*, base_url, api, api_key_env or roles.*.prompt:
    read the file first. Any later change to it makes it untrusted again.
    """
    from . import trust as record

    config = repo / record.REPO_CONFIG_NAME
    if forget:
        if not record.forget(config):
            fail(f"{config} was not trusted")
        click.echo(f"no longer trusted: {config.resolve()}")
        return
    if not config.is_file():
        fail(f"{config} does not exist")
    try:
        digest = record.trust(config)
    except OSError as exc:
        fail(f"{config}: cannot read: {exc.strerror or exc}")
    click.echo(f"trusted: {config.resolve()} (sha256 {digest[:16]}); any change makes it untrusted again")
