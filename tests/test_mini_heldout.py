"""lceval-mini's extended model off its grid: a needle and a key in wordings of their own (never in the training data,
never in the grid), on the generated haystack, 320 to 3,776 tokens x 5 depths. The grid's one needle could be found
by a model keyed to its words; these show that the shipped model retrieves what it was not tuned on. Thresholds sit
below what the shipped checkpoint measured (needle 20 of 25, key 25 of 25), so that a rerun on another CPU may flip
a cell, and above what the base model gets with the same config (needle 5 and key 9 of 25: 5 of 5 at 320 tokens,
inside its window, then 0 and 1 of 5 at each length beyond)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow

LENGTHS = [320, 1536, 2304, 3072, 3776]
HELD_OUT = {
    "needle": {
        "needle": "\n\nThe only coin allowed in the orchard is reading in Zelin Garden and slicing a tomato on a misty "
                  "afternoon.\n\n",
        "question": "\n\nWhat is the only coin allowed in the orchard?\nAnswer:",
        "answer": "reading in Zelin Garden and slicing a tomato on a misty afternoon",
        "facts": ["Zelin Garden", "tomato"],
        "max_new_tokens": 64,
    },
    "passkey": {
        "description": "Somewhere in the notes below there is a number you will need. Keep it in mind.\n",
        "needle": "\nThe code of the blue door is {key}. Keep it. {key} is the code of the blue door.\n",
        "question": "\nWhat is the code of the blue door? The code of the blue door is",
        "answer": "{key}",
        "facts": ["{key}"],
        "haystack": "generated",
        "key_seed": 7,
    },
}


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory, lceval_cmd, cli_env) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("mini-heldout")
    options = {task: {**held_out, "lengths": LENGTHS, "num_depths": 5, "control": False}
               for task, held_out in HELD_OUT.items()}
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "mini-extended", "backend": "hf", "tasks": "needle,passkey", "seed": 0,
                                      "task_options": options}))
    proc = subprocess.run([*lceval_cmd, "run", "--config", str(config), "--out", str(root), "--run-id", "heldout"],
                          env=cli_env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples: dict[str, list[dict]] = {"needle": [], "passkey": []}
    for line in (root / "heldout" / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        samples[sample["task"]].append(sample)
    return samples


def _found(samples: list[dict], metric: str) -> dict[int, int]:
    found = {length: 0 for length in LENGTHS}
    for sample in samples:
        found[sample["meta"]["length"]] += sample["scores"][metric] >= 1
    return found


def test_the_extended_model_finds_a_needle_worded_otherwise(held_out_run):
    samples = held_out_run["needle"]
    assert len(samples) == 25 and all("Zelin Garden" in s["target"]["needle"] for s in samples)
    found = _found(samples, "key_facts")
    # measured: 5, 5, 5, 3, 2 of 5
    assert sum(found[n] for n in (320, 1536, 2304)) >= 13 and sum(found.values()) >= 15, found


def test_the_extended_model_finds_a_key_worded_otherwise_to_the_end_of_its_window(held_out_run):
    samples = held_out_run["passkey"]
    assert len(samples) == 25 and all("blue door" in s["target"]["needle"] for s in samples)
    found = _found(samples, "passkey_match")
    # measured: 5 of 5 at every length
    assert sum(found.values()) >= 21 and found[3776] >= 3, found
