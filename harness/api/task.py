"""The task interface: a task turns its data into samples, scores each output, and aggregates its axes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lceval.api.prompting import PromptFormat
from lceval.api.run_folder import is_control
from lceval.api.schema import Manifest, Results


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
        from lceval.api.prompting import prompt_format

        return prompt_format(self.tokenizer, self.chat_template and chat, system)


@dataclass(frozen=True)
class Metric:
    """A score a task writes for each sample (`scores` in samples.jsonl), as compare, gate, report and the heatmaps
    read it."""

    name: str
    label: str = ""  # what a picture's colour bar or a table calls it; empty: the name
    pass_fail: bool = False  # every value is 0 or 1 (McNemar and Wilson); otherwise continuous (bootstrap)
    higher_is_better: bool = True


@dataclass(frozen=True)
class Axis:
    """A breakdown of a task's samples: each sample's group is what it records under `meta[key]`."""

    name: str  # the breakdown's name in compare, report, `lceval show` and a gate policy's `by`/`where`
    key: str  # the sample meta key holding the group
    labels: dict[str, str] | None = None  # meta value -> group label; a value not in it is in no group of this axis


@dataclass(frozen=True)
class Declaration:
    """What a task declares about its scores: read by everything after the run, so that a plugin task gets
    breakdowns, heatmap labels, gate defaults and comparable settings without touching lceval."""

    metrics: tuple[Metric, ...] = ()
    axes: tuple[Axis, ...] = ()
    neutral_settings: frozenset[str] = frozenset()  # settings that change no prompt and no score (file locations)

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def label(self, metric: str) -> str:
        declared = self.metric(metric)
        return declared.label if declared and declared.label else metric

    def to_dict(self) -> dict[str, Any]:
        """As the manifest records it (`declarations`)."""
        return {"metrics": [asdict(m) for m in self.metrics], "axes": [asdict(a) for a in self.axes],
                "neutral_settings": sorted(self.neutral_settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Declaration:
        return cls(tuple(Metric(**m) for m in data.get("metrics") or []),
                   tuple(Axis(**a) for a in data.get("axes") or []), frozenset(data.get("neutral_settings") or []))


def declaration_of(manifest: Manifest, task: str) -> Declaration:
    """A run's declaration of `task`: as its manifest recorded it, else (a run from before lceval recorded them) the
    registered task's, else none (every number a continuous metric, no breakdown but the controls)."""
    recorded = (manifest.declarations or {}).get(task)
    if isinstance(recorded, dict):
        return Declaration.from_dict(recorded)
    from lceval.api import registry
    from lceval.api.errors import UserError

    try:
        registered = registry.tasks.get(task)
    except UserError:
        return Declaration()
    task_class = getattr(registered, "task_class", registered)
    return task_class.declaration() if isinstance(task_class, type) and issubclass(task_class, Task) else Declaration()


def mean(values: list[float]) -> float:
    """The mean of a task's per-sample scores (NaN for none), on the scores' own scale."""
    return sum(values) / len(values) if values else float("nan")


class Task(ABC):
    """Subclasses set `name`, `version` and `description`, and register with `@tasks.register`.

    Options (`-o NAME.KEY=VALUE`) are declared as a typed class (`options_class`, a
    `lceval.api.settings.settings_class`, each field's type its range) and parsed here into `self.opts` (with the
    class's `from_dict(options, task)` where it has one, for checks across fields), so that a bad option is one
    sentence naming NAME.KEY, the value and what is allowed, before any engine starts.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    options_class: ClassVar[type | None] = None  # the typed options (`lceval tasks --options NAME` lists them)
    metrics: ClassVar[tuple[Metric, ...]] = ()  # the scores `score` returns
    axes: ClassVar[tuple[Axis, ...]] = ()  # the breakdowns of its samples
    neutral_settings: ClassVar[frozenset[str]] = frozenset()  # settings that change no prompt and no score

    @classmethod
    def declaration(cls) -> Declaration:
        """What the manifest records about this task's scores (lceval.api.task.Declaration)."""
        return Declaration(tuple(cls.metrics), tuple(cls.axes), frozenset(cls.neutral_settings))

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        self.opts: Any = None
        if self.options_class is not None:
            from lceval.api.settings import parse_options

            from_dict = getattr(self.options_class, "from_dict", None)
            self.opts = (from_dict(self.options, self.name) if from_dict is not None
                         else parse_options(self.options_class, self.options, self.name))

    def settings(self) -> dict[str, Any]:
        """The resolved settings that change this task's prompts or scores (recorded, and compared on resume):
        the parsed options, or the options as given where the task declares no options class."""
        return asdict(self.opts) if self.opts is not None else dict(self.options)

    def check_window(self, window: int) -> None:  # noqa: B027 - optional hook
        """Raise a UserError before any work if the task's settings cannot fit a window of `window` tokens."""

    @abstractmethod
    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        """All samples of the task for this model, in a stable order with stable ids."""

    @abstractmethod
    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Metric name to value for one finished sample."""

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Task results from its sample records (as written to samples.jsonl).

        By default, from the declaration: each declared metric's mean over the samples (controls left out: compare
        and report show them as a group of their own), and the same per group of each declared axis (`by_<axis>`).
        A task overrides it only where its benchmark aggregates otherwise (LongBench's x100 averages, lm-eval's
        groups, the needle's grid).
        """
        declared = self.declaration()
        scored = [r for r in records if not is_control(r)]

        def means(group: list[dict[str, Any]]) -> dict[str, float]:
            return {m.name: mean([r["scores"][m.name] for r in group if r["scores"].get(m.name) is not None])
                    for m in declared.metrics}

        result: dict[str, Any] = {"n_samples": len(records), "metrics": means(scored)}
        for axis in declared.axes:
            groups: dict[str, list[dict[str, Any]]] = {}
            for record in scored:
                label = group_label(record, axis)
                if label is not None:
                    groups.setdefault(label, []).append(record)
            result[f"by_{axis.name}"] = {label: means(group) for label, group in groups.items()}
        return result

    def run(self, backend: Any, samples: list[Sample], progress: Any, run_dir: Path) -> Iterator[Outcome]:
        """Greedy generation for every sample at once, scored as each one finishes.

        A task whose requests come from another evaluator (lm-eval) drives the backend itself here; `progress` is
        the run's rich Progress, on which a task shows its own bars; `run_dir` the run folder, for a task's caches.
        """
        from lceval.api.backend import GenerationRequest

        requests = [GenerationRequest(s.prompt_ids, s.max_new_tokens, tuple(s.stop_token_ids), s.min_new_tokens)
                    for s in samples]
        bar = progress.add_task(f"{self.name} on {backend.name}", total=len(samples))
        for index, generation in backend.generate(requests):
            sample = samples[index]
            yield Outcome(sample, generation.text, self.score(sample, generation.text), len(generation.token_ids),
                          generation.finish_reason)
            progress.advance(bar)

    def after_run(self, run_dir: Path, results: Results, manifest: Manifest) -> list[Path]:
        """Pictures and tables written beside the results (the run folder's schema, lceval.api.schema); returns
        the files written."""
        return []

    @classmethod
    def score_predictions(cls, pred_dir: Path, options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
        """`lceval score NAME`: re-score the benchmark's official prediction files in `pred_dir` as its own scorer
        does, writing its result file; returns the result and the file. `options`: the flags given (`e`,
        `scorer`), each refused in one sentence by a benchmark that has no such thing. Optional."""
        raise NotImplementedError


def group_label(record: dict[str, Any], axis: Axis) -> str | None:
    """The group of `axis` a sample record belongs to, or None (its meta has no such key, or no label for it)."""
    meta = record.get("meta") or {}
    if axis.key not in meta:
        return None
    raw = str(meta[axis.key])
    return raw if axis.labels is None else axis.labels.get(raw)
