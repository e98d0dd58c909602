"""Run settings: a YAML file and command-line flags say the same things; flags win."""

from __future__ import annotations

from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

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


URLs = Annotated[list[str], BeforeValidator(lambda value: [value] if isinstance(value, str) else value)]
Tasks = Annotated[list[str], BeforeValidator(split_commas), AfterValidator(_some_task),
                  Allowed("a comma list of task names, e.g. needle,longbench")]


def _of_backend(name: str, default: Any) -> Any:
    """A setting of one backend only (refused on the others)."""
    return field(default=default, metadata={"backend": name})


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
    # The built-in server backend's settings (lceval.backends.openai reads them); metadata `backend` names the one
    # backend a setting belongs to, and a run on another backend refuses it (lceval.running.runner).
    base_url: URLs | None = _of_backend("openai", None)  # one or more servers (data parallel); a comma list too
    served_model: str | None = _of_backend("openai", None)  # default: the one base model the server lists
    served_adapter: str | None = _of_backend("openai", None)  # the LoRA module serving a local --adapter folder
    api_key_env: str | None = _of_backend("openai", None)  # variable holding the API key (default OPENAI_API_KEY)
    concurrency: Count = _of_backend("openai", 8)  # requests in flight per server
    request_timeout: PositiveFloat = _of_backend("openai", 600.0)  # seconds per request
    max_retries: NonNegativeInt = _of_backend("openai", 5)  # per request, with backoff, on connection errors, 5xx
    openai_api: Literal["completions", "chat"] = _of_backend("openai", "completions")  # chat: no /v1/completions
    # Any backend's own settings, `-M KEY=VALUE`: handed to the backend unread (BackendSettings.extra) and part of
    # the run's fingerprint.
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


def build_config(config_file: Path | None, flags: dict[str, Any], task_options: list[str],
                 backend_options: list[str] = ()) -> RunConfig:
    """The YAML file's settings, overridden by every flag that was given (not None), typed and range-checked.

    A refused value is one sentence naming its flag (--batch-size) or its key and file (batch_size in config
    file run.yaml), the value, and what is allowed.
    """
    data = load_yaml(config_file) if config_file else {}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
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
    if backend_options:
        given_backend = data.get("backend_options")
        if not isinstance(given_backend, dict | None):
            raise UserError(f"backend_options in config file {config_file} must be a mapping of the backend's "
                            "settings, e.g. {max_batch: 4}.")
        data["backend_options"] = {**(given_backend or {}), **dict(map(parse_backend_option, backend_options))}
    return parse(RunConfig, data, label=lambda key: flag_name(key) if key in given else key,
                 where=lambda key: "" if key in given else f" in config file {config_file}")
