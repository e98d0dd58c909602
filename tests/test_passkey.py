"""Passkey retrieval: Landmark/LongLoRA prompt pieces, a seeded key per cell, exact token lengths, first-int scoring."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from lceval.api.prompting import bos_ids, encode
from lceval.api.task import PromptContext, Sample
from lceval.running.config import RunConfig
from lceval.running.runner import execute
from lceval.tasks.haystack import NOISE_UNIT
from lceval.tasks.needle import NeedleOptions, PasskeyTask, depth_grid, length_grid


@pytest.fixture(scope="module")
def samples(demo_tokenizer):
    ctx = PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)
    return PasskeyTask({"lengths": [300, 900], "depths": [0, 50, 100]}).build_samples(ctx)


def test_default_grid_is_longlora_like():
    opts = NeedleOptions.from_dict({"preset": "passkey"})
    assert length_grid(opts) == list(range(1000, 32001, 1000))
    assert depth_grid(opts) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 100]
    assert opts.max_new_tokens == 10 and opts.chat_template is False


def test_prompt_is_completion_style_with_whole_sentences_and_a_seeded_key(samples, demo_tokenizer):
    bos = bos_ids(demo_tokenizer)
    for sample in (s for s in samples if not s.meta.get("control")):
        assert len(sample.prompt_ids) == sample.meta["prompt_tokens"] <= sample.meta["length"]
        assert sample.prompt_ids[: len(bos)] == bos  # no chat template: completion style, as LongLoRA ran it
        key = sample.target["answer"]
        assert len(key) == 5 and key.isdigit()
        text = demo_tokenizer.decode(sample.prompt_ids, skip_special_tokens=True)
        assert text.startswith("There is an important info hidden inside a lot of irrelevant text.")
        assert f"The pass key is {key}. Remember it. {key} is the pass key." in text
        assert text.endswith("What is the pass key? The pass key is")
        # The filler is whole sentences: before the key line and before the question (LongLoRA's depth-100 failure
        # on a real model came from a filler cut mid-sentence, "...Here we go. There\nThe pass key is").
        assert text.split("\nThe pass key is")[0].rstrip().endswith(".")
        assert text.split(f"{key} is the pass key.")[1].split("\nWhat is the pass key?")[0].strip()[-1:] in (".", "")
        assert NOISE_UNIT in text
        needle = encode(demo_tokenizer, sample.target["needle"])
        at = sample.meta["needle_token_index"]
        assert sample.prompt_ids[at: at + len(needle)] == needle
    keys = [s.target["answer"] for s in samples]
    assert len(set(keys)) > 1  # a key per cell, not one for the whole grid


def test_keys_are_stable_across_builds(samples, demo_tokenizer):
    ctx = PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)
    again = PasskeyTask({"lengths": [300, 900], "depths": [0, 50, 100]}).build_samples(ctx)
    assert [s.target["answer"] for s in again] == [s.target["answer"] for s in samples]
    other = PasskeyTask({"lengths": [300, 900], "depths": [0, 50, 100], "key_seed": 7}).build_samples(ctx)
    assert [s.target["answer"] for s in other] != [s.target["answer"] for s in samples]


@pytest.mark.parametrize(("output", "expected"), [(" 12345.", 1.0), ("12345", 1.0), (" 1234", 0.0),
                                                  (" it is 99999 or 12345", 0.0), (" none", 0.0),
                                                  ("123456", 0.0)])
def test_first_integer_must_be_the_key(output, expected):
    sample = Sample("x", [], 10, {"needle": "", "answer": "12345"})
    assert PasskeyTask({"lengths": [300]}).score(sample, output) == {"passkey_match": expected}


def test_passkey_run_writes_results_and_a_heatmap(tmp_path, demo_model):
    cfg = RunConfig(model="lceval-demo", tasks=["passkey"], backend="hf", out=str(tmp_path), run_id="p",
                    task_options={"passkey": {"lengths": [256, 512], "depths": [0, 100]}})
    run_dir = execute(cfg, Console(stderr=True))
    results = json.loads((run_dir / "results.json").read_text())["tasks"]["passkey"]
    assert results["n_samples"] == 4 + 2 and set(results["metrics"]) == {"passkey_match"}  # and 2 controls
    assert results["control"]["n"] == 2 and set(results["control"]["metrics"]) == {"passkey_match"}
    assert [c["n"] for c in results["cells"]] == [1, 1, 1, 1]
    assert (run_dir / "passkey_heatmap_passkey_match.png").read_bytes()[:4] == b"\x89PNG"


def test_a_custom_passkey_line_without_facts_is_refused_in_the_passkey_tasks_own_words():
    """The passkey task shares the needle task's options; a bad option names passkey.KEY, not needle.KEY."""
    from lceval.api.errors import UserError

    with pytest.raises(UserError, match=r"custom passkey\.needle needs passkey\.facts .* or passkey\.answer"):
        PasskeyTask({"needle": "\nThe code of the blue door is {key}.\n"})
