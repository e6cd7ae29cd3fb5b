"""Helpers every ``formicary`` subcommand module shares, so those modules never import each other."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr and a non-zero exit: how every bad input ends."""
    click.echo(f"formicary: {message}", err=True)
    sys.exit(code)


def load_settings_or_fail(repo: Path | None = None, config_file: Path | None = None):
    """The settings for ``repo`` (its ``formicary.toml``, the user config, ``config_file``), or a one-line exit."""
    from .config import ConfigError, load_settings

    try:
        return load_settings(repo=repo, config_file=config_file)
    except ConfigError as exc:
        fail(str(exc))


def open_browser() -> None:
    """``formicary`` with no command: the sessions browser."""
    from .agents import paths
    from .tui import browse

    browse(paths.default_db_path())
