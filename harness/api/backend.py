"""The backend interface: token ids in, token ids and text out, plus an identity for the manifest."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class BackendSettings:
    """Everything a backend needs to load a model. Values that change scores are recorded in the manifest."""

    model_path: Path
    max_length: int
    adapter_path: Path | None = None  # the adapter served first (None: the model alone)
    adapter_rank: int | None = None  # the largest rank of the adapters served
    # Every adapter the engine may be switched to with Backend.use_adapter (several checkpoints per engine start,
    # `lceval run --adapter none,A,B`); empty for a run of one checkpoint.
    adapter_paths: tuple[Path, ...] = ()
    rope_theta: float | None = None
    rope_parameters: dict[str, Any] | None = None  # a whole RoPE setting (an adapter's, from lceval train)
    dtype: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    batch_size: int = 8
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1  # vLLM in-process: GPUs one model is split over
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def served_adapters(self) -> tuple[Path, ...]:
        """Every adapter the engine loads: adapter_paths, else the one adapter_path, else none."""
        return self.adapter_paths or ((self.adapter_path,) if self.adapter_path is not None else ())


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    stop_token_ids: tuple[int, ...] = ()
    min_new_tokens: int = 0


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context_ids: list[int]
    continuation_ids: list[int]


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float  # sum of the continuation tokens' log-probabilities given everything before them
    is_greedy: bool  # every continuation token is the most likely one (lm-eval's is_greedy)


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (a stop id ended it) or "length" (the token budget did)


class Backend(ABC):
    """Subclasses register with `@backends.register(name)` and take a BackendSettings."""

    name: str = ""
    tokenizer: Any = None  # the model's own tokenizer, set by the subclass
    swaps_adapters: bool = False  # use_adapter works: one engine serves several checkpoints of one model
    # The backend's own settings (`-M KEY=VALUE`, a config file's `backend_options:`): a class built with
    # lceval.api.settings.settings_class, each field's type its range. The runner hands them over unread; the
    # backend's class parses them (read_options) before any work, and a key it lacks is refused in one sentence.
    # None: the backend takes no options of its own.
    options_class: ClassVar[type | None] = None
    # Options that change no output (a server's address, a timeout): left out of the run's fingerprint and default
    # run id, so that a run resumes with other values.
    neutral_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: BackendSettings):
        self.settings = settings

    @classmethod
    def read_options(cls, given: dict[str, Any], label: Callable[[str], str] = lambda key: f"-M {key}") -> Any:
        """The run's backend options as an instance of `options_class` (defaults for what was not given), or a
        UserError naming the option (`label(key)`), its value and what is allowed."""
        from lceval.api.errors import UserError
        from lceval.api.settings import parse

        if cls.options_class is None:
            if given:
                key = next(iter(given))
                raise UserError(f"{label(key)}: backend {cls.name or 'auto'} takes no options of its own; drop it.")
            return None
        return parse(cls.options_class, given, label=label,
                     unknown=lambda key, known: f"{label(key)} is not an option of backend {cls.name}; its options: "
                                                f"{', '.join(known)}.")

    @classmethod
    def output_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The given options that may change an output (all but `neutral_options`): the backend's part of the
        run's fingerprint and default run id."""
        return {key: value for key, value in given.items() if key not in cls.neutral_options}

    # What a backend reads from the run's settings is its own business: the runner hands these the run's settings
    # (lceval.running.config.RunConfig) unread, and records what they return.
    @classmethod
    def settings_from(cls, cfg: Any) -> dict[str, Any]:
        """The settings of the run this backend reads, as BackendSettings.extra (beside the run's backend options,
        which reach `extra` as given)."""
        return {}

    @classmethod
    def served_adapter(cls, cfg: Any) -> str | None:
        """The name under which a server serves the run's --adapter (a LoRA module), or None: recorded in the
        manifest, and part of the fingerprint where no local adapter folder's hash says which adapter it was."""
        return None

    @classmethod
    def adapter_by_name(cls, cfg: Any) -> bool:
        """Whether the run's --adapter names an adapter the backend serves, rather than a local folder to read."""
        return False

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """Greedy generation for all requests at once; yields (index, result) as each one finishes."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Log-likelihood of each continuation after its context (which holds at least one token), in order.

        Optional: a backend that only generates (a plugin, say) says so when a task asks for it.
        """
        from lceval.api.errors import UserError

        raise UserError(f"backend {self.name} cannot score log-likelihoods; use --backend hf or vllm.")

    def use_adapter(self, path: Path | None) -> None:
        """Serve the adapter at `path`, one of settings.adapter_paths (None: the model alone), from the next request
        on. Only where `swaps_adapters`; the runner otherwise starts one engine per checkpoint."""
        raise NotImplementedError(f"backend {self.name} cannot switch adapters")

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Name, versions and every setting that can change outputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""


def generation_eos(model_path: Path) -> list[int]:
    """eos_token_id of generation_config.json (or config.json), as a list."""
    import json

    for name in ("generation_config.json", "config.json"):
        file = model_path / name
        if file.exists():
            value = json.loads(file.read_text()).get("eos_token_id")
            if value is not None:
                return [int(v) for v in (value if isinstance(value, list) else [value])]
    return []


def decode(tokenizer, token_ids: list[int]) -> str:
    return tokenizer.decode(token_ids, skip_special_tokens=True)


def cut_at_stop(token_ids: list[int], stop_ids: Sequence[int], min_new_tokens: int = 0) -> tuple[list[int], str]:
    """Tokens up to (not including) the first stop id at or after `min_new_tokens`, and why generation ended."""
    stops = set(stop_ids)
    for i in range(min_new_tokens, len(token_ids)):
        if token_ids[i] in stops:
            return token_ids[:i], "stop"
    return token_ids, "length"


def resolve_dtype(setting: str, config: Any) -> str:
    """`auto` means the dtype the checkpoint declares (float32 where it declares none), for every backend alike:
    vLLM's own `auto` would pick bfloat16 on a CPU for a float32 checkpoint, and the backends would disagree."""
    if setting != "auto":
        return setting
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    return str(declared).replace("torch.", "")


def rope_overrides(config: Any, rope_theta: float | None, max_length: int, window: int,
                   rope_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config fields to override for a RoPE change (a new base, or a whole setting) and a window beyond the
    declared one.

    transformers v5 keeps the base in `rope_parameters`, v4 in `rope_theta`; the same dict serves as vLLM's
    hf_overrides and as attributes set on a transformers config, so both backends see the same positions.
    """
    overrides: dict[str, Any] = {}
    if rope_parameters is not None:
        overrides["rope_parameters"] = dict(rope_parameters)
    elif rope_theta is not None:
        params = getattr(config, "rope_parameters", None)
        if isinstance(params, dict):
            overrides["rope_parameters"] = {**params, "rope_theta": float(rope_theta)}
        else:
            overrides["rope_theta"] = float(rope_theta)
    if max_length > window:
        overrides["max_position_embeddings"] = int(max_length)
    return overrides
