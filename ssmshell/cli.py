"""Command-line front end (click). Commands stay thin: they parse, delegate, map errors."""

from __future__ import annotations

import sys

import click

from ssmshell import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssmshell")
def cli() -> None:
    """Session Manager shells, ECS Exec, commands and port forwards, with no plugin."""


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="ssmshell")
    except KeyboardInterrupt:
        sys.exit(130)
