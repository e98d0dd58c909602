"""Scoring speed: LongBench v1's official metrics over its full size (4,750 predictions, each dataset's n_samples)
and InfiniteBench's scorers, per dataset, so the slowest metric is named by its time per item.

Predictions are the bundled rows' answers cut to their first half or swapped with another row's (so every metric
does its real work on answers of the real shapes), repeated to the dataset's official size.

Run: python -m pytest benchmarks/test_bench_scoring.py --benchmark-only --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from lceval.metrics import infinitebench as ib
from lceval.metrics import longbench as lb


def _rows(folder: str, name: str) -> list[dict]:
    text = resources.files("lceval.tasks").joinpath(f"data/{folder}/{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _predictions(answers: list[str], n: int) -> list[str]:
    """n predictions: every other one an answer's first half, the rest another row's answer."""
    out = []
    for i in range(n):
        answer = str(answers[i % len(answers)])
        out.append(answer[: max(1, len(answer) // 2)] if i % 2 else str(answers[(i + 1) % len(answers)]))
    return out


@pytest.mark.parametrize("dataset", list(lb.spec()))
def test_longbench_dataset_scoring(benchmark, dataset):
    rows = _rows("longbench", dataset)
    n = lb.spec()[dataset]["n_samples"]
    answers = [rows[i % len(rows)]["answers"] for i in range(n)]
    predictions = _predictions([a[0] for a in answers], n)
    classes = rows[0].get("all_classes")
    benchmark.extra_info.update(metric=lb.dataset_metric(dataset), items=n)
    score = benchmark.pedantic(lb.score_dataset, args=(dataset, predictions, answers, classes), rounds=3,
                               warmup_rounds=1)
    assert 0 <= score <= 100


@pytest.mark.parametrize("task", ib.TASKS)
def test_infinitebench_task_scoring(benchmark, task):
    """200 predictions per task (the official sizes run from 50 to 750 items; time per item is what compares)."""
    from lceval.tasks.infinitebench import ground_truth

    rows = _rows("infinitebench", task)
    truths = [ground_truth(task, rows[i % len(rows)]) for i in range(200)]
    answers = [row["answer"][0] if isinstance(row["answer"], list) else row["answer"] for row in rows]
    predictions = _predictions([str(a) for a in answers], 200)
    benchmark.extra_info.update(items=len(predictions))
    score = benchmark.pedantic(ib.score_task, args=(task, predictions, truths), rounds=3, warmup_rounds=1)
    assert 0 <= score <= 1
