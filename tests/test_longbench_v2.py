"""LongBench v2 on the bundled samples: the official prompt, truncation, answer extraction, result.py's table."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from lceval.api.errors import UserError
from lceval.api.prompting import bos_ids, encode, middle_truncate, prompt_format
from lceval.api.task import PromptContext
from lceval.running.config import RunConfig
from lceval.running.runner import execute
from lceval.tasks import longbench_v2
from lceval.tasks.benchmark_data import spec

TEMPLATE = spec("longbench_meta")["v2"]["templates"]["0shot"]


@pytest.fixture(scope="module")
def ctx(demo_tokenizer):
    return PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)


@pytest.fixture(scope="module")
def items():
    return longbench_v2.LongBenchV2Task()._items()


def content_of(sample, tokenizer, chat=True):
    turn = prompt_format(tokenizer, chat)
    assert sample.prompt_ids[: len(turn.prefix_ids)] == list(turn.prefix_ids)
    assert sample.prompt_ids[len(sample.prompt_ids) - len(turn.suffix_ids):] == list(turn.suffix_ids)
    return sample.prompt_ids[len(turn.prefix_ids): len(sample.prompt_ids) - len(turn.suffix_ids)]


def test_bundled_items_cover_both_difficulties_and_every_length(items):
    assert len(items) == 4
    assert {i["difficulty"] for i in items} == {"easy", "hard"}
    assert {i["length"] for i in items} == {"short", "medium", "long"}
    assert all(150 <= len(i["context"].split()) <= 400 for i in items)


def test_template_is_filled_with_the_stripped_fields(items, ctx, demo_tokenizer):
    item = items[0]
    assert item["question"] != item["question"].strip() and item["choice_D"].startswith("\t")
    expected = (
        "Please read the following text and answer the question below.\n\n<text>\n"
        + item["context"].strip()
        + "\n</text>\n\nWhat is the correct answer to this question: Why did Ansel Varro stop lighting the upper "
        "lamp of the Corrow Point lighthouse?\nChoices:\n"
        "(A) The harbour board ordered the lighthouse to be closed.\n"
        "(B) A new beacon on the breakwater made the upper lamp mislead ships.\n"
        "(C) He could no longer climb the stairs after his fall.\n"
        "(D) The oil for the upper lamp was no longer delivered.\n\n"
        'Format your response as follows: "The correct answer is (insert answer here)".'
    )
    assert longbench_v2.fill_template(TEMPLATE, item) == expected
    sample = longbench_v2.LongBenchV2Task().build_samples(ctx)[0]
    assert sample.id == item["_id"] and sample.max_new_tokens == 128 and sample.target == {"answer": "B"}
    assert sample.meta == {"difficulty": "easy", "length": "short", "domain": "Single-Document QA",
                           "truncated": False, "prompt_tokens": len(sample.prompt_ids)}
    assert content_of(sample, demo_tokenizer) == encode(demo_tokenizer, expected)


def test_replacements_run_in_the_official_order():
    # pred.py chains str.replace: a later placeholder inside an earlier field is replaced as well.
    item = {"context": " see $Q$ and $C_D$ ", "question": "q?", "choice_A": "a", "choice_B": "b", "choice_C": "c",
            "choice_D": " d "}
    filled = longbench_v2.fill_template("[$DOC$|$C_A$]", item)
    assert filled == "[see q? and d|a]"
    assert longbench_v2.fill_template("[$Q$]", {**item, "question": "$DOC$"}) == "[$DOC$]"


def test_no_chat_template_gives_bos_and_the_raw_prompt(ctx, demo_tokenizer, items):
    sample = longbench_v2.LongBenchV2Task({"chat_template": False}).build_samples(ctx)[1]
    bos = bos_ids(demo_tokenizer)
    assert sample.prompt_ids == bos + encode(demo_tokenizer, longbench_v2.fill_template(TEMPLATE, items[1]))


@pytest.mark.parametrize("limit", [300, 301])
def test_truncation_is_the_official_slicing_over_ids_with_bos(limit, ctx, demo_tokenizer, items):
    bos = bos_ids(demo_tokenizer)
    samples = longbench_v2.LongBenchV2Task({"max_length": limit}).build_samples(ctx)
    for sample, item in zip(samples, items, strict=True):
        ids = bos + encode(demo_tokenizer, longbench_v2.fill_template(TEMPLATE, item))
        assert len(ids) > limit and sample.meta["truncated"]
        official = ids[: limit // 2] + ids[-limit // 2:]  # pred.py; the tail is ceil(limit / 2) tokens
        assert bos + content_of(sample, demo_tokenizer) == official
        assert len(official) == limit


def test_truncation_helper_edges():
    content = list(range(100))
    assert middle_truncate(content, 101, 1, tail_rounds_up=True) == content  # BOS + 100 fits
    assert middle_truncate(content, 100, 1, tail_rounds_up=True) == content[:49] + content[-50:]
    assert middle_truncate(content, 11, 1, tail_rounds_up=True) == content[:4] + content[-6:]
    assert middle_truncate(content, 11, 0, tail_rounds_up=True) == content[:5] + content[-6:]


@pytest.mark.parametrize("response, letter", [
    ("The correct answer is (C)", "C"),
    ("**The correct answer is (B)**", "B"),
    ("The correct answer is **(D)**.", "D"),
    ("The correct answer is A, because the text says so.", "A"),
    ("I think the correct answer is (B). The correct answer is (C)", "C"),  # case-sensitive, first match wins
    ("The correct answer is B. Or rather, The correct answer is (A).", "A"),  # the parenthesised form first
    ("The correct answer is (E)", None),
    ("The correct answer is: (A)", None),
    ("Answer: (A)", None),
    ("", None),
])
def test_answer_extraction_follows_pred_py(response, letter):
    assert longbench_v2.extract_answer(response) == letter


def test_score_is_one_or_zero(ctx):
    sample = longbench_v2.LongBenchV2Task().build_samples(ctx)[0]  # answer B
    task = longbench_v2.LongBenchV2Task()
    assert task.score(sample, "*The correct answer is (B)*") == {"correct": 1.0}
    assert task.score(sample, "The correct answer is B") == {"correct": 1.0}
    assert task.score(sample, "The correct answer is (A)") == {"correct": 0.0}
    assert task.score(sample, "B") == {"correct": 0.0}  # nothing extracted: wrong


def record(output, answer, difficulty, length):
    acc = 1.0 if longbench_v2.extract_answer(output) == answer else 0.0
    return {"output": output, "scores": {"correct": acc}, "meta": {"difficulty": difficulty, "length": length}}


RECORDS = [
    record("The correct answer is (A)", "A", "easy", "short"),
    record("The correct answer is (B)", "A", "easy", "short"),
    record("no idea", "A", "easy", "medium"),
    record("The correct answer is C", "C", "hard", "long"),
    record("The correct answer is (D)", "D", "hard", "long"),
    record("The correct answer is (D)", "A", "hard", "long"),
]


def test_aggregate_is_result_py_rounded_to_one_decimal():
    result = longbench_v2.LongBenchV2Task().aggregate(RECORDS)
    assert result["n_samples"] == 6 and result["n_no_answer"] == 1
    assert result["metrics"] == {"overall": 50.0}
    assert result["by_difficulty"] == {"easy": 33.3, "hard": 66.7}
    assert result["by_length_bucket"] == {"short": 50.0, "medium": 0.0, "long": 66.7}
    assert "compensated" not in result


def test_compensated_counts_no_answer_as_a_quarter():
    result = longbench_v2.LongBenchV2Task({"compensated": True}).aggregate(RECORDS)
    assert result["compensated"] is True
    assert result["metrics"] == {"overall": round(100 * 3.25 / 6, 1)} == {"overall": 54.2}
    assert result["by_difficulty"] == {"easy": 41.7, "hard": 66.7}
    assert result["by_length_bucket"] == {"short": 50.0, "medium": 25.0, "long": 66.7}


def test_summarize_gives_none_for_an_empty_subset_and_python_rounding():
    table = longbench_v2.summarize([(1.0, "hard", "long")] + [(0.0, "hard", "long")] * 7)
    assert table["metrics"]["overall"] == 12.5 and table["by_difficulty"] == {"easy": None, "hard": 12.5}
    assert table["by_length_bucket"] == {"short": None, "medium": None, "long": 12.5}
    assert longbench_v2.summarize([])["metrics"] == {"overall": None}
    assert longbench_v2.summarize([(1.0, "easy", "short"), (0.0, "easy", "short"), (0.0, "easy", "short")]
                                  )["metrics"]["overall"] == 33.3


def test_options_are_checked():
    with pytest.raises(UserError, match="unknown longbench-v2 option 'maxlen'"):
        longbench_v2.LongBenchV2Task({"maxlen": 10})
    with pytest.raises(UserError, match="not implemented yet"):
        longbench_v2.LongBenchV2Task({"cot": True})
    with pytest.raises(UserError, match="does not fit the window"):
        longbench_v2.LongBenchV2Task({"max_length": 2000}).check_window(2048)
    longbench_v2.LongBenchV2Task().check_window(2048)


def test_data_dir_reads_the_official_data_json(tmp_path, ctx, items):
    local = [{**item, "_id": f"local-{n}"} for n, item in enumerate(items[:2])]
    (tmp_path / "data.json").write_text(json.dumps(local))
    samples = longbench_v2.LongBenchV2Task({"data_dir": str(tmp_path)}).build_samples(ctx)
    assert [s.id for s in samples] == ["local-0", "local-1"]
    (tmp_path / "data.json").write_text(json.dumps([{k: v for k, v in local[0].items() if k != "answer"}]))
    with pytest.raises(UserError, match="item 0 lacks the field 'answer'"):
        longbench_v2.LongBenchV2Task({"data_dir": str(tmp_path)}).build_samples(ctx)
    with pytest.raises(UserError, match="data.json is not in"):
        longbench_v2.LongBenchV2Task({"data_dir": str(tmp_path / "missing")}).build_samples(ctx)


def test_hub_path_reads_data_json_from_the_hub_cache(tmp_path, ctx, items, monkeypatch):
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--THUDM--LongBench-v2"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "data.json").write_text(json.dumps(items[:1]))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    task = longbench_v2.LongBenchV2Task({"hub": True})
    assert [s.id for s in task.build_samples(ctx)] == [items[0]["_id"]]
    assert task.revision == commit
    assert task.aggregate([])["data_revision"] == commit


def test_runs_end_to_end_on_hf(tmp_path, demo_model):
    cfg = RunConfig(model="lceval-demo", tasks=["longbench-v2"], backend="hf", out=str(tmp_path), run_id="v2",
                    task_options={"longbench-v2": {"compensated": True}})
    run_dir = execute(cfg, Console(stderr=True))
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    results = json.loads((run_dir / "results.json").read_text())["tasks"]["longbench-v2"]
    assert len(records) == results["n_samples"] == results["n_expected"] == 4
    assert all(r["output_tokens"] <= 128 and set(r["scores"]) == {"correct"} for r in records)
    for r in records:
        assert r["scores"]["correct"] == float(longbench_v2.extract_answer(r["output"]) == r["target"]["answer"])
    judged = [(0.25 if longbench_v2.extract_answer(r["output"]) is None else r["scores"]["correct"],
               r["meta"]["difficulty"], r["meta"]["length"]) for r in records]
    assert {k: results[k] for k in ("metrics", "by_difficulty", "by_length_bucket")} == longbench_v2.summarize(judged)
    assert set(results["by_difficulty"]) == {"easy", "hard"}
    assert set(results["by_length_bucket"]) == {"short", "medium", "long"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tasks"]["longbench-v2"]["settings"]["compensated"] is True
