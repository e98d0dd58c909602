"""`lceval gate`: is a candidate checkpoint's run at least as good as the baseline's, within stated margins?

A policy (YAML) lists checks: a task's metric, overall, in one group (`where`) or per group (`by: length`), with
an optional floor on the candidate's score and a non-inferiority margin against the baseline. A margin check
passes only when the data show the candidate is not worse by the margin or more: the one-sided p-value of
H0 "difference <= -margin" is below alpha after Holm's correction across the gate's margin checks. Its interval
is two-sided at 1 - 2*alpha, so that its lower end is the one-sided bound the margin is tested against.

Exit codes of the command: 0 every check passed, 1 a check failed, 2 the input is unusable (UserError).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from lceval.analysis import stats
from lceval.analysis.compare import (
    Run,
    align,
    in_group,
    load_run,
    metric_kind,
    metric_names,
    mismatches,
    task_axes,
    value,
)
from lceval.api.errors import UserError
from lceval.api.run_folder import RESULTS, SAMPLES, RunFolder
from lceval.api.settings import Allowed, FiniteFloat, NonEmptyText, NonNegativeFloat, parse, settings_class
from lceval.api.task import Declaration

DEFAULT_ALPHA = 0.05
DEFAULT_MARGIN = 0.05  # absolute, on the metric's per-sample scale (0..1 for every built-in task)
VERDICT_SCHEMA = 1


@dataclass
class CheckSpec:
    """One entry of a policy's `checks`."""

    task: str
    metric: str
    margin: float | None = None  # None: the policy's default margin; a negative value is refused
    min_score: float | None = None  # floor on the candidate's mean (higher-is-better metrics)
    max_score: float | None = None  # ceiling on the candidate's mean (lower-is-better metrics)
    direction: str | None = None  # higher | lower is better; None: as the task declares the metric
    kind: str = "auto"  # auto | binary | continuous (auto: as declared, or binary where every value is 0 or 1)
    by: str | None = None  # one check per label of this axis (length, topics, category, dataset, ...)
    where: dict[str, str] = field(default_factory=dict)  # only the samples of these groups
    no_margin: bool = False  # `margin: null`: a floor-only check


@dataclass
class Policy:
    checks: list[CheckSpec]
    alpha: float = DEFAULT_ALPHA
    margin: float = DEFAULT_MARGIN
    correction: str = "holm"  # holm | none
    bootstrap_iterations: int = stats.BOOTSTRAP_ITERATIONS
    seed: int = 0
    source: str = "default"


# ------------------------------------------------------------------------------------------------- policy files


@settings_class
class CheckEntry:
    """One entry of a policy file's `checks`, as written (each field's type is its range; lceval.api.settings)."""

    task: NonEmptyText
    metric: NonEmptyText
    margin: NonNegativeFloat | None = None  # `margin: null` (given, empty): a floor-only check
    min_score: FiniteFloat | None = None
    max_score: FiniteFloat | None = None
    direction: Literal["higher", "lower"] | None = None
    kind: Literal["auto", "binary", "continuous"] = "auto"
    by: str | None = None
    where: dict[str, str] = field(default_factory=dict)
    length: str | None = None  # shorthand for where: {length: N}


@settings_class
class PolicyFile:
    """A policy file's top level, as written."""

    checks: Annotated[list[Any], Field(min_length=1),
                      Allowed("a non-empty list of checks, each a mapping of task, metric and optionally margin, "
                              "min_score, max_score, by")]
    alpha: Annotated[float, Field(ge=1e-9, le=0.5)] = DEFAULT_ALPHA
    margin: NonNegativeFloat = DEFAULT_MARGIN
    correction: Literal["holm", "none"] = "holm"
    bootstrap_iterations: Annotated[int, Field(ge=100, le=10**7)] = stats.BOOTSTRAP_ITERATIONS
    seed: Annotated[int, Field(ge=0, le=2**63)] = 0


def _check_spec(entry: Any, index: int, where_from: str) -> CheckSpec:
    what = f"{where_from} check {index + 1}"
    if not isinstance(entry, dict):
        raise UserError(f"{what} must be a mapping with task and metric, not {entry!r}.")
    checked = parse(CheckEntry, entry, label=lambda key: f"{what} {key}",
                    unknown=lambda key, known: f"{what} has unknown key {key!r}; known keys: {', '.join(known)}.")
    where = dict(checked.where)
    if checked.length is not None:
        where["length"] = checked.length
    spec = CheckSpec(task=checked.task, metric=checked.metric, margin=checked.margin, min_score=checked.min_score,
                     max_score=checked.max_score, direction=checked.direction, kind=checked.kind, by=checked.by,
                     where=where, no_margin="margin" in entry and entry["margin"] is None)
    if spec.no_margin and spec.min_score is None and spec.max_score is None:
        raise UserError(f"{what} has neither a margin nor a min_score/max_score: it would check nothing.")
    return spec


def load_policy(path: Path) -> Policy:
    """A policy file, validated: every mistake is one sentence naming the key, the value and what is allowed."""
    from lceval.running.config import load_yaml

    data = load_yaml(path, "policy")
    policy = parse(PolicyFile, data, label=str, where=lambda key: f" in policy {path}",
                   unknown=lambda key, known: f"policy {path} has unknown key {key!r}; known keys: "
                                              f"{', '.join(known)}.")
    checks = [_check_spec(entry, i, f"policy {path}") for i, entry in enumerate(policy.checks)]
    return Policy(checks, alpha=policy.alpha, margin=policy.margin, correction=policy.correction,
                  bootstrap_iterations=policy.bootstrap_iterations, seed=policy.seed, source=str(path))


def default_policy(baseline: Run) -> Policy:
    """Every task of the baseline and every metric of it on a 0..1 scale: overall, margin 0.05, no floor."""
    checks = []
    for task in baseline.tasks:
        records = baseline.task_records(task)
        for metric in metric_names(records):
            values = [v for v in (value(r, metric) for r in records) if v is not None]
            if values and 0.0 <= min(values) and max(values) <= 1.0:
                checks.append(CheckSpec(task, metric))
    if not checks:
        raise UserError(f"baseline {baseline.path} has no metric on a 0..1 scale to gate; write a policy (--policy).")
    return Policy(checks)


# ------------------------------------------------------------------------------------------------- checking


@dataclass
class CheckResult:
    name: str
    task: str
    metric: str
    where: dict[str, str]
    kind: str
    direction: str
    n: int
    baseline: float
    candidate: float
    difference: float  # candidate - baseline, in the metric's own units
    ci: tuple[float, float] | None  # of the difference, two-sided at `confidence`
    confidence: float
    margin: float | None
    test: str | None
    p_value: float | None  # one-sided, H0: worse by the margin or more
    p_adjusted: float | None = None
    min_score: float | None = None
    max_score: float | None = None
    status: str = "pass"  # pass | regression | not shown | below minimum | above maximum
    reasons: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class Verdict:
    baseline: dict[str, Any]
    candidate: dict[str, Any]
    policy: Policy
    checks: list[CheckResult]
    warnings: list[str]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _resolved(spec: CheckSpec, baseline: Run) -> CheckSpec:
    """The check with its direction as the task declares the metric (higher is better where it declares none)."""
    if spec.direction is not None:
        return spec
    declared = baseline.declaration(spec.task).metric(spec.metric)
    return replace(spec, direction="lower" if declared is not None and not declared.higher_is_better else "higher")


def _expand(spec: CheckSpec, baseline: Run) -> list[dict[str, str]]:
    """The `where` of each check a spec stands for (one per label of its `by` axis, or its own)."""
    records = baseline.task_records(spec.task)
    if not records:
        raise UserError(f"the baseline {baseline.path} has no {spec.task} samples; the policy's checks name tasks "
                        f"{spec.task!r} but the baseline has {', '.join(baseline.tasks) or 'none'}.")
    if spec.metric not in metric_names(records):
        raise UserError(f"the baseline's {spec.task} samples have no metric {spec.metric!r}; they have "
                        f"{', '.join(metric_names(records))}.")
    axes = task_axes(records, baseline.declaration(spec.task))
    for axis in [*spec.where, *([spec.by] if spec.by else [])]:
        if axis not in axes:
            raise UserError(f"{spec.task} has no breakdown {axis!r} to check by; it has {', '.join(axes) or 'none'}.")
    for axis, label in spec.where.items():
        if label not in axes[axis]:
            raise UserError(f"{spec.task} has no {axis} {label!r}; its {axis} values: {', '.join(axes[axis])}.")
    if spec.by is None:
        return [dict(spec.where)]
    return [{**spec.where, spec.by: label} for label in axes[spec.by]]


def _name(spec: CheckSpec, where: dict[str, str]) -> str:
    groups = " ".join(f"{axis}={label}" for axis, label in where.items())
    return f"{spec.task} {spec.metric}" + (f" [{groups}]" if groups else "")


def _evaluate(spec: CheckSpec, where: dict[str, str], pairs: list[tuple[dict, dict]], policy: Policy,
              declared: Declaration) -> CheckResult:
    name = _name(spec, where)
    kept = [(value(b, spec.metric), value(c, spec.metric)) for b, c in pairs if in_group(b, where, declared)]
    kept = [(b, c) for b, c in kept if b is not None and c is not None]
    if not kept:
        raise UserError(f"check {name}: no sample has a {spec.metric} score in both runs.")
    base, cand = [b for b, _ in kept], [c for _, c in kept]
    kind = spec.kind if spec.kind != "auto" else metric_kind(base + cand, declared, spec.metric)
    if kind == "binary" and not stats.is_binary(base + cand):
        raise UserError(f"check {name} declares kind binary, but {spec.metric} has values other than 0 and 1.")
    confidence = 1 - 2 * policy.alpha
    margin = None if spec.no_margin else (spec.margin if spec.margin is not None else policy.margin)
    b_mean, c_mean = sum(base) / len(base), sum(cand) / len(cand)
    result = CheckResult(name, spec.task, spec.metric, where, kind, spec.direction, len(kept), b_mean, c_mean,
                         c_mean - b_mean, None, confidence, margin, None, None, min_score=spec.min_score,
                         max_score=spec.max_score)
    if margin is not None:
        # Lower-is-better metrics are turned around (1 - v for pass/fail, -v otherwise): "better" is always up.
        turn = (lambda v: 1 - v) if kind == "binary" else (lambda v: -v)
        b_up, c_up = (base, cand) if spec.direction == "higher" else ([turn(v) for v in base], [turn(v) for v in cand])
        paired = stats.paired_test(b_up, c_up, kind, margin, confidence, policy.bootstrap_iterations, policy.seed,
                                   name)
        low, high = paired.ci
        result.ci = (low, high) if spec.direction == "higher" else (0.0 - high, 0.0 - low)
        result.test, result.p_value, result.detail = paired.test, paired.p_value, paired.detail
    return result


def _judge(result: CheckResult, policy: Policy) -> None:
    """Fill status and reasons from the (adjusted) p-value and the floors."""
    sign = 1 if result.direction == "higher" else -1
    if result.margin is not None and result.p_adjusted is not None and result.p_adjusted >= policy.alpha:
        low, high = result.ci
        worst = low if sign > 0 else high
        best = high if sign > 0 else low
        if sign * best < -result.margin:
            result.status = "regression"
            result.reasons.append(f"worse than the baseline by more than the margin {result.margin:g}: the whole "
                                  f"{result.confidence:.0%} interval [{low:+.4f}, {high:+.4f}] lies beyond it")
        elif sign * worst > -result.margin:
            result.status = "not shown"
            result.reasons.append(f"non-inferiority shown alone (p = {result.p_value:.3g}) but not after Holm's "
                                  f"correction across the gate's checks (adjusted p = {result.p_adjusted:.3g} >= "
                                  f"alpha {policy.alpha:g})")
        else:
            result.status = "not shown"
            result.reasons.append(f"non-inferiority not shown: the {result.confidence:.0%} interval reaches "
                                  f"{worst:+.4f}, beyond the margin {-sign * result.margin:+g} "
                                  f"(p = {result.p_adjusted:.3g} >= alpha {policy.alpha:g}; {result.n} samples)")
    if result.min_score is not None and result.candidate < result.min_score:
        result.status = "below minimum" if result.passed else result.status
        result.reasons.append(f"score {result.candidate:.4f} is below the minimum {result.min_score:g}")
    if result.max_score is not None and result.candidate > result.max_score:
        result.status = "above maximum" if result.passed else result.status
        result.reasons.append(f"score {result.candidate:.4f} is above the maximum {result.max_score:g}")


def _pairs(baseline: Run, candidate: Run, task: str) -> list[tuple[dict, dict]]:
    return align(baseline, candidate, task).pairs


def run_gate(baseline: Run, candidate: Run, policy: Policy, allow_mismatch: bool = False) -> Verdict:
    """Check comparability (refusing with UserError unless allowed), then every check, Holm across them."""
    tasks = list(dict.fromkeys(spec.task for spec in policy.checks))
    for task in tasks:
        if not candidate.task_records(task):
            raise UserError(f"the candidate {candidate.path} has no {task} samples, which the policy checks; "
                            "run the task on the candidate.")
    problems = mismatches(baseline, candidate, tasks)
    if problems and not allow_mismatch:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"the runs are not comparable: {problems[0]}{more}; rerun the candidate on the baseline's "
                        "samples, or pass --allow-mismatch to gate on the samples they share.")
    pairs = {task: _pairs(baseline, candidate, task) for task in tasks}
    policy = replace(policy, checks=[_resolved(spec, baseline) for spec in policy.checks])
    results = [_evaluate(spec, where, pairs[spec.task], policy, baseline.declaration(spec.task))
               for spec in policy.checks for where in _expand(spec, baseline)]
    tested = [r for r in results if r.p_value is not None]
    adjusted = stats.holm([r.p_value for r in tested]) if policy.correction == "holm" else [r.p_value for r in tested]
    for result, p in zip(tested, adjusted, strict=True):
        result.p_adjusted = p
    for result in results:
        _judge(result, policy)
    return Verdict(baseline.describe(), candidate.describe(), policy, results, problems)


# -------------------------------------------------------------------------------------------------- reports


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, tuple | list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """The machine-readable verdict (the file --json writes)."""
    policy = asdict(verdict.policy)
    for check in policy["checks"]:
        check.pop("no_margin")
    return _clean({
        "schema_version": VERDICT_SCHEMA,
        "verdict": "pass" if verdict.passed else "fail",
        "exit_code": verdict.exit_code,
        "baseline": verdict.baseline,
        "candidate": verdict.candidate,
        "alpha": verdict.policy.alpha,
        "correction": verdict.policy.correction,
        "n_checks": len(verdict.checks),
        "n_failed": sum(not c.passed for c in verdict.checks),
        "warnings": verdict.warnings,
        "checks": [{**asdict(c), "passed": c.passed} for c in verdict.checks],
        "policy": policy,
    })


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _run_line(run: dict[str, Any]) -> str:
    model = run["model"] or "?"
    if run.get("adapter"):
        model += f" + {run['adapter']}"
    return f"`{run['label']}` ({model}, {run.get('backend') or '?'})"


def verdict_markdown(verdict: Verdict) -> str:
    """A summary for $GITHUB_STEP_SUMMARY or a PR comment: the verdict, every check, failures explained."""
    failed = [c for c in verdict.checks if not c.passed]
    policy = verdict.policy
    head = ("## ✅ lceval gate: pass" if verdict.passed
            else f"## ❌ lceval gate: fail ({len(failed)} of {len(verdict.checks)} checks)")
    level = f"{1 - 2 * policy.alpha:.0%}"
    lines = [head, "",
             f"Candidate {_run_line(verdict.candidate)} against baseline {_run_line(verdict.baseline)}; "
             f"policy: {policy.source}.", ""]
    if verdict.warnings:
        lines += ["> **Compared despite mismatches (--allow-mismatch):**"]
        lines += [f"> - {w}" for w in verdict.warnings] + [""]
    lines += [f"| | check | n | baseline | candidate | difference [{level} CI] | margin | min/max | p (Holm) "
              "| verdict |",
              "|---|---|--:|--:|--:|---|--:|--:|--:|---|"]
    for c in verdict.checks:
        ci = f"{c.difference:+.4f} [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]" if c.ci else f"{c.difference:+.4f}"
        margin = "–" if c.margin is None else f"{-c.margin if c.direction == 'higher' else c.margin:+g}"
        floor = c.min_score if c.min_score is not None else c.max_score
        lines.append(f"| {'✅' if c.passed else '❌'} | {c.name} | {c.n} | {c.baseline:.4f} | {c.candidate:.4f} | {ci} "
                     f"| {margin} | {'–' if floor is None else f'{floor:g}'} | {_p(c.p_adjusted)} | {c.status} |")
    if failed:
        lines += ["", "**Why it failed**", ""]
        lines += [f"- **{c.name}**: {'; '.join(c.reasons)}." for c in failed]
    correction = "Holm-corrected across the gate's margin checks" if policy.correction == "holm" else "uncorrected"
    lines += ["", "<details><summary>Method</summary>", "",
              "Samples are paired by id (same prompt hash). Difference = candidate − baseline. Pass/fail metrics: "
              "Tango's score test of the margin (McNemar's statistic with the share of discordant pairs re-estimated "
              "under the null) and its score interval, exact McNemar for any difference; continuous metrics: paired "
              f"bootstrap of the mean difference ({policy.bootstrap_iterations} resamples, seed {policy.seed}). A "
              f"margin check passes when the one-sided p-value of \"worse by the margin or more\" is below "
              f"{policy.alpha:g} ({correction}); the {level} interval's lower end is that one-sided bound. Floors "
              "(min/max) apply to the candidate's mean.", "", "</details>", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- baselines


def promote(candidate_path: Path, baseline_dir: Path) -> Run:
    """Write a complete candidate run as the baseline: manifest, results and samples (pictures are redrawn)."""
    run = load_run(candidate_path)
    if run.manifest.status != "complete":
        raise UserError(f"run {run.path} is {run.manifest.status or 'unfinished'}, not complete; finish it "
                        "(rerun `lceval run` with the same --run-id) before promoting it to a baseline.")
    if run.results is None:
        raise UserError(f"run {run.path} has no {RESULTS}; finish it before promoting it to a baseline.")
    if baseline_dir.resolve() == run.path.resolve():
        raise UserError(f"{baseline_dir} is the candidate itself; give another folder for the baseline.")
    target = RunFolder(baseline_dir)
    target.ensure_writable("--baseline")
    manifest = replace(run.manifest, baseline={"promoted_from": str(run.path),
                                               "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    shutil.copyfile(run.path / SAMPLES, target.path / f".{SAMPLES}.tmp")
    (target.path / f".{SAMPLES}.tmp").replace(target.samples_path)
    target.write_results(run.results)
    target.write_manifest(manifest)
    return run
