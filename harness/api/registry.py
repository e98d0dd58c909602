"""Registries of tasks and backends: built-ins register by decorator, plugins through entry points.

Entry points (groups `lceval.tasks` and `lceval.backends`) are listed by name at first use and imported only
when that name is asked for, so a broken plugin cannot break unrelated runs. Built-ins win name clashes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from lceval.api.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtin_modules: Callable[[], list[str]]):
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._plugins: dict[str, EntryPoint] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self._items[name] = obj
            return obj

        return decorator

    def register_prefix(self, prefix: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
        """Names `PREFIX<name>` resolve to `maker(<name>)`: a family open-ended by name (lm-eval's tasks)."""

        def decorator(maker: Callable[[str], T]) -> Callable[[str], T]:
            self._prefixes[prefix] = maker
            return maker

        return decorator

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for module in self._builtin_modules():
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name not in self._items:
                self._plugins[ep.name] = ep

    def names(self) -> list[str]:
        self._discover()
        return sorted({*self._items, *self._plugins, *(f"{prefix}<name>" for prefix in self._prefixes)})

    def in_order(self) -> list[str]:
        """Every name, the built-ins in their modules' order (whichever was imported first), then the plugins (no
        prefix families)."""
        self._discover()
        rank = {module: i for i, module in enumerate(self._builtin_modules())}

        def module_rank(name: str) -> int:
            item = self._items[name]
            return rank.get(getattr(getattr(item, "task_class", item), "__module__", ""), len(rank))

        return [*sorted(self._items, key=module_rank), *(name for name in self._plugins if name not in self._items)]

    def get(self, name: str) -> T:
        self._discover()
        for prefix, maker in self._prefixes.items():
            if name.startswith(prefix) and name not in self._items:
                if not name[len(prefix):]:
                    raise UserError(f"{self.kind} {name!r} names no {prefix.rstrip(':')} {self.kind}; "
                                    f"write {prefix}<name>.")
                return maker(name[len(prefix):])
        if name not in self._items and name in self._plugins:
            ep = self._plugins.pop(name)
            try:
                self._items[name] = ep.load()
            except Exception as err:
                raise UserError(f"{self.kind} plugin {name!r} ({ep.value}) failed to load: {err}") from err
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}.")
        return self._items[name]


def _task_modules() -> list[str]:
    from lceval.tasks import BUILTIN_TASK_MODULES

    return BUILTIN_TASK_MODULES


def _backend_modules() -> list[str]:
    from lceval.backends import BUILTIN_BACKEND_MODULES

    return BUILTIN_BACKEND_MODULES


tasks: Registry = Registry("task", "lceval.tasks", _task_modules)
backends: Registry = Registry("backend", "lceval.backends", _backend_modules)


def register_variant(task_class, name: str, description: str, *, reads_data_dir: bool = False, **preset) -> None:
    """Register `name` as `task_class` with preset options: a benchmark's named subsets and settings.

    Options given by the user override the preset; `reads_data_dir` lets `lceval run --data-dir` reach it.
    """

    def factory(options=None):
        task = task_class({**preset, **(options or {})})
        task.name = name
        return task

    factory.description = description
    factory.reads_data_dir = reads_data_dir
    factory.options_class = getattr(task_class, "options_class", None)
    factory.task_class = task_class  # its declaration (lceval.api.task.declaration_of)
    tasks.register(name)(factory)


def first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""
