"""The pass/fail metrics of needle, passkey and topic agree with a person's reading of real model outputs.

tests/fixtures/real_model/smollm2_labels.jsonl holds outputs of SmolLM2-135M-Instruct (a real chat model, on the
hf and vLLM backends, inside and beyond its 8K window), each with the label a person gave it by reading the output
against the needle, key or topic: 1 if the answer retrieves what was asked for, 0 if not (a wrong fact, a
different key, another topic, a non-answer). Each task's own scorer is run on the output and must agree with the
labels on at least 95% of them. No model is needed: this is the quick lane.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lceval.api import registry
from lceval.api.task import Sample

LABELS = Path(__file__).parent / "fixtures" / "real_model" / "smollm2_labels.jsonl"
PASS_FAIL = {"needle": "key_facts", "passkey": "passkey_match", "topic": "accuracy"}


def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines() if line.strip()]


def metric_says(row: dict) -> float:
    task = registry.tasks.get(row["task"])(row.get("options") or {})
    sample = Sample(row["id"], [], 0, row["target"], row.get("meta") or {})
    return task.score(sample, row["output"])[PASS_FAIL[row["task"]]]


def test_the_fixture_is_large_and_varied_enough():
    rows = labelled()
    assert len(rows) >= 60
    assert {r["task"] for r in rows} == set(PASS_FAIL)
    assert all(r["label"] in (0, 1) and r["why"].strip() for r in rows)  # every label says why
    for task in PASS_FAIL:
        labels = {r["label"] for r in rows if r["task"] == task}
        assert labels == {0, 1}, f"{task} has only labels {labels}: the fixture must hold passes and failures"


@pytest.mark.parametrize("task", sorted(PASS_FAIL))
def test_pass_fail_metric_agrees_with_hand_labels(task):
    rows = [r for r in labelled() if r["task"] == task]
    disagreements = [(r["id"], r["output"], r["label"]) for r in rows if metric_says(r) != r["label"]]
    agreement = 1 - len(disagreements) / len(rows)
    assert agreement >= 0.95, disagreements


def test_the_needle_metric_counts_paraphrases_and_misses_wrong_facts():
    """The two cases the old whole-phrase substring got wrong or right, seen on SmolLM2."""
    target = {"needle": "x", "answer": "sitting in Dolores Park and eating a hamburg on a sunny day",
              "facts": ["Dolores Park", "hamburg"]}
    task = registry.tasks.get("needle")({})

    def score(output: str) -> dict:
        return task.score(Sample("s", [], 0, target, {}), output)

    paraphrase = score("The best thing to do in San Francisco is sitting in Dolores Park and eating a hamburger.")
    assert paraphrase["key_facts"] == 1.0 and paraphrase["exact_phrase"] == 0.0
    wrong = score("The best thing to do in San Francisco is to eat a sandwich and sit in Dolores Park.")
    assert wrong["key_facts"] == 0.0
