"""The task interface: a task turns its data into samples, scores each output, and aggregates its axes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lceval.prompting import PromptFormat


@dataclass
class Sample:
    """One request to the model and what a correct answer looks like."""

    id: str
    prompt_ids: list[int]
    max_new_tokens: int
    target: Any
    meta: dict[str, Any] = field(default_factory=dict)
    stop_token_ids: list[int] = field(default_factory=list)  # empty: the model's own end tokens
    min_new_tokens: int = 0  # stop ids are ignored before this many new tokens (LongBench's samsum)
    # A readable piece of the prompt around what the model must find, for a person looking at a failed sample
    # (`lceval show --samples`, the HTML report): {"text": ..., "highlight": [start, end]} (character offsets).
    excerpt: dict[str, Any] | None = None


@dataclass
class Outcome:
    """A finished sample: what the model answered and its scores (one line of samples.jsonl)."""

    sample: Sample
    output: str
    scores: dict[str, Any]
    output_tokens: int | None = None
    finish_reason: str | None = None


@dataclass
class PromptContext:
    """What a task needs to build prompts for one model: its tokenizer, window and turn wrapper."""

    tokenizer: Any
    window: int
    stop_token_ids: list[int]
    chat_template: bool

    def user_turn(self, system: str | None = None, chat: bool = True) -> PromptFormat:
        """The wrapper of one user turn; the chat template only where both the run and the task want it."""
        from lceval.prompting import prompt_format

        return prompt_format(self.tokenizer, self.chat_template and chat, system)


class Task(ABC):
    """Subclasses set `name`, `version` and `description`, and register with `@tasks.register`.

    Options (`-o NAME.KEY=VALUE`) are declared as a typed class (`lceval.settings.settings_class`, each field's
    type its range) and parsed in `__init__` with `lceval.settings.parse_options(Options, self.options, self.name)`,
    so that a bad option is one sentence naming NAME.KEY, the value and what is allowed, before any engine starts.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    options_class: ClassVar[type | None] = None  # the typed options (`lceval tasks --options NAME` lists them)

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})

    def settings(self) -> dict[str, Any]:
        """The resolved settings that change this task's prompts or scores (recorded, and compared on resume)."""
        return dict(self.options)

    def check_window(self, window: int) -> None:  # noqa: B027 - optional hook
        """Raise a UserError before any work if the task's settings cannot fit a window of `window` tokens."""

    @abstractmethod
    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        """All samples of the task for this model, in a stable order with stable ids."""

    @abstractmethod
    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Metric name to value for one finished sample."""

    @abstractmethod
    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Task results from its sample records (as written to samples.jsonl)."""

    def run(self, backend: Any, samples: list[Sample], progress: Any, run_dir: Path) -> Iterator[Outcome]:
        """Greedy generation for every sample at once, scored as each one finishes.

        A task whose requests come from another evaluator (lm-eval) drives the backend itself here; `progress` is
        the run's rich Progress, on which a task shows its own bars; `run_dir` the run folder, for a task's caches.
        """
        from lceval.backends.base import GenerationRequest

        requests = [GenerationRequest(s.prompt_ids, s.max_new_tokens, tuple(s.stop_token_ids), s.min_new_tokens)
                    for s in samples]
        bar = progress.add_task(f"{self.name} on {backend.name}", total=len(samples))
        for index, generation in backend.generate(requests):
            sample = samples[index]
            yield Outcome(sample, generation.text, self.score(sample, generation.text), len(generation.token_ids),
                          generation.finish_reason)
            progress.advance(bar)

    def after_run(self, run_dir: Path, results: dict[str, Any], manifest: dict[str, Any]) -> list[Path]:
        """Pictures and tables written beside the results; returns the files written."""
        return []
