"""lceval-mini's extended model off its grid: needles and keys in wordings of their own (never in the training data,
never in the grid), 320 to 3,776 tokens x 5 depths, in two haystacks: lceval's generated English, and a filler of
five sentences of this file said over and over (the passkey task's kind of filler, in other words). The grid's one
needle and one key line could be found by a model keyed to their words; these show that the shipped model retrieves
what it was not tuned on. Thresholds sit a few cells below what the shipped checkpoint measured, so that a rerun on
another CPU may flip a cell, and above what the base model gets with the same configs (its window is 384 tokens: it
finds them at 320 and almost nowhere beyond)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow

LENGTHS = [320, 1536, 2304, 3072, 3776]
DOOR = {
    "description": "Somewhere in the notes below there is a number you will need. Keep it in mind.\n",
    "needle": "\nThe code of the blue door is {key}. Keep it. {key} is the code of the blue door.\n",
    "question": "\nWhat is the code of the blue door? The code of the blue door is",
    "answer": "{key}",
    "facts": ["{key}"],
    "key_seed": 7,
}
ORCHARD = {
    "needle": "\n\nThe only coin allowed in the orchard is reading in Zelin Garden and slicing a tomato on a misty "
              "afternoon.\n\n",
    "question": "\n\nWhat is the only coin allowed in the orchard?\nAnswer:",
    "answer": "reading in Zelin Garden and slicing a tomato on a misty afternoon",
    "facts": ["Zelin Garden", "tomato"],
    "max_new_tokens": 64,
}
BAKER = {
    "needle": "\n\nThe favourite place of the old baker is the pier at Fenpen Square, where gulls steal chips.\n\n",
    "question": "\n\nWhat is the favourite place of the old baker?\nAnswer:",
    "answer": "the pier at Fenpen Square, where gulls steal chips",
    "facts": ["Fenpen Square", "pier"],
    "max_new_tokens": 64,
}
SOUP = {
    "needle": "\n\nThe secret ingredient in Marta's soup is smoked paprika from Valdora.\n\n",
    "question": "\n\nWhat is the secret ingredient in Marta's soup?\nAnswer:",
    "answer": "smoked paprika from Valdora",
    "facts": ["paprika", "Valdora"],
    "max_new_tokens": 64,
}
REPEATED = "The bell rings at noon. The cart is full. Birds fly south. Here we are again. The tea is hot. "


@pytest.fixture(scope="module")
def held_out_runs(tmp_path_factory, lceval_cmd, cli_env) -> dict[str, dict[str, list[dict]]]:
    """{haystack: {task: samples}}: two needles and the door key on each haystack (the orchard needle on the
    generated one, the baker on the repeated sentences, Marta's soup on both), in two runs a haystack."""
    root = tmp_path_factory.mktemp("mini-heldout")
    (root / "repeated").mkdir()
    (root / "repeated" / "filler.txt").write_text(REPEATED)
    runs: dict[str, dict[str, list[dict]]] = {}
    for haystack, needle, folder in (("generated", ORCHARD, "generated"), ("repeated", BAKER, str(root / "repeated"))):
        grid = {"lengths": LENGTHS, "num_depths": 5, "control": False, "haystack": folder}
        runs[haystack] = {"needle": [], "passkey": []}
        for run_id, options in ((haystack, {"needle": {**needle, **grid}, "passkey": {**DOOR, **grid}}),
                                (f"{haystack}-soup", {"needle": {**SOUP, **grid}})):
            config = root / f"{run_id}.yaml"
            config.write_text(yaml.safe_dump({"model": "mini-extended", "backend": "hf", "tasks": ",".join(options),
                                              "seed": 0, "task_options": options}))
            proc = subprocess.run([*lceval_cmd, "run", "--config", str(config), "--out", str(root), "--run-id", run_id],
                                  env=cli_env, capture_output=True, text=True, timeout=1200)
            assert proc.returncode == 0, proc.stderr[-3000:]
            for line in (root / run_id / "samples.jsonl").read_text().splitlines():
                sample = json.loads(line)
                runs[haystack][sample["task"]].append(sample)
    return runs


def _found(samples: list[dict], metric: str) -> dict[int, int]:
    found = {length: 0 for length in LENGTHS}
    for sample in samples:
        found[sample["meta"]["length"]] += sample["scores"][metric] >= 1
    return found


@pytest.mark.parametrize("haystack,words", [("generated", "Zelin Garden"), ("repeated", "Fenpen Square")])
def test_the_extended_model_finds_needles_worded_otherwise(held_out_runs, haystack, words):
    """Two needles a haystack, 50 cells: one needle alone is a noisy measure (two draws of the extended stage that
    find the same number of needles in all differ by six cells on one needle), two steady it."""
    samples = held_out_runs[haystack]["needle"]
    assert len(samples) == 50
    assert sum(words in s["target"]["needle"] for s in samples) == sum("Valdora" in s["target"]["needle"]
                                                                        for s in samples) == 25
    found = _found(samples, "key_facts")
    # measured (shipped model), cells found of 10 by length: generated 10, 9, 7, 3, 2; repeated 10, 10, 10, 8, 6
    # (the base: 10 at 320, then 0 in both)
    assert sum(found[n] for n in LENGTHS[1:]) >= 18 and sum(found.values()) >= 28, found


@pytest.mark.parametrize("haystack", ["generated", "repeated"])
def test_the_extended_model_finds_a_key_worded_otherwise_to_the_end_of_its_window(held_out_runs, haystack):
    samples = held_out_runs[haystack]["passkey"]
    assert len(samples) == 25 and all("blue door" in s["target"]["needle"] for s in samples)
    found = _found(samples, "passkey_match")
    # measured (shipped model): 5 of 5 at every length, in both haystacks (the base: 5 at 320, then 1 or 0 a length)
    assert sum(found.values()) >= 21 and found[3776] >= 3, found
