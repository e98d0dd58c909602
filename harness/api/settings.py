"""Every setting a user can give, parsed into typed, range-checked values before any work starts.

Run flags and `--config` YAML (lceval.running.config.RunConfig), task options (`-o TASK.KEY=VALUE`, each task's options
class), recipe sections and overrides (lceval.training.recipe) and gate policies (lceval.analysis.gate) are all pydantic
dataclasses built with `settings_class` and parsed with `parse`. A field's type carries its range (the aliases
below); the same field then gives the CLI help its range (`allowed`) and a refused value its one sentence:

    --batch-size -1 must be a whole number, 1 or more.
    needle.lengths 'abc' must be a list of whole numbers, each 1 or more.
    training.learning_rate -0.001 in recipe r.yaml must be a number above 0.

Checks that relate two settings (a minimum below a maximum) stay beside the class, as one sentence each.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from lceval.api.errors import UserError

# Unknown keys are refused (a typo is an error, not a setting silently ignored); YAML numbers given for text are
# taken as text (needle.answer=12345).
SETTINGS_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True, arbitrary_types_allowed=True)
settings_class = partial(pydantic_dataclass, config=SETTINGS_CONFIG)


class Allowed:
    """Field metadata: what the field allows, in words, where its type cannot say it (a name, not a path)."""

    def __init__(self, text: str):
        self.text = text


def split_commas(value: Any) -> Any:
    """`a,b` or `[a, b]`: a comma list given as one string becomes a list of its non-empty items."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def check_name(value: str) -> str:
    """A folder name of its own: no separator, not `.` or `..`, so that OUT/NAME always lies inside OUT."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or len(value.encode()) > 200:
        raise ValueError("not a name")
    return value


Count = Annotated[int, Field(ge=1)]  # 1 or more
NonNegativeInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100)]
Share = Annotated[float, Field(gt=0, le=1)]  # a fraction above 0, at most 1
Probability = Annotated[float, Field(ge=0, lt=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]  # 0 to 1, both included
NonEmptyText = Annotated[str, Field(min_length=1)]
CommaList = Annotated[list[str], BeforeValidator(split_commas)]
Name = Annotated[str, AfterValidator(check_name),
                 Allowed("a name, not a path (no '/' or '\\', not '.' or '..', at most 200 bytes)")]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


# --------------------------------------------------------------------------------------------- what is allowed


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        inner = getattr(item, "metadata", None)
        if isinstance(inner, list):  # a FieldInfo inside Annotated
            found.update(_bounds(inner))
        for key in ("ge", "gt", "le", "lt", "min_length"):
            if getattr(item, key, None) is not None:
                found[key] = getattr(item, key)
    return found


def _number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _range(bounds: dict[str, Any]) -> str:
    ge, gt, le, lt = (bounds.get(k) for k in ("ge", "gt", "le", "lt"))
    if ge is not None and le is not None:
        return f"from {_number(ge)} to {_number(le)}"
    low = f"at least {_number(ge)}" if ge is not None else f"above {_number(gt)}" if gt is not None else None
    high = f"at most {_number(le)}" if le is not None else f"below {_number(lt)}" if lt is not None else None
    if low and high:
        return f"{low} and {high}"
    if ge is not None:
        return f"{_number(ge)} or more"
    if le is not None:
        return f"{_number(le)} or less"
    return low or high or ""


def describe(annotation: Any, metadata: list[Any] | None = None, plural: bool = False) -> str:
    """What a field of this type allows, in words: `a whole number, 1 or more`, `one of hf, vllm`."""
    metadata = list(metadata or [])
    for item in metadata:
        if isinstance(item, Allowed):
            return item.text
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *more = get_args(annotation)
        return describe(base, [*metadata, *more], plural)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(describe(a, metadata, plural) for a in options)
    if origin is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        inner = describe(args[0], plural=True) if args else "values"
        return f"a {'non-empty ' if _bounds(metadata).get('min_length') else ''}list of {inner}"
    if origin is dict or annotation is dict:
        return "a mapping"
    bounds = _bounds(metadata)
    span = _range(bounds)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        noun = "whole numbers" if plural else "a whole number"
    elif annotation is float:
        noun = "numbers" if plural else "a number"
    elif annotation is str:
        noun = "texts" if plural else "text"
        return f"non-empty {noun}" if bounds.get("min_length") else noun
    elif annotation is Path:
        noun = "paths" if plural else "a path"
    else:
        return "values" if plural else "a value"
    if not span:
        return noun
    return f"{noun}, each {span}" if plural else (f"{noun} {span}" if span.startswith(("from", "above", "below"))
                                                  else f"{noun}, {span}")


def allowed(cls: type, name: str) -> str:
    """What the field `name` of a settings class allows, in words (for help texts and errors)."""
    info = cls.__pydantic_fields__[name]
    return describe(info.annotation, list(info.metadata))


# --------------------------------------------------------------------------------------------- parsing


def show(value: Any) -> str:
    """A value as the user wrote it (strings quoted, so that an empty one is visible)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)] if is_dataclass(cls) else list(cls.__pydantic_fields__)


def sentence(cls: type, err: ValidationError, data: Mapping[str, Any], label: Callable[[str], str],
             where: Callable[[str], str]) -> str:
    """The first error of a validation, as one sentence naming the key, the value given and what is allowed."""
    error = err.errors()[0]
    loc = error.get("loc") or ()
    key = str(loc[0]) if loc else ""
    if key not in cls.__pydantic_fields__:  # a check over the whole class: its own message is the sentence
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        return message if message.endswith(".") else message + "."
    value = data[key] if key in data else error.get("input")
    if error.get("type") == "missing":
        return f"{label(key)}{where(key)} is required; it must be {allowed(cls, key)}."
    what = allowed(cls, key)
    if isinstance(value, str) and what.startswith(("a list", "a non-empty list")):
        what += " (written [a,b,c])"
    return f"{label(key)} {show(value)}{where(key)} must be {what}."


def parse(cls: type, data: Mapping[str, Any], *, label: Callable[[str], str] = str,
          where: Callable[[str], str] = lambda key: "", unknown: Callable[[str, list[str]], str] | None = None) -> Any:
    """`cls(**data)`, or a UserError whose one sentence names the first bad key, its value and what is allowed."""
    known = field_names(cls)
    extra = sorted(set(map(str, data)) - set(known))
    if extra:
        if unknown is not None:
            raise UserError(unknown(extra[0], sorted(known)))
        raise UserError(f"unknown setting {label(extra[0])}{where(extra[0])}; known: {', '.join(sorted(known))}.")
    try:
        return cls(**data)
    except ValidationError as err:
        raise UserError(sentence(cls, err, data, label, where)) from None


def parse_options(cls: type, options: Mapping[str, Any], task: str) -> Any:
    """A task's options (`-o TASK.KEY=VALUE`, a config file's task_options) as its typed options class."""
    return parse(cls, options, label=lambda key: f"{task}.{key}",
                 unknown=lambda key, known: f"unknown {task} option {key!r}; known options: {', '.join(known)}.")


# --------------------------------------------------------------------------------------------- command flags
# The flags of the commands other than `lceval run` (whose settings are lceval.running.config.RunConfig) that take
# values with a range. Each command parses its flags with `flags(Class, **values)` before any work.


@settings_class
class CompareFlags:
    format: Literal["table", "md", "csv", "json"] = "table"


@settings_class
class ScoreFlags:
    scorer: Literal["v-a", "v-b"] = "v-a"


@settings_class
class HeatmapFlags:
    task: NonEmptyText | None = None  # None: the run's first task with a grid
    training_length: Count | None = None


@settings_class
class ExportFlags:
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


@settings_class
class SynthFlags:
    tasks: CommaList | None = None
    concurrency: Count = 4
    max_retries: NonNegativeInt = 5
    request_timeout: PositiveFloat = 600.0
    max_tokens: Count | None = None
    limit: Count | None = None


ARGUMENTS = {"benchmark": "BENCHMARK"}  # positional arguments, named as the help names them


def flag_label(key: str) -> str:
    return ARGUMENTS.get(key) or "--" + key.replace("_", "-")


def flags(cls: type, **values: Any) -> Any:
    """A command's flags as its typed class; a refused value names the flag (--concurrency 0 must be ...)."""
    return parse(cls, values, label=flag_label)


def command_settings(command: str) -> type | None:
    """The settings class whose fields a command's flags are (for the help's ranges and click's parse errors)."""
    if command == "run":
        from lceval.running.config import RunConfig

        return RunConfig
    if command == "retrieval":
        from lceval.training.retrieval import RetrievalSpec

        return RetrievalSpec
    return {"compare": CompareFlags, "score": ScoreFlags, "heatmap": HeatmapFlags, "export": ExportFlags,
            "synth": SynthFlags}.get(command)


def parse_assignment(text: str, what: str, form: str, example: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line, the value read as YAML (numbers, lists, booleans): (KEY, value). `what`
    names the thing in errors, `form` and `example` show what is expected."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{what} {text!r} is not of the form {form}, e.g. {example}.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"the value of {what} {text!r} is not valid YAML; quote it.") from err
    return key.strip(), value


def parse_dotted_assignment(text: str, what: str, form: str, example: str, *,
                            last_dot: bool = False) -> tuple[str, str, Any]:
    """`OWNER.KEY=VALUE` (a task's option, a recipe section's key): (OWNER, KEY, value), split at the first dot (or
    the last, where OWNER may hold dots)."""
    key, value = parse_assignment(text, what, form, example)
    owner, dot, name = key.rpartition(".") if last_dot else key.partition(".")
    if not dot or not owner or not name:
        raise UserError(f"{what} {text!r} is not of the form {form}, e.g. {example}.")
    return owner, name, value
