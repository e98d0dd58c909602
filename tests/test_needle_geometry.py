"""The needle prompt is built exactly in tokens: lengths, depth placement, sentence snapping, grids."""

from __future__ import annotations

import json

import pytest

from lceval.api.errors import UserError
from lceval.api.prompting import encode, prompt_format, stop_token_ids
from lceval.api.task import PromptContext
from lceval.tasks.needle import NeedleOptions, NeedleTask, depth_grid, length_grid

LENGTHS = [300, 700, 1500]
DEPTHS = [0, 10, 33, 50, 77.5, 100]


@pytest.fixture(scope="module")
def ctx(demo_tokenizer):
    return PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)


def build(ctx, **options):
    """The task and its grid's cells (the no-needle controls are tested in test_needle_control.py)."""
    task = NeedleTask({"lengths": LENGTHS, "depths": DEPTHS, **options})
    return task, [s for s in task.build_samples(ctx) if not s.meta.get("control")]


def find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def test_every_prompt_fits_its_nominal_length_within_one_sentence(ctx):
    _, samples = build(ctx)
    assert len(samples) == len(LENGTHS) * len(DEPTHS)
    for sample in samples:
        assert len(sample.prompt_ids) == sample.meta["prompt_tokens"] <= sample.meta["length"]
        assert sample.meta["length"] - sample.meta["prompt_tokens"] < 40  # at most the sentence that did not fit


def test_filler_is_whole_sentences_before_the_needle_and_the_question(ctx, demo_tokenizer):
    """A filler cut mid-sentence makes models continue the broken sentence instead of answering."""
    task, samples = build(ctx)
    needle = encode(demo_tokenizer, task.opts.needle)
    question = encode(demo_tokenizer, task.opts.question)
    turn = prompt_format(demo_tokenizer, True)
    for sample in samples:
        at = sample.meta["needle_token_index"]
        before_needle = demo_tokenizer.decode(sample.prompt_ids[:at])
        body_end = len(sample.prompt_ids) - len(turn.suffix_ids) - len(question)
        before_question = demo_tokenizer.decode(sample.prompt_ids[:body_end])
        if sample.meta["depth"] == 100:
            assert before_question.endswith(demo_tokenizer.decode(needle))
        else:
            assert before_question.rstrip()[-1] in ".!?", before_question[-60:]
        assert sample.meta["depth"] == 0 or before_needle.rstrip()[-1] in ".!?", before_needle[-60:]


def test_prompt_is_wrapped_in_the_chat_template_and_ends_with_the_question(ctx, demo_tokenizer):
    task, samples = build(ctx)
    turn = prompt_format(demo_tokenizer, True)
    question = encode(demo_tokenizer, task.opts.question)
    for sample in samples:
        assert sample.prompt_ids[: len(turn.prefix_ids)] == list(turn.prefix_ids)
        assert sample.prompt_ids[-len(turn.suffix_ids) :] == list(turn.suffix_ids)
        body_end = len(sample.prompt_ids) - len(turn.suffix_ids)
        assert sample.prompt_ids[body_end - len(question) : body_end] == question
    text = demo_tokenizer.decode(samples[0].prompt_ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nThere is an important")
    assert text.endswith("Answer:<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_without_chat_template_only_the_bos_comes_first(ctx, demo_tokenizer):
    task, samples = build(ctx, chat_template=False)
    description = encode(demo_tokenizer, task.opts.description)
    for sample in samples:
        assert sample.prompt_ids[0] == demo_tokenizer.bos_token_id
        assert sample.prompt_ids[1 : 1 + len(description)] == description
        assert len(sample.prompt_ids) == sample.meta["prompt_tokens"] <= sample.meta["length"]


def test_needle_sits_at_the_recorded_index_at_a_sentence_start_before_the_depth(ctx, demo_tokenizer):
    task, samples = build(ctx)
    needle = encode(demo_tokenizer, task.opts.needle)
    turn = prompt_format(demo_tokenizer, True)
    description = encode(demo_tokenizer, task.opts.description)
    question = encode(demo_tokenizer, task.opts.question)
    context_start = len(turn.prefix_ids) + len(description)
    for sample in samples:
        at = sample.meta["needle_token_index"]
        assert find(sample.prompt_ids, needle) == at
        budget = sample.meta["prompt_tokens"] - turn.overhead - len(description) - len(needle) - len(question)
        pos = at - context_start
        assert sample.meta["realized_depth"] == pytest.approx(100 * pos / budget, abs=1e-3)
        depth = sample.meta["depth"]
        if depth == 0:
            assert pos == 0
        elif depth == 100:
            assert pos == budget  # right before the question
        else:
            assert sample.meta["realized_depth"] <= depth
            before = demo_tokenizer.decode(sample.prompt_ids[context_start:at])
            assert pos == 0 or before.rstrip()[-1] in ".!?", before[-80:]  # the context's start or a sentence's
            # Snapped to the closest sentence start: no sentence ends between the needle and the nominal depth.
            target = int(budget * depth / 100)
            gap = demo_tokenizer.decode(sample.prompt_ids[at + len(needle) : at + len(needle) + target - pos])
            assert not any(mark in gap.rstrip() for mark in ".!?"), gap


def test_same_context_at_every_depth_of_a_length(ctx, demo_tokenizer):
    task, samples = build(ctx)
    needle = encode(demo_tokenizer, task.opts.needle)
    by_length: dict[int, set] = {}
    for sample in samples:
        at = sample.meta["needle_token_index"]
        without = tuple(sample.prompt_ids[:at] + sample.prompt_ids[at + len(needle) :])
        by_length.setdefault(sample.meta["length"], set()).add(without)
    assert all(len(contexts) == 1 for contexts in by_length.values())


def test_samples_are_deterministic_and_ids_stable(ctx):
    _, first = build(ctx)
    _, second = build(ctx)
    assert [s.prompt_ids for s in first] == [s.prompt_ids for s in second]
    assert first[0].id == "L300-D0" and first[-1].id == "L1500-D100"
    assert len({s.id for s in first}) == len(first)


def test_length_too_short_for_the_fixed_parts_is_refused(ctx):
    with pytest.raises(UserError, match="too short"):
        build(ctx, lengths=[40])


def test_seed_paper_grid():
    opts = NeedleOptions.from_dict({"preset": "seed-paper"})
    assert length_grid(opts) == [8000, 16000, 24000, 32000, 40000, 48000, 56000, 64000, 72000, 80000]
    assert depth_grid(opts) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 100]
    assert opts.needle.strip().startswith("The best thing to do in San Francisco is sitting in Dolores Park")


def test_gkamradt_linear_and_sigmoid_depths():
    opts = NeedleOptions.from_dict({"preset": "gkamradt"})
    assert depth_grid(opts)[:10] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 26]
    assert length_grid(opts)[:4] == [1000, 1441, 1882, 2324]
    sigmoid = depth_grid(NeedleOptions.from_dict({"preset": "gkamradt", "depth_spacing": "sigmoid"}))
    assert sigmoid[:6] == [0, 0.896, 1.199, 1.602, 2.138, 2.849]
    assert sigmoid[-3:] == [98.801, 99.104, 100]
    assert 50.0 in sigmoid


def test_min_max_count_lengths_and_bad_options():
    assert length_grid(NeedleOptions.from_dict({"min_length": 1000, "max_length": 2000, "num_lengths": 3})) == [
        1000, 1500, 2000]
    with pytest.raises(UserError, match="unknown needle option 'lenghts'"):
        NeedleOptions.from_dict({"lenghts": [1]})
    with pytest.raises(UserError, match="from 0 to 100"):
        depth_grid(NeedleOptions.from_dict({"depths": [120]}))


def test_llama3_style_model_stops_on_both_end_tokens(demo_tokenizer, demo_model):
    from lceval.api.backend import generation_eos

    stops = stop_token_ids(demo_tokenizer, generation_eos(demo_model))
    assert sorted(stops) == sorted(demo_tokenizer.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"]))


def test_folder_haystack_reads_files_in_sorted_order(tmp_path, ctx, demo_tokenizer):
    (tmp_path / "b.txt").write_text("Bravo sentence here. " * 50)
    (tmp_path / "a.txt").write_text("Alpha sentence here. " * 50)
    _, samples = build(ctx, haystack=str(tmp_path), lengths=[300], depths=[100])
    text = demo_tokenizer.decode(samples[0].prompt_ids)
    assert "Alpha sentence" in text and "Bravo" not in text.split("Alpha")[0]


def test_missing_haystack_folder_is_a_user_error(tmp_path, ctx):
    with pytest.raises(UserError, match="does not exist"):
        build(ctx, haystack=str(tmp_path / "nope"))


def test_dataset_column_haystack(tmp_path, ctx, demo_tokenizer):
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [json.dumps({"text": f"Row {i} speaks of a quiet lantern."}) for i in range(200)]
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    _, samples = build(ctx, haystack=f"hf:{folder}:train:text", lengths=[300], depths=[50])
    assert "speaks of a quiet lantern" in demo_tokenizer.decode(samples[0].prompt_ids)
