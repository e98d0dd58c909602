"""The `lceval` app, its stderr console and its stdout tables: what every command module of lceval.cli shares."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate long-context language models: needle, LongBench, InfiniteBench and more.")
console = Console(stderr=True, soft_wrap=True)


def stdout() -> Console:
    """Tables on stdout, at full width when piped (rich would cut them to 80 columns)."""
    return Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)
