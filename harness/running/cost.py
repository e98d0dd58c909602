"""What a run cost: tokens, engine start, generation time and tokens per second, per prompt-length bucket.

The runner records each session's cost in manifest.json (`sessions[i].cost`) and the sum over the sessions of
a run in results.json (`cost`); `lceval show` and the HTML report print it, and `lceval run --dry-run` estimates
a run's time from it (or from a short calibration on the model).

Tokens per second are prompt plus generated tokens per second of generation. Generation time runs from a task's
first request to its last sample scored (scoring is included; it is small next to generation except with a
judge). A length bucket's time is the time each of its samples waited since the sample before it finished;
samples that finish within BURST_S of each other came from one batch and share that time in proportion to
their tokens, so that a batch spanning two buckets is split between them fairly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KILO = 1024  # a "K" of tokens, as in "a 128K window"
BURST_S = 0.02


def length_bucket(tokens: int) -> str:
    """The prompt-length bucket of a sample: <1K, 1K-2K, 2K-4K, ... (powers of two, K = 1024 tokens)."""
    if tokens < KILO:
        return "<1K"
    low = 1 << ((tokens // KILO).bit_length() - 1)
    return f"{_kilos(low)}-{_kilos(2 * low)}"


def _kilos(k: int) -> str:
    return f"{k // KILO}M" if k >= KILO else f"{k}K"


def bucket_floor(label: str) -> int:
    """The shortest prompt (in tokens) of a bucket; sorts buckets by length."""
    if label.startswith("<"):
        return 0
    low = label.split("-")[0]
    return int(low[:-1]) * (KILO * KILO if low.endswith("M") else KILO)


def sorted_buckets(labels: Iterable[str]) -> list[str]:
    return sorted(set(labels), key=bucket_floor)


@dataclass(frozen=True)
class Finished:
    """One sample as it finished: seconds since its task started generating, and its tokens."""

    at: float
    prompt_tokens: int
    generated_tokens: int


def _rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if seconds > 0 else None


def _part(samples: int, prompt: int, generated: int, seconds: float) -> dict[str, Any]:
    seconds = round(seconds, 3)  # rates from the recorded seconds, so that sums over sessions agree
    return {"samples": samples, "prompt_tokens": prompt, "generated_tokens": generated, "seconds": seconds,
            "tokens_per_s": _rate(prompt + generated, seconds)}


def task_cost(finished: list[Finished], seconds: float) -> dict[str, Any]:
    """A task's cost from its samples in the order they finished and its whole generation time."""
    seconds = round(seconds, 3)
    charges = [0.0] * len(finished)
    start, previous_end = 0, 0.0
    while start < len(finished):
        end = start
        while end + 1 < len(finished) and finished[end + 1].at - finished[end].at <= BURST_S:
            end += 1
        until = seconds if end == len(finished) - 1 else finished[end].at  # the last burst takes the tail too
        span = max(until - previous_end, 0.0)
        group = range(start, end + 1)
        weights = [finished[i].prompt_tokens + finished[i].generated_tokens for i in group]
        total = sum(weights)
        for i, weight in zip(group, weights, strict=True):
            charges[i] = span * (weight / total if total else 1 / len(weights))
        previous_end, start = finished[end].at, end + 1
    buckets: dict[str, list[float]] = {}
    for sample, charge in zip(finished, charges, strict=True):
        entry = buckets.setdefault(length_bucket(sample.prompt_tokens), [0, 0, 0, 0.0])
        entry[0] += 1
        entry[1] += sample.prompt_tokens
        entry[2] += sample.generated_tokens
        entry[3] += charge
    prompt = sum(s.prompt_tokens for s in finished)
    generated = sum(s.generated_tokens for s in finished)
    return {"samples": len(finished), "prompt_tokens": prompt, "generated_tokens": generated,
            "generation_s": seconds, "tokens_per_s": _rate(prompt + generated, seconds),
            "by_length_bucket": {label: _part(*buckets[label]) for label in sorted_buckets(buckets)}}


def combine(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and buckets summed over task or session costs (tokens per second recomputed from the sums)."""
    prompt = sum(c.get("prompt_tokens", 0) for c in costs)
    generated = sum(c.get("generated_tokens", 0) for c in costs)
    seconds = round(sum(c.get("generation_s", 0.0) for c in costs), 3)
    buckets: dict[str, list[float]] = {}
    for c in costs:
        for label, part in (c.get("by_length_bucket") or {}).items():
            entry = buckets.setdefault(label, [0, 0, 0, 0.0])
            for i, key in enumerate(("samples", "prompt_tokens", "generated_tokens", "seconds")):
                entry[i] += part.get(key, 0)
    return {"samples": sum(c.get("samples", 0) for c in costs), "prompt_tokens": prompt,
            "generated_tokens": generated, "generation_s": round(seconds, 3),
            "tokens_per_s": _rate(prompt + generated, seconds),
            "by_length_bucket": {label: _part(*buckets[label]) for label in sorted_buckets(buckets)}}


def session_cost(engine_start_s: float | None, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One session's cost: its engine start (None where a caller lent an open backend) and its tasks."""
    start = None if engine_start_s is None else round(engine_start_s, 3)
    return {"engine_start_s": start, **combine(list(tasks.values())), "tasks": tasks}


def run_cost(sessions: list[dict[str, Any]], samples_in_run: int) -> dict[str, Any]:
    """A run's cost: every session that generated, summed (a resumed run adds its sessions' work and engine
    starts). `untimed_samples`: samples the run holds that no recorded session timed (a session killed in the
    middle of a task keeps its samples but not their time)."""
    costs = [s["cost"] for s in sessions if isinstance(s.get("cost"), dict)]
    starts = [c["engine_start_s"] for c in costs if isinstance(c.get("engine_start_s"), int | float)]
    names = list(dict.fromkeys(name for c in costs for name in c.get("tasks") or {}))
    tasks = {name: combine([c["tasks"][name] for c in costs if name in (c.get("tasks") or {})]) for name in names}
    total = combine(list(tasks.values()))
    return {"sessions": len(costs), "engine_start_s": round(sum(starts), 3) if starts else None, **total,
            "untimed_samples": max(samples_in_run - total["samples"], 0), "tasks": tasks}


# ------------------------------------------------------------------------------------------ the dry-run estimate


def seconds_per_token(cost: dict[str, Any], task: str, bucket: str) -> tuple[float, str] | None:
    """Generation seconds per prompt token for a task's bucket, and where the figure comes from.

    The task's own bucket where it was measured; else the task's nearest measured bucket (the one below, else
    above); else all tasks' bucket, then all tasks' nearest. Tokens per prompt token carries the answer's cost
    along, so it suits samples of the same task and answer length.
    """

    def measured(buckets: dict[str, Any]) -> dict[str, float]:
        return {label: part["seconds"] / part["prompt_tokens"] for label, part in (buckets or {}).items()
                if part.get("prompt_tokens") and part.get("seconds")}

    def nearest(rates: dict[str, float]) -> str:
        below = [b for b in rates if bucket_floor(b) < bucket_floor(bucket)]
        return max(below, key=bucket_floor) if below else min(rates, key=bucket_floor)

    own = measured(((cost.get("tasks") or {}).get(task) or {}).get("by_length_bucket"))
    every = measured(cost.get("by_length_bucket"))
    if bucket in own:
        return own[bucket], "measured"
    if own:
        near = nearest(own)
        return own[near], f"~{near}"
    if bucket in every:
        return every[bucket], "measured (all tasks)"
    if every:
        near = nearest(every)
        return every[near], f"~{near} (all tasks)"
    return None


def estimate(samples: dict[str, list[tuple[int, int]]], basis: dict[str, Any]) -> dict[str, Any]:
    """Estimated generation seconds per task and bucket for (prompt tokens, max new tokens) samples."""
    tasks = {}
    for task, items in samples.items():
        buckets: dict[str, dict[str, Any]] = {}
        for label in sorted_buckets(length_bucket(p) for p, _ in items):
            prompt = sum(p for p, _ in items if length_bucket(p) == label)
            rate = seconds_per_token(basis, task, label)
            buckets[label] = {"seconds": None if rate is None else prompt * rate[0],
                              "from": None if rate is None else rate[1]}
        known = [b["seconds"] for b in buckets.values()]
        tasks[task] = {"seconds": sum(known) if known and None not in known else None, "by_length_bucket": buckets}
    known = [t["seconds"] for t in tasks.values()]
    return {"generation_s": sum(known) if known and None not in known else None, "tasks": tasks}


def plan_table(samples: dict[str, list[tuple[int, int]]]) -> dict[str, dict[str, Any]]:
    """Per task and bucket: samples, prompt tokens, the most new tokens a sample may generate."""
    table = {}
    for task, items in samples.items():
        rows = {}
        for label in sorted_buckets(length_bucket(p) for p, _ in items):
            mine = [(p, m) for p, m in items if length_bucket(p) == label]
            rows[label] = {"samples": len(mine), "prompt_tokens": sum(p for p, _ in mine),
                           "max_new_tokens": max(m for _, m in mine)}
        table[task] = {"samples": len(items), "prompt_tokens": sum(p for p, _ in items),
                       "max_new_tokens": max((m for _, m in items), default=0), "by_length_bucket": rows}
    return table


def seconds_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 60 else f"{minutes / 60:.1f} h"
