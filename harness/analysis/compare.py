"""Runs side by side: load run folders, align their samples, and build the rows of a comparison table.

Everything here reads run folders only (manifest.json, samples.jsonl, results.json). Scores and intervals are
computed from the per-sample records, on each metric's per-sample scale (LongBench's 0..1, not its x100), so a
task's "all" row is the mean over its samples. Breakdowns are the axes each task declares (lceval.api.task.Axis, as the
manifest records them), read from what each sample records in `meta`; no task is known here by name.
Control samples (meta `control: true`, the needle tasks' no-needle prompts) belong to the `control` group only:
they are left out of every other row and of every gate check that does not name that group.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lceval.analysis import stats
from lceval.api.errors import UserError
from lceval.api.run_folder import MANIFEST, RESULTS, SAMPLES, RunFolder, first_difference, is_control
from lceval.api.schema import Manifest, Results, TaskResults
from lceval.api.task import Declaration, declaration_of, group_label
from lceval.running.environment import SCORE_LIBRARIES

MAX_GROUPS = 30  # an axis with more distinct values (LongBench's per-document word counts) is no breakdown
CONTROL_AXIS, CONTROL_LABEL = "control", "no needle"  # the group of the control samples (a breakdown of its own)
CONFIDENCE = 0.95


@dataclass
class Run:
    """A run folder's manifest, results (if written) and sample records keyed by (task, sample id)."""

    path: Path
    label: str
    manifest: Manifest
    results: Results | None
    records: dict[tuple[str, str], dict[str, Any]]

    @property
    def tasks(self) -> list[str]:
        """Tasks in the manifest's order, then any others that samples.jsonl holds."""
        names = list(self.manifest.tasks)
        return names + [t for t in dict.fromkeys(task for task, _ in self.records) if t not in names]

    def task_records(self, task: str) -> list[dict[str, Any]]:
        return [r for (name, _), r in self.records.items() if name == task]

    def declaration(self, task: str) -> Declaration:
        """What the task declared about its metrics and axes (lceval.api.task.declaration_of)."""
        return declaration_of(self.manifest, task)

    def task_results(self, task: str) -> TaskResults | None:
        """The task's entry of results.json; None where the run wrote no results or none for the task."""
        return self.results.tasks.get(task) if self.results else None

    def task_manifest(self, task: str) -> dict[str, Any]:
        """The task's entry of the manifest (`version`, `settings`, `n_samples`); empty where it has none."""
        return self.manifest.tasks.get(task) or {}

    def describe(self) -> dict[str, Any]:
        """What a report says about the run: where it is and what model it ran."""
        m = self.manifest
        return {"label": self.label, "path": str(self.path), "run_id": m.run_id or None,
                "model": m.model.get("spec"), "adapter": (m.adapter or {}).get("spec"),
                "backend": (m.backend or {}).get("name"), "status": m.status or None,
                "created_at": m.created_at or None, "git_sha": m.software.get("git_sha")}


def run_folder_of(path: Path) -> Path:
    """The run folder named by a folder or by one of its files (results.json, samples.jsonl, manifest.json)."""
    if path.is_file() and path.name in (RESULTS, SAMPLES, MANIFEST):
        return path.parent
    return path


def load_run(path: Path, label: str | None = None) -> Run:
    """A run folder with its samples; one sentence naming the path when it is not one."""
    folder = RunFolder(run_folder_of(path))
    if folder.path.exists() and not folder.path.is_dir():
        raise UserError(f"{path} is a file, not a run folder; give a run folder (or its results.json).")
    if not folder.path.is_dir():
        raise UserError(f"{path} does not exist; give a run folder (or its results.json).")
    if not folder.exists():
        raise UserError(f"{folder.path} is not a run folder (it has no {MANIFEST}); give the folder `lceval run` "
                        "wrote, or a baseline written by `lceval gate --update-baseline`.")
    if not folder.samples_path.exists():
        raise UserError(f"{folder.path} has no {SAMPLES}; comparisons pair samples one by one, so keep "
                        "samples.jsonl beside results.json (`lceval gate --update-baseline` does).")
    manifest = folder.manifest()
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for record in folder.records(samples=True):
        key = (record["task"], record["id"])
        if key in records:
            raise UserError(f"{folder.samples_path} holds {key[0]} sample {key[1]} twice; it was edited or "
                            "concatenated: keep one line per sample.")
        records[key] = record
    results = folder.results() if folder.results_path.exists() else None
    return Run(folder.path, label or manifest.run_id or folder.path.name, manifest, results, records)


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Runs with unique column labels (a repeated run id gets its folder's parent name added)."""
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.path.parent.name}/{run.path.name}"
    return runs


# ---------------------------------------------------------------------------------------------- metrics, axes


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def metric_names(records: Iterable[dict[str, Any]]) -> list[str]:
    """Metrics with a number in any record, in first-seen order (lists and None are left out)."""
    names: dict[str, None] = {}
    for record in records:
        for name, value in record.get("scores", {}).items():
            if _number(value) is not None:
                names.setdefault(name)
    return list(names)


def value(record: dict[str, Any], metric: str) -> float | None:
    return _number(record.get("scores", {}).get(metric))


def metric_kind(values: Iterable[float], declared: Declaration | None = None, metric: str | None = None) -> str:
    """binary (McNemar, Wilson) for a metric declared pass/fail, or one whose values are all 0 or 1; else continuous
    (bootstrap)."""
    found = declared.metric(metric) if declared is not None and metric is not None else None
    if found is not None and found.pass_fail:
        return "binary"
    return "binary" if stats.is_binary(list(values)) else "continuous"


def record_groups(record: dict[str, Any], declared: Declaration) -> list[tuple[str, str]]:
    """The (axis, label) breakdowns a sample belongs to: its group on each declared axis, and the controls'."""
    groups = []
    for axis in declared.axes:
        label = group_label(record, axis)
        if label is not None:
            groups.append((axis.name, label))
    if is_control(record):
        groups.append((CONTROL_AXIS, CONTROL_LABEL))
    return groups


def _natural(label: str) -> tuple[int, float, str]:
    match = re.fullmatch(r"-?\d+(\.\d+)?", label)
    return (0, float(label), "") if match else (1, 0.0, label)


def task_axes(records: Iterable[dict[str, Any]], declared: Declaration) -> dict[str, list[str]]:
    """Each breakdown axis of a task with its labels in natural order; axes with 1 or > MAX_GROUPS labels dropped
    (but the control group, which is never part of the others)."""
    axes: dict[str, set[str]] = {}
    for record in records:
        for axis, label in record_groups(record, declared):
            axes.setdefault(axis, set()).add(label)
    return {axis: sorted(labels, key=_natural) for axis, labels in axes.items()
            if 1 < len(labels) <= MAX_GROUPS or axis == CONTROL_AXIS}


def in_group(record: dict[str, Any], where: dict[str, str], declared: Declaration) -> bool:
    """Whether the record belongs to every group of `where`; a control sample only where `where` names the control
    group, so that controls stay out of a task's overall and per-group scores."""
    groups = dict(record_groups(record, declared))
    if CONTROL_AXIS in groups and CONTROL_AXIS not in where:
        return False
    return all(groups.get(axis) == label for axis, label in where.items())


# ------------------------------------------------------------------------------------------------- alignment


@dataclass
class Alignment:
    """Two runs' samples of one task, paired by sample id; what did not pair is listed."""

    task: str
    pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    other_prompt: list[str] = field(default_factory=list)
    other_version: list[str] = field(default_factory=list)


def align(baseline: Run, candidate: Run, task: str) -> Alignment:
    base = {r["id"]: r for r in baseline.task_records(task)}
    cand = {r["id"]: r for r in candidate.task_records(task)}
    result = Alignment(task, [(base[i], cand[i]) for i in base if i in cand])
    result.only_baseline = [i for i in base if i not in cand]
    result.only_candidate = [i for i in cand if i not in base]
    result.other_prompt = [b["id"] for b, c in result.pairs if b.get("prompt_hash") != c.get("prompt_hash")]
    result.other_version = [b["id"] for b, c in result.pairs if b.get("task_version") != c.get("task_version")]
    return result


def _settings(run: Run, task: str, neutral: frozenset[str]) -> dict[str, Any]:
    """The task's settings that may change a prompt or a score (the task declares the others neutral: where a file
    lives, how a picture is drawn; where the data differ, the prompt hashes differ, checked sample by sample)."""
    settings = run.task_manifest(task).get("settings") or {}
    return {k: v for k, v in settings.items() if k not in neutral}


def _scorers(run: Run) -> dict[str, str]:
    packages = run.manifest.software.get("packages") or {}
    return {name: packages[name] for name in SCORE_LIBRARIES if name in packages}


def _first(ids: list[str]) -> str:
    return f"{len(ids)} (first: {ids[0]})"


def mismatches(baseline: Run, candidate: Run, tasks: Iterable[str]) -> list[str]:
    """Every reason the two runs did not measure the same thing, one sentence each (empty: comparable)."""
    problems = []
    both = {k: v for k, v in _scorers(baseline).items() if k in _scorers(candidate)}
    for name, version in both.items():
        if _scorers(candidate)[name] != version:
            problems.append(f"scorer library {name} is {version} in the baseline, {_scorers(candidate)[name]} in "
                            "the candidate")
    for task in tasks:
        if not candidate.task_records(task):
            problems.append(f"the candidate has no {task} samples")
            continue
        versions = [r.task_manifest(task).get("version") for r in (baseline, candidate)]
        if None not in versions and versions[0] != versions[1]:
            problems.append(f"{task} is task version {versions[0]} in the baseline, {versions[1]} in the candidate")
        neutral = baseline.declaration(task).neutral_settings | candidate.declaration(task).neutral_settings
        diff = first_difference(_settings(baseline, task, neutral), _settings(candidate, task, neutral))
        if diff:
            key, old, new = diff
            problems.append(f"{task} setting {key} differs (baseline {old!r}, candidate {new!r})")
        pairs = align(baseline, candidate, task)
        if pairs.other_version:
            problems.append(f"{task}: {_first(pairs.other_version)} samples were scored by another task version")
        if pairs.other_prompt:
            problems.append(f"{task}: {_first(pairs.other_prompt)} samples have different prompts (prompt_hash)")
        if pairs.only_baseline:
            problems.append(f"the candidate lacks {_first(pairs.only_baseline)} of the baseline's "
                            f"{len(pairs.only_baseline) + len(pairs.pairs)} {task} samples")
        if pairs.only_candidate:
            problems.append(f"the candidate has {_first(pairs.only_candidate)} {task} samples the baseline lacks")
    return problems


# ------------------------------------------------------------------------------------------------ the table


@dataclass
class Cell:
    n: int
    score: float
    ci: tuple[float, float]


@dataclass
class Diff:
    n: int
    difference: float
    ci: tuple[float, float]
    p_value: float  # two-sided: no difference


@dataclass
class Row:
    """One metric of one task, overall (axis None) or in one breakdown group, across all runs."""

    task: str
    metric: str
    axis: str | None
    label: str | None
    kind: str
    cells: list[Cell | None]
    diffs: list[Diff | None]  # against the first run; None for the first run and where nothing paired

    @property
    def breakdown(self) -> str:
        return "all" if self.axis is None else f"{self.axis} {self.label}"


def _cell(records: list[dict[str, Any]], metric: str, kind: str, name: str) -> Cell | None:
    values = [v for v in (value(r, metric) for r in records) if v is not None]
    if not values:
        return None
    ci = stats.score_interval(values, kind, CONFIDENCE, name=name)
    return Cell(len(values), sum(values) / len(values), ci)


def _diff(pairs: list[tuple[dict[str, Any], dict[str, Any]]], metric: str, kind: str, name: str) -> Diff | None:
    kept = [(value(b, metric), value(c, metric)) for b, c in pairs
            if b.get("prompt_hash") == c.get("prompt_hash")]
    kept = [(b, c) for b, c in kept if b is not None and c is not None]
    if not kept:
        return None
    result = stats.paired_test([b for b, _ in kept], [c for _, c in kept], kind, 0.0, CONFIDENCE, name=name)
    return Diff(result.n, result.difference, result.ci, result.p_two_sided)


def _row(runs: list[Run], task: str, metric: str, axis: str | None, label: str | None,
         alignments: list[Alignment | None], declared: Declaration) -> Row:
    where = {axis: label} if axis else {}
    chosen = [[r for r in run.task_records(task) if in_group(r, where, declared)] for run in runs]
    all_values = [v for group in chosen for v in (value(r, metric) for r in group) if v is not None]
    kind = metric_kind(all_values, declared, metric)
    name = f"{task}/{metric}/{axis}={label}"
    cells = [_cell(group, metric, kind, f"{name}/{run.label}") for run, group in zip(runs, chosen, strict=True)]
    diffs: list[Diff | None] = [None]
    for run, alignment in zip(runs[1:], alignments[1:], strict=True):
        pairs = [(b, c) for b, c in alignment.pairs if in_group(b, where, declared)] if alignment else []
        diffs.append(_diff(pairs, metric, kind, f"{name}/{run.label}"))
    return Row(task, metric, axis, label, kind, cells, diffs)


def compare_rows(runs: list[Run]) -> list[Row]:
    """Rows for every task and metric of any run: overall first, then each breakdown group folded under it."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
    rows = []
    for task in tasks:
        records = [r for run in runs for r in run.task_records(task)]
        alignments = [None] + [align(runs[0], run, task) for run in runs[1:]]
        declared = task_declaration(runs, task)
        axes = task_axes(records, declared)
        for metric in metric_names(records):
            rows.append(_row(runs, task, metric, None, None, alignments, declared))
            for axis, labels in axes.items():
                rows += [_row(runs, task, metric, axis, label, alignments, declared) for label in labels]
    return rows


def task_declaration(runs: list[Run], task: str) -> Declaration:
    """The task's declaration as the first run holding the task recorded it."""
    return next((run.declaration(task) for run in runs if task in run.tasks), Declaration())


def comparison_warnings(runs: list[Run]) -> list[str]:
    """Why a difference column may not mean what it seems: each later run against the first."""
    warnings = []
    for run in runs[1:]:
        tasks = [t for t in runs[0].tasks if t in run.tasks]
        warnings += [f"{run.label} vs {runs[0].label}: {p}" for p in mismatches(runs[0], run, tasks)]
    return warnings
