"""`lceval tasks` and `lceval models`: what lceval knows by name."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lceval.api.errors import UserError
from lceval.api.settings import allowed
from lceval.cli.app import app, stdout
from lceval.models import DEFAULT_MODEL


@app.command("tasks")
def list_tasks(
    options: Annotated[str | None, typer.Option("--options", help="List this task's options (-o TASK.KEY=VALUE): "
                                                                  "each key, what it allows and its default.")] = None,
) -> None:
    """List the registered tasks and backends, or one task's options."""
    from lceval.api import registry

    if options is not None:
        _print_task_options(options)
        return
    table = Table("kind", "name", "description")
    for kind, reg in (("task", registry.tasks), ("backend", registry.backends)):
        for name in reg.names():
            try:
                description = getattr(reg.get(name), "description", "") or registry.first_line(reg.get(name).__doc__)
            except UserError as err:
                description = f"[red]{escape(str(err))}[/]"
            table.add_row(kind, name, description)
    stdout().print(table)


def _print_task_options(name: str) -> None:
    """`lceval tasks --options NAME`: the keys of a task's typed options, their ranges and defaults."""
    from dataclasses import MISSING, fields

    from lceval.api import registry

    factory = registry.tasks.get(name)
    options_class = getattr(factory, "options_class", None)
    if options_class is None:
        raise UserError(f"task {name!r} declares no typed options (a plugin without options_class).")
    table = Table("option", "allowed", "default", title=f"-o {name}.KEY=VALUE")
    for f in fields(options_class):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "(required)")
        table.add_row(f"{name}.{f.name}", escape(allowed(options_class, f.name)), escape(repr(default)))
    stdout().print(table)


@app.command("models")
def list_models() -> None:
    """List the models lceval knows by name (--model NAME), whether each is installed, and how to install it."""
    from lceval.models import NAMED_MODELS

    table = Table("name", "installed", "what it is", "to install")
    for model in NAMED_MODELS.values():
        installed = "yes" if model.built or model.locate() else "[red]no[/]"  # built: nothing to look for
        name = f"{model.name} (default)" if model.name == DEFAULT_MODEL else model.name
        table.add_row(name, installed, model.description, escape(model.install))
    stdout().print(table)


