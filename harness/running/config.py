"""Run settings: a YAML file and command-line flags say the same things; flags win."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from lceval.api import registry
from lceval.api.backend import Backend
from lceval.api.errors import UserError
from lceval.api.files import read_yaml
from lceval.api.settings import (
    Allowed,
    Count,
    Dtype,
    Name,
    NonEmptyText,
    NonNegativeInt,
    PositiveFloat,
    Seed,
    Share,
    field_names,
    parse,
    parse_assignment,
    parse_dotted_assignment,
    settings_class,
    split_commas,
)


def _some_task(names: list[str]) -> list[str]:
    if not names:
        raise ValueError("no task given")
    return names


Tasks = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(_some_task),
                  Allowed("a comma list of task names, e.g. needle,longbench")]


@settings_class
class RunConfig:
    """The settings of `lceval run`: each field's type is its range, checked before any work (lceval.api.settings)."""

    model: str | None = None  # a local folder, hub id, GGUF file or model name; None: lceval.models.DEFAULT_MODEL
    adapter: str | None = None
    revision: str | None = None
    tasks: Tasks = field(default_factory=lambda: ["needle"])
    backend: NonEmptyText = "auto"
    max_length: Count | None = None  # the window the model is opened with; default: its max_position_embeddings
    rope_theta: PositiveFloat | None = None
    dtype: Dtype = "auto"
    out: NonEmptyText = "results"
    run_id: Name | None = None  # a folder name inside `out`, never a path
    limit: Count | None = None  # first N samples of each task
    chat_template: bool = True
    trust_remote_code: bool = False
    batch_size: Count = 8
    gpu_memory_utilization: Share | None = None
    tensor_parallel_size: Count = 1  # --backend vllm: split the model over this many GPUs of this machine
    seed: Seed = 0
    data_dir: str | None = None  # benchmark files in their official layout, for every task that reads data files
    num_fewshot: NonNegativeInt | None = None  # for every task that takes few-shot examples (mmlu, lm-eval:<name>)
    # The backend's own settings (`-M KEY=VALUE`, and the server flags of `lceval run`): the runner hands them over
    # unread; the backend's class checks them (lceval.api.backend.Backend.options_class) and they reach it as
    # BackendSettings.extra. Those that can change an output are part of the run's fingerprint.
    backend_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping, parsed safely (no object construction); `what` names the file in errors."""
    data = read_yaml(Path(path), what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of settings, not a {type(data).__name__}.")
    return data


def parse_task_option(text: str) -> tuple[str, str, Any]:
    """`task.key=value` (value as YAML: numbers, lists, booleans) to (task, key, value)."""
    return parse_dotted_assignment(text, "task option", "TASK.KEY=VALUE", "needle.lengths=[1000,2000]",
                                   last_dot=True)


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def parse_backend_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` (value as YAML) to (key, value): one of the run backend's own settings (-M)."""
    return parse_assignment(text, "backend option", "KEY=VALUE", "-M max_batch=4")


def backend_class(cfg: RunConfig) -> type[Backend]:
    """The class of the run's backend, whose class methods read its own settings; for `auto`, the contract's
    defaults (vLLM and hf take no options of their own)."""
    return Backend if cfg.backend == "auto" else registry.backends.get(cfg.backend)


def option_owner(key: str) -> str | None:
    """The first registered backend that takes option `key`, or None."""
    for name in registry.backends.in_order():
        try:
            options = registry.backends.get(name).options_class
        except Exception:  # a plugin that fails to import says so when it is the run's backend, not here
            continue
        if options is not None and key in field_names(options):
            return name
    return None


def check_backend_options(cfg: RunConfig, label: Callable[[str], str] = lambda key: f"-M {key}") -> None:
    """Refuse, before any work, an option the run's backend does not take (naming the backend that does, where
    one does: it would be ignored) or a value it refuses; `label` names an option as the user gave it."""
    cls = backend_class(cfg)
    known = field_names(cls.options_class) if cls.options_class is not None else []
    for key, value in cfg.backend_options.items():
        owner = option_owner(key) if key not in known else None
        if owner is not None:
            registry.backends.get(owner).read_options({key: value}, label)  # a bad value is said as such first
            raise UserError(f"{label(key)} applies to --backend {owner}, not {cfg.backend}; drop it or pass "
                            f"--backend {owner}.")
    cls.read_options(cfg.backend_options, label)


def build_config(config_file: Path | None, flags: dict[str, Any], task_options: list[str],
                 backend_options: list[str] = (), backend_flags: dict[str, Any] | None = None) -> RunConfig:
    """The YAML file's settings, overridden by every flag that was given (not None), typed and range-checked.

    `backend_options`: `-M KEY=VALUE` pairs; `backend_flags`: backend options given as flags of their own
    (`--base-url`), each None where not given. Both win over the file's `backend_options:`.
    A refused value is one sentence naming its flag (--batch-size, -M key) or its key and file (batch_size in
    config file run.yaml), the value, and what is allowed.
    """
    data = load_yaml(config_file) if config_file else {}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        owner = option_owner(str(unknown[0]))
        if owner is not None:
            raise UserError(f"config file {config_file}: {unknown[0]} is an option of --backend {owner}; put it "
                            f"under backend_options: ({{{unknown[0]}: ...}}).")
        raise UserError(f"config file {config_file} has unknown setting {unknown[0]!r}; "
                        f"known: {', '.join(sorted(known))}.")
    given = {k: v for k, v in flags.items() if v is not None}
    data.update(given)
    raw_options = data.get("task_options") or {}
    if not isinstance(raw_options, dict) or any(not isinstance(v, dict | None) for v in raw_options.values()):
        raise UserError(f"task_options in config file {config_file} must map each task to a mapping of its "
                        "options, e.g. needle: {lengths: [1000, 2000]}.")
    options = {str(name): dict(values or {}) for name, values in raw_options.items()}
    for text in task_options:
        task, option, value = parse_task_option(text)
        options.setdefault(task, {})[option] = value
    data["task_options"] = options
    given_backend = data.get("backend_options")
    if not isinstance(given_backend, dict | None):
        raise UserError(f"backend_options in config file {config_file} must be a mapping of the backend's "
                        "settings, e.g. {max_batch: 4}.")
    pairs = dict(map(parse_backend_option, backend_options))
    as_flags = {key: value for key, value in (backend_flags or {}).items() if value is not None}
    if given_backend or pairs or as_flags:
        data["backend_options"] = {**(given_backend or {}), **pairs, **as_flags}
    cfg = parse(RunConfig, data, label=lambda key: flag_name(key) if key in given else key,
                where=lambda key: "" if key in given else f" in config file {config_file}")

    def option_label(key: str) -> str:
        if key in as_flags:
            return flag_name(key)
        return f"-M {key}" if key in pairs else f"backend_options.{key} in config file {config_file}"

    check_backend_options(cfg, option_label)
    return cfg
