"""The `lceval` command line.

The commands live one group per module, each registering on the one app (lceval.cli.app): `run` (run.py),
`tasks` and `models` (catalog.py), `show`, `heatmap` and `score` (results.py), `compare`, `gate` and `report`
(compare.py), and `train`, `export` and `data` (lceval.training.cli). This module runs a command line and turns
bad input of any kind into one sentence and an exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from rich.markup import escape

from lceval.api.errors import UserError
from lceval.cli.app import app, console

# Each module registers its commands on import; this order is `lceval --help`'s.
for _group in ("lceval.cli.run", "lceval.cli.catalog", "lceval.cli.results", "lceval.training.cli",
               "lceval.cli.compare"):
    importlib.import_module(_group)


EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130  # the README's "Exit codes"


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _click_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Click's exception classes `(module, name)`: typer's vendored copy and click itself, whichever are installed."""
    import importlib

    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_PARSE_ERRORS = {"int_parsing": "a whole number", "int_from_float": "a whole number", "int_type": "a whole number",
                 "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false"}


def _usage_sentence(err: Exception) -> str:
    """A flag click could not parse, as the settings errors read: the flag, the value, what is allowed."""
    from pydantic import ValidationError

    from lceval.api.settings import allowed, command_settings, show

    context = getattr(err, "ctx", None)
    param = getattr(err, "param", None)
    cause = err.__cause__
    hint = f"; see `{context.command_path} --help`" if context is not None else ""
    if param is not None and isinstance(cause, ValidationError) and cause.errors():
        first = cause.errors()[0]
        flag = (getattr(param, "opts", None) or [param.name])[0]
        settings = command_settings(context.command.name) if context is not None else None
        if settings is not None and param.name in settings.__pydantic_fields__:
            what = allowed(settings, param.name)
        else:
            what = _PARSE_ERRORS.get(first.get("type"), "")
        if what:
            return f"{flag} {show(first.get('input'))} must be {what}{hint}."
    return f"{err.format_message().rstrip('.')}{hint}."


def run_cli(argv: list[str] | None = None) -> int:
    """Run one `lceval` command line; returns its exit code. Bad input of any kind (a flag click cannot parse, a
    value out of range, a file that cannot be read or written) is one `error:` line and exit 2, never a traceback."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        result = app(args=argv, prog_name="lceval", standalone_mode=False)
    except UserError as err:
        _error(str(err))
        return err.exit_code
    # click's own errors (typer >= 0.22 vendors click): usage errors exit 2
    except _click_classes(("typer", "TyperException"), ("click", "ClickException")) as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `lceval` or `lceval data` alone: the help
            print(err.format_message())
            return err.exit_code
        _error(_usage_sentence(err))
        return err.exit_code
    except _click_classes(("typer", "Abort"), ("click.exceptions", "Abort")):
        _error("aborted.")
        return EXIT_GATE_FAILED
    except OSError as err:  # a file the helpers of lceval.api.files did not see (a library's own write, say)
        if err.filename is None:
            raise
        from lceval.api.files import os_error

        _error(str(os_error(err, Path(err.filename), "access")))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        result = EXIT_INTERRUPTED
    if result == EXIT_INTERRUPTED:  # typer turns Ctrl-C into exit code 130
        console.print("interrupted; rerun with the same --run-id to continue.")
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    sys.exit(run_cli())
