"""Run settings: a YAML file and command-line flags say the same things; flags win."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lceval.errors import UserError


@dataclass
class RunConfig:
    model: str | None = None  # a local folder or hub id; None runs the embedded demo model (lceval.demo)
    adapter: str | None = None
    revision: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["needle"])
    backend: str = "auto"
    max_length: int | None = None  # the window the model is opened with; default: its max_position_embeddings
    rope_theta: float | None = None
    dtype: str = "auto"
    out: str = "results"
    run_id: str | None = None
    limit: int | None = None  # first N samples of each task
    chat_template: bool = True
    trust_remote_code: bool = False
    batch_size: int = 8
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1  # --backend vllm: split the model over this many GPUs of this machine
    seed: int = 0
    data_dir: str | None = None  # benchmark files in their official layout, for every task that reads data files
    num_fewshot: int | None = None  # for every task that takes few-shot examples (mmlu, lm-eval:<name>)
    # --backend openai: servers of the OpenAI-compatible API (lceval.backends.openai)
    base_url: list[str] | None = None  # one or more servers (data parallel); a comma list also works
    served_model: str | None = None  # default: the one base model the server lists
    served_adapter: str | None = None  # the LoRA module serving a local --adapter folder (default: its folder name)
    api_key_env: str | None = None  # environment variable holding the API key (default OPENAI_API_KEY)
    concurrency: int = 8  # requests in flight per server
    request_timeout: float = 600.0  # seconds per request
    max_retries: int = 5  # per request, with exponential backoff, on connection errors, 429 and 5xx
    openai_api: str = "completions"  # or chat, for servers without /v1/completions (not token-exact)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_tasks(value: str | list[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [item.strip() for item in items if item.strip()]
    if not names:
        raise UserError("no task given; pass --tasks, e.g. --tasks needle.")
    return names


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, parsed safely (no object construction)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UserError(f"config file {path} does not exist; check the path.") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix it and rerun.") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings, not a {type(data).__name__}.")
    return data


def parse_task_option(text: str) -> tuple[str, str, Any]:
    """`task.key=value` (value as YAML: numbers, lists, booleans) to (task, key, value)."""
    key, sep, raw = text.partition("=")
    task, dot, option = key.rpartition(".")
    if not sep or not dot or not task or not option:
        raise UserError(f"task option {text!r} is not of the form TASK.KEY=VALUE, e.g. needle.lengths=[1000,2000].")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"the value of task option {text!r} is not valid YAML; quote it.") from err
    return task, option, value


def build_config(config_file: Path | None, flags: dict[str, Any], task_options: list[str]) -> RunConfig:
    """The YAML file's settings, overridden by every flag that was given (not None)."""
    data = load_yaml(config_file) if config_file else {}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"config file {config_file} has unknown setting {unknown[0]!r}; "
                        f"known: {', '.join(sorted(known))}.")
    data.update({k: v for k, v in flags.items() if v is not None})
    if "tasks" in data:
        data["tasks"] = parse_tasks(data["tasks"])
    if isinstance(data.get("base_url"), str):
        data["base_url"] = [data["base_url"]]
    options = {name: dict(values or {}) for name, values in (data.get("task_options") or {}).items()}
    for text in task_options:
        task, option, value = parse_task_option(text)
        options.setdefault(task, {})[option] = value
    data["task_options"] = options
    return RunConfig(**data)
