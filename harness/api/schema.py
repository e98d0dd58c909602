"""The run folder's schema: every field of manifest.json, of a samples.jsonl record and of results.json, typed and
documented in one place, and versioned (SCHEMA_VERSION).

The runner writes these classes (`to_dict`); readers (compare, gate, report, `lceval show`, a task's `after_run`)
read them back (`from_dict`, through lceval.api.run_folder.RunFolder), so that no reader walks raw JSON.
`docs/run-folder.md` is generated from this module (`python -m lceval.api.schema > docs/run-folder.md`) and a test
checks that it is current. A field added keeps the version; a field renamed, removed or given another meaning
raises it.
"""

from __future__ import annotations

import re
import sys
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


def doc(text: str, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A dataclass field with its documentation (shown in docs/run-folder.md)."""
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


def _empty(hint: Any) -> Any:
    """What a field without a default holds where an older run folder lacks it: an empty value of its type."""
    origin = typing.get_origin(hint) or hint
    if origin is typing.Union or type(None) in typing.get_args(hint):
        return None
    return {dict: dict, list: list, str: str, int: int}.get(origin, lambda: None)()


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The arguments of `cls` that `data` holds; a field it lacks keeps its default (or an empty value: a folder
    written by an older lceval); a key the schema does not know is left out."""
    hints = typing.get_type_hints(cls, vars(sys.modules[__name__]))
    given = {}
    for f in fields(cls):
        if f.name in data:
            given[f.name] = data[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            given[f.name] = _empty(hints[f.name])
    return given


@dataclass
class SampleRecord:
    """One line of samples.jsonl: a finished sample, appended and flushed as it finishes. Keyed by (task, id)."""

    task: str = doc("The task's registered name.")
    task_version: str = doc("The task's version when the sample was scored (a new version may score otherwise).")
    id: str = doc("The sample's id, stable across runs of the same task settings (`L1000-D50`, a dataset row id).")
    prompt_hash: str = doc("sha256 (16 hex digits) of the prompt's token ids: two runs' samples pair only where "
                           "their prompts are equal.")
    prompt_tokens: int = doc("Tokens in the prompt, chat template included.")
    meta: dict[str, Any] = doc("What the task records about the sample: the values of its declared axes (length, "
                               "depth, dataset, ...), and `control: true` on a control sample (a needle prompt "
                               "without the needle), which is scored but kept out of the task's scores.")
    target: Any = doc("What a correct answer looks like, as the task scores it (a string, a list of answers, a "
                      "mapping).")
    excerpt: dict[str, Any] | None = doc("A readable piece of the prompt around what the model must find: `text` and "
                                         "`highlight` [start, end] character offsets; null where the task gives none.")
    output: str = doc("The model's answer, as text (untrusted: escaped wherever it is rendered).")
    output_tokens: int | None = doc("Tokens generated; null where the backend does not say.")
    finish_reason: str | None = doc("`stop` (an end or stop token), `length` (the token budget ran out), or null.")
    scores: dict[str, Any] = doc("Metric name to value, as the task's `score` returns them; the task's declaration "
                                 "(manifest `declarations`) says what each is.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """manifest.json: what ran, readable without the samples. Rewritten as the run goes (sessions, status)."""

    schema_version: int = doc("This schema's version (lceval.api.schema.SCHEMA_VERSION).")
    run_id: str = doc("The run's id: its folder's name under --out.")
    created_at: str = doc("When the first session started (UTC, ISO 8601).")
    status: str = doc("`running`, `partial` (ended with samples left: --limit, or a kill) or `complete`.")
    model: dict[str, Any] = doc("The model: `spec` as given, resolved `path`, `revision`, `window` "
                                "(max_position_embeddings), `gguf_file` where it came from one, and its content hash "
                                "(`sha256`, `method`).")
    adapter: dict[str, Any] | None = doc("The LoRA adapter: `spec`, `path`, `rank`, `base_model`, `modules_to_save`, "
                                         "`rope_parameters` and `trained_window` from its training record, and its "
                                         "content hash; null without one.")
    rope_parameters: dict[str, Any] | None = doc("RoPE parameters applied from the adapter's training record; null "
                                                 "where none were (no adapter, or --rope-theta given).")
    served_adapter: str | None = doc("A LoRA asked for by name on a server (--backend openai); null otherwise.")
    max_length: int = doc("The window the run used (prompt plus answer tokens), in tokens.")
    tokenizer: dict[str, Any] = doc("The tokenizer: `sha256` of its files, `chat_template_sha256`, `stop_token_ids`, "
                                    "`class`.")
    config: dict[str, Any] = doc("Every setting of the run as run (lceval.running.config.RunConfig), a named "
                                 "model's run defaults applied.")
    run_defaults: dict[str, Any] = doc("The settings of `config` that a named model supplied (lceval.models).")
    tasks: dict[str, dict[str, Any]] = doc("Per task: `version`, resolved `settings` (what changes its prompts or "
                                           "scores) and `n_samples` (samples in a complete run).")
    declarations: dict[str, dict[str, Any]] = doc("Per task, what it declares about its scores "
                                                  "(lceval.api.task.Declaration): `metrics` (name, label, pass_fail, "
                                                  "higher_is_better), `axes` (name, meta key, labels) and "
                                                  "`neutral_settings` (settings that change no prompt and no score).")
    fingerprint: dict[str, Any] = doc("What must be equal for a second session to write into this folder: model and "
                                      "adapter hashes, window, RoPE, dtype, chat template, seed, task settings, and "
                                      "the backend's own part.")
    software: dict[str, Any] = doc("`lceval` version, `git_sha` of its source, and `packages`: the versions of every "
                                   "library that can change a prompt, an output or a score "
                                   "(lceval.running.environment.TRACKED_PACKAGES).")
    hardware: dict[str, Any] = doc("Platform, machine, CPU count, Python, memory, GPUs.")
    sessions: list[dict[str, Any]] = doc("One entry per `lceval run` on this folder: `started_at`, `samples_run`, "
                                         "`backend` and `cost` (lceval.running.cost).", default_factory=list)
    backend: dict[str, Any] | None = doc("The backend that generated: `requested`, then its identity (name, "
                                         "versions, settings); null until it started.", default=None)
    finished_at: str | None = doc("When results.json was last written (UTC).", default=None)
    files: list[str] = doc("Pictures and tables the tasks wrote beside the results.", default_factory=list)
    baseline: dict[str, Any] | None = doc("Where a promoted baseline came from (`lceval gate --update-baseline`): "
                                          "`promoted_from`, `promoted_at`; absent in a run's own folder.",
                                          default=None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("backend", "finished_at", "baseline"):  # written only once known
            if data[key] is None:
                data.pop(key)
        if not data["files"]:
            data.pop("files")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**_known_fields(cls, data))


@dataclass
class TaskResults:
    """One task's entry in results.json `tasks`, written from the task's `aggregate`: the keys lceval reads. The
    keys of `by_axis` and `extra` stand in the entry itself, beside the others (`by_length`, `average`, ...)."""

    version: str = doc("The task's version.")
    n_expected: int = doc("Samples in a complete run of the task.")
    n_samples: int = doc("Samples aggregated (controls included).")
    metrics: dict[str, Any] = doc("The headline scores, on the task's own scale (LongBench and InfiniteBench x100 as "
                                  "their official scorers print them; others 0..1).", default_factory=dict)
    by_axis: dict[str, Any] = doc("`by_<axis>`: the same scores per group of a breakdown (`by_length`, "
                                  "`by_dataset`, ...); one key per breakdown.", default_factory=dict)
    cells: list[dict[str, Any]] | None = doc("A length x depth grid: one entry per cell with `length`, `depth`, `n` "
                                             "and each metric's mean; a task with it gets heatmaps.", default=None)
    curve: list[dict[str, Any]] | None = doc("Points of a score against prompt length (`mean_prompt_tokens`, a metric "
                                             "per point); a task with it gets a curve in the report.", default=None)
    control: dict[str, Any] | None = doc("The control samples apart: `n`, `metric`, `metrics`, `by_length`, "
                                         "`found_without_needle`, `found_lengths`.", default=None)
    extra: dict[str, Any] = doc("Keys of the task's own, written beside the above as its benchmark's scorer reports "
                                "them (`average`, `scorer`, `real_lengths`, ...).", default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The entry as results.json holds it: breakdowns and the task's own keys beside the others."""
        data = {"version": self.version, "n_expected": self.n_expected, "n_samples": self.n_samples,
                "metrics": self.metrics, **self.by_axis}
        data.update({key: value for key, value in (("cells", self.cells), ("curve", self.curve),
                                                   ("control", self.control)) if value is not None})
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResults:
        """From a task's `aggregate` (with `version` and `n_expected`) or a results.json entry."""
        named = {f.name for f in fields(cls)} - {"by_axis", "extra"}
        return cls(**_known_fields(cls, {key: value for key, value in data.items() if key in named}),
                   by_axis={key: value for key, value in data.items() if key.startswith("by_")},
                   extra={key: value for key, value in data.items()
                          if key not in named and not key.startswith("by_")})

    def breakdowns(self) -> dict[str, Any]:
        """`by_<axis>` keys without the prefix: axis name to its groups' scores."""
        return {key[3:]: value for key, value in self.by_axis.items()}


@dataclass
class Results:
    """results.json: aggregates per task and what the run cost, written at the end of each session."""

    schema_version: int = doc("This schema's version.")
    run_id: str = doc("The run's id.")
    tasks: dict[str, TaskResults] = doc("Per task, its results (TaskResults).")
    cost: dict[str, Any] | None = doc("Every session's cost summed (lceval.running.cost.run_cost): tokens, engine "
                                      "start, generation time, tokens/s per task and per prompt-length bucket.",
                                      default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "run_id": self.run_id,
                "tasks": {name: task.to_dict() for name, task in self.tasks.items()}, "cost": self.cost}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        known = _known_fields(cls, data)
        known["tasks"] = {name: TaskResults.from_dict(task) for name, task in known["tasks"].items()}
        return cls(**known)


FILES = (("manifest.json", Manifest), ("samples.jsonl (one JSON object per line)", SampleRecord),
         ("results.json", Results), ("results.json `tasks.<name>`", TaskResults))


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"\b(typing|__main__|lceval\.api\.schema)\.", "", str(hint))


def markdown() -> str:
    """docs/run-folder.md: every file and field of the run folder, from the classes above."""
    lines = ["# The run folder", "",
             "Generated from `harness/api/schema.py` by `python -m lceval.api.schema > docs/run-folder.md`; do not "
             f"edit by hand. Schema version {SCHEMA_VERSION}.", "",
             "A run folder holds `manifest.json`, `samples.jsonl`, `results.json`, and the pictures and tables its "
             "tasks draw (`*.png`, `*.csv`). It is the contract between running and everything after it: compare, "
             "gate, report and `lceval show` read only these files.", ""]
    module = sys.modules[__name__]
    for title, cls in FILES:
        hints = typing.get_type_hints(cls, vars(module))
        lines += [f"## {title}", "", (cls.__doc__ or "").strip(), "", "| field | type | meaning |", "|---|---|---|"]
        for f in fields(cls):
            meaning = f.metadata.get("doc", "").replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{_type_name(hints[f.name])}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
