"""The ``formicary`` command line. Subcommands load their modules only when run, so ``--help`` stays fast."""

from __future__ import annotations

import importlib

import click

from .cli_common import fail

__all__ = ["fail", "main"]

LAZY_COMMANDS = {
    "run": ("formicary.cli_run", "run", "Run a session on a repository: the TUI, or --headless."),
    "resume": ("formicary.cli_run", "resume", "Carry on a session after a crash or a stop."),
    "attach": ("formicary.cli_run", "attach", "Open the TUI on a session running in another terminal."),
    "sessions": ("formicary.cli_info", "sessions", "List past sessions from the record."),
    "calls": ("formicary.cli_calls", "calls", "Print an agent's model calls, whole conversations rebuilt."),
    "show": (
        "formicary.cli_show",
        "show",
        "Summarise a session: branch, commits, checks, tokens, how to merge.",
    ),
    "report": (
        "formicary.cli_report",
        "report",
        "Write a session's charts and tables as one HTML file that opens offline.",
    ),
    "serve": (
        "formicary.cli_serve",
        "serve",
        "Serve the TUI to a browser (loopback, token-protected URL).",
    ),
    "doctor": ("formicary.cli_info", "doctor", "Check every configured model endpoint."),
    "trust": (
        "formicary.cli_trust",
        "trust",
        "Trust a repository's formicary.toml (as it is now) to set sandbox and endpoint keys.",
    ),
    "model": ("formicary.cli_model", "model", "Set up and serve the embedded local model."),
    "demo": (
        "formicary.cli_run",
        "demo",
        "Set up the local model and run on a fresh copy of the demo project.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attr, _help = LAZY_COMMANDS[cmd_name]
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                return None
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        """Any subcommand: a file that is not a record ends in one line, not a traceback."""
        import sqlite3

        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as exc:
            fail(f"cannot use the record: {exc} (--db or FORMICARY_DB names another file)")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(sorted((name, entry[2]) for name, entry in LAZY_COMMANDS.items()))


@click.group(
    cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="formicary", message="formicary %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """formicary: many coding agents on one git repository — planners, workers, a judge, fresh cycles.

    Run with no command to open the sessions browser.
    """
    if ctx.invoked_subcommand is None:
        from .cli_common import open_browser

        open_browser()
