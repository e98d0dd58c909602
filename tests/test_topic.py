"""Topic retrieval: LongChat's prompt verbatim, seeded cases, the three official file formats, scores, the curve."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lceval.api import registry
from lceval.api.errors import UserError
from lceval.api.prompting import encode, prompt_format
from lceval.api.task import PromptContext, Sample
from lceval.metrics.longbench import qa_f1_score
from lceval.running.config import RunConfig
from lceval.running.runner import _make_tasks
from lceval.tasks.topic import (
    PAPER_COUNTS,
    TopicOptions,
    TopicTask,
    aggregate_counts,
    generated_conversation,
    lower_first,
    topic_data,
)

FIXTURES = Path(__file__).parent / "fixtures" / "topic"
LONGCHAT = FIXTURES / "longchat"
FLAGEMBEDDING = FIXTURES / "flagembedding"
# LongChat's header and question, typed here from the research notes so that an edit of the data file shows up.
HEADER = ("Below is a record of our previous conversation on {n} different topics. You are the ASSISTANT, and I am the "
          "USER. At the beginning of each topic, the USER will say 'I would like to discuss the topic of <TOPIC>'. "
          "Memorize each <TOPIC>. At the end of the record, I will ask you to retrieve the first topic. "
          "Now the record start. ")
QUESTION = (" Now the record ends. What is the first topic we discussed? Only give me the topic name. "
            "Do not summarize yourself.")
END = "Great, this is the end of our discussion on the topic {topic}, let's talk about the next topic."
SMALL = {"counts": [1, 2, 3], "cases": 3, "min_exchanges": 1, "max_exchanges": 1}


@pytest.fixture(scope="module")
def ctx(demo_tokenizer):
    return PromptContext(demo_tokenizer, window=2048, stop_token_ids=[4], chat_template=True)


def test_defaults_are_the_seed_papers_grid():
    opts = TopicOptions.from_dict({})
    assert opts.counts == list(PAPER_COUNTS) == [5, 10, 15, 20, 25, 30, 40, 50, 60, 70]
    assert (opts.cases, opts.seed, opts.source, opts.max_new_tokens, opts.chat_template) == (50, 0, "generated", 50,
                                                                                             True)
    assert TopicOptions.from_dict({"counts": [10, 5, 10]}).counts == [5, 10]


@pytest.mark.parametrize(("options", "message"), [
    ({"source": "longeval"}, "topic.source 'longeval' must be one of"),
    ({"counts": [0, 5]}, "topic.counts"),
    ({"counts": []}, "topic.counts"),
    ({"cases": 0}, "topic.cases"),
    ({"min_exchanges": 3, "max_exchanges": 2}, "topic.min_exchanges"),
    ({"num_topics": [5]}, "unknown topic option 'num_topics'"),
])
def test_bad_options_are_one_sentence(options, message):
    with pytest.raises(UserError, match=message):
        TopicTask(options)


def test_generated_cases_are_seeded(ctx):
    first, again = TopicTask(SMALL).cases(), TopicTask(SMALL).cases()
    other = TopicTask({**SMALL, "seed": 1}).cases()
    assert [(c.prompt, c.topics) for c in first] == [(c.prompt, c.topics) for c in again]
    assert [c.topics for c in other] != [c.topics for c in first]
    assert generated_conversation("Learning to juggle", 0) != generated_conversation("Learning to juggle", 1)
    pool = set(topic_data()["topics"])
    for case in first:
        assert len(case.topics) == len(set(case.topics)) == case.count and set(case.topics) <= pool


def test_a_case_keeps_its_prompt_when_the_grid_grows():
    small = {c.id: c.prompt for c in TopicTask({**SMALL, "counts": [2], "cases": 2}).cases()}
    large = {c.id: c.prompt for c in TopicTask({**SMALL, "counts": [1, 2, 3], "cases": 5}).cases()}
    assert list(small) == ["2-000", "2-001"]
    assert all(large[case_id] == prompt for case_id, prompt in small.items())


def test_prompt_is_longchats_header_conversations_and_question_with_the_first_topic_first():
    for case in TopicTask({**SMALL, "counts": [4], "cases": 2}).cases():
        header = HEADER.format(n=4)
        assert case.prompt.startswith(header) and case.prompt.endswith(QUESTION)
        record = case.prompt[len(header): -len(QUESTION)]
        for topic in case.topics:  # each conversation opens and closes on its topic, in the order of `topics`
            opening = f"USER: I would like to discuss the topic of {lower_first(topic)}."
            closing = "USER: " + END.format(topic=topic)
            assert record.startswith(opening), record[:120]
            record = record[record.index(closing) + len(closing):]
        assert record == ""


def test_generated_conversation_has_longchats_shape_and_length():
    topics = topic_data()["topics"]
    assert len(topics) >= 100 and len(set(topics)) == len(topics)
    lowered = [t.lower() for t in topics]
    assert not [(a, b) for a in lowered for b in lowered if a != b and a in b]  # a wrong topic never scores
    words = []
    for topic in topics[:40]:
        text = generated_conversation(topic, 0)
        turns = text.split(" \n ")
        assert [t.split(": ", 1)[0] for t in turns] == ["USER", "ASSISTANT"] * (len(turns) // 2) + ["USER"]
        assert turns[-1] == "USER: " + END.format(topic=topic)
        words.append(len(text.split()))
    assert 300 <= min(words) and max(words) <= 600  # LongChat's are 330-530 words: realistic token counts


def test_samples_are_one_chat_turn_with_counts_and_token_lengths(ctx, demo_tokenizer):
    task = TopicTask(SMALL)
    samples = task.build_samples(ctx)
    turn = prompt_format(demo_tokenizer, True)
    assert [s.id for s in samples] == [f"{n}-{i:03d}" for n in (1, 2, 3) for i in range(3)]
    for sample, case in zip(samples, task.cases(), strict=True):
        assert sample.prompt_ids == turn.wrap(encode(demo_tokenizer, case.prompt))
        assert sample.meta["num_topics"] == case.count and sample.meta["prompt_tokens"] == len(sample.prompt_ids)
        assert sample.target == {"topic": case.topics[0], "topics": list(case.topics)}
        assert sample.max_new_tokens == 50
    no_template = TopicTask({**SMALL, "chat_template": False}).build_samples(ctx)
    assert no_template[0].prompt_ids[0] == demo_tokenizer.bos_token_id
    assert len(no_template[0].prompt_ids) == len(samples[0].prompt_ids) - turn.overhead + 1


def test_a_count_longer_than_the_window_is_refused_naming_the_counts_that_fit(demo_tokenizer):
    small_window = PromptContext(demo_tokenizer, window=1200, stop_token_ids=[4], chat_template=True)
    with pytest.raises(UserError, match=r"cases with 2 topics take up to 1,\d{3} prompt tokens \(\+50 answer "
                                        r"tokens\), more than the window of 1,200; .* -o topic.counts=\[1\]"):
        TopicTask(SMALL).build_samples(small_window)
    with pytest.raises(UserError, match="no count fits"):
        TopicTask({**SMALL, "counts": [2, 3]}).build_samples(small_window)
    with pytest.raises(UserError, match="leaves no room"):
        TopicTask({"max_new_tokens": 64}).check_window(64)


@pytest.mark.parametrize(("output", "accuracy", "f1"), [
    ("The history of lighthouse keeping", 1.0, 1.0),
    ("  the HISTORY of Lighthouse Keeping. ", 1.0, 1.0),
    ("The first topic was the history of lighthouse keeping.", 1.0, 0.7273),
    ("Lighthouse keeping", 0.0, 0.6667),
    ("History of lighthouse-keeping", 0.0, 0.5714),
    ("Learning to juggle", 0.0, 0.0),
    ("", 0.0, 0.0),
])
def test_score_is_case_insensitive_substring_and_rounded_token_f1(output, accuracy, f1):
    gold = "The history of lighthouse keeping"
    scores = TopicTask({}).score(Sample("5-000", [], 50, {"topic": gold, "topics": [gold]}), output)
    assert scores == {"accuracy": accuracy, "f1": f1}
    assert scores["f1"] == round(qa_f1_score(output, gold), 4)


def test_longchat_test_cases_are_read_as_given(ctx):
    cases = TopicTask({"source": "longchat", "data_dir": str(LONGCHAT), "counts": [2, 3]}).cases()
    rows = {n: [json.loads(line) for line in (LONGCHAT / "testcases" / f"{n}_topics.jsonl").read_text().splitlines()]
            for n in (2, 3)}
    assert [c.id for c in cases] == ["2-000", "2-001", "2-002", "3-000", "3-001"]
    for case in cases:
        row = rows[case.count][case.index]
        assert case.prompt == row["prompt"] and list(case.topics) == row["topics"]
    limited = TopicTask({"source": "longchat", "data_dir": str(LONGCHAT), "counts": [2], "cases": 2})
    assert [c.id for c in limited.cases()] == ["2-000", "2-001"]
    sample = limited.build_samples(ctx)[1]
    assert sample.meta["line"] == 2 and sample.meta["test_id"] == rows[2][1]["test_id"]
    assert sample.target["topic"] == rows[2][1]["topics"][0]


def test_an_empty_test_case_file_is_refused(tmp_path):
    (tmp_path / "testcases").mkdir()
    (tmp_path / "testcases" / "5_topics.jsonl").write_text("\n")
    with pytest.raises(UserError, match="5_topics.jsonl holds no test cases"):
        TopicTask({"source": "longchat", "data_dir": str(tmp_path), "counts": [5]}).cases()


def test_longchat_conversations_are_drawn_with_the_seed():
    lines = (LONGCHAT / "conversations.jsonl").read_text().splitlines()
    conversations = {row["topic"]: row["conversation"] for row in map(json.loads, lines)}
    options = {"source": "longchat-conversations", "data_dir": str(LONGCHAT), "counts": [2, 3], "cases": 4}
    cases = TopicTask(options).cases()
    assert len(cases) == 8 and cases == TopicTask(options).cases()
    assert [c.topics for c in TopicTask({**options, "seed": 5}).cases()] != [c.topics for c in cases]
    for case in cases:
        assert len(set(case.topics)) == case.count
        expected = HEADER.format(n=case.count) + "".join(conversations[t] for t in case.topics) + QUESTION
        assert case.prompt == expected
    with pytest.raises(UserError, match="holds 4 conversations, fewer than the 5 topics"):
        TopicTask({**options, "counts": [5]}).cases()


def test_flagembedding_file_is_filtered_to_the_counts_and_joined_with_a_space(tmp_path):
    path = FLAGEMBEDDING / "longeval" / "topic_retrieval.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    cases = TopicTask({"source": "flagembedding", "data_dir": str(FLAGEMBEDDING), "counts": [2, 3]}).cases()
    expected = [r for r in rows if r["num_topics"] in (2, 3)]
    expected.sort(key=lambda r: r["num_topics"])
    assert [c.id for c in cases] == ["2-000", "2-001", "3-000", "3-001"]
    for case, row in zip(cases, expected, strict=True):
        assert case.prompt == row["context"] + " " + row["question"] and case.topics[0] == row["topics"][0]
    assert cases[0].prompt.startswith(HEADER.format(n=2)) and cases[0].prompt.endswith(QUESTION)  # LongChat's text
    (tmp_path / "topic_retrieval.json").write_text(json.dumps(rows, indent=1))  # a JSON array reads the same
    as_array = TopicTask({"source": "flagembedding", "data_dir": str(tmp_path), "counts": [2, 3]}).cases()
    assert [(c.prompt, c.topics) for c in as_array] == [(c.prompt, c.topics) for c in cases]
    with pytest.raises(UserError, match=r"has no case with 7 topics \(its counts: 2, 3, 4\)"):
        TopicTask({"source": "flagembedding", "data_dir": str(FLAGEMBEDDING), "counts": [2, 7]}).cases()


@pytest.mark.parametrize(("bad_line", "message"), [
    ("{not json", "line 4 is not valid JSON"),
    ('["a list"]', "line 4 is not a JSON object"),
    ('{"test_id": 3, "prompt": "x"}', "line 4 lacks the field 'topics'"),
    ('{"test_id": 3, "prompt": "x", "topics": []}', "line 4 has a field 'topics' that is not a non-empty list"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, bad_line, message):
    shutil.copy(LONGCHAT / "testcases" / "2_topics.jsonl", tmp_path / "2_topics.jsonl")
    with (tmp_path / "2_topics.jsonl").open("a") as handle:
        handle.write(bad_line + "\n")
    with pytest.raises(UserError, match=message) as caught:
        TopicTask({"source": "longchat", "data_dir": str(tmp_path), "counts": [2]}).cases()
    assert str(tmp_path / "2_topics.jsonl") in str(caught.value)


def test_a_missing_file_or_folder_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match=f"5_topics.jsonl is not in {tmp_path}"):
        TopicTask({"source": "longchat", "data_dir": str(tmp_path), "counts": [5]}).cases()
    with pytest.raises(UserError, match="topic_retrieval.json is not in"):
        TopicTask({"source": "flagembedding", "data_dir": str(tmp_path)}).cases()
    with pytest.raises(UserError, match="reads conversations.jsonl from a folder; pass --data-dir DIR"):
        TopicTask({"source": "longchat-conversations"}).cases()


def test_data_dir_flag_reaches_the_task_but_not_the_generator():
    assert "topic" in registry.tasks.names() and registry.tasks.get("topic").reads_data_dir
    cfg = RunConfig(tasks=["topic"], data_dir=str(LONGCHAT), task_options={"topic": {"source": "longchat"}})
    assert _make_tasks(cfg, named=None)[0].opts.data_dir == str(LONGCHAT)
    generated = _make_tasks(RunConfig(tasks=["topic"], data_dir=str(LONGCHAT)), named=None)[0]
    assert generated.settings()["data_dir"] is None  # a --data-dir meant for another task changes nothing here


def record(count: int, tokens: int, accuracy: float, f1: float) -> dict:
    return {"meta": {"num_topics": count, "prompt_tokens": tokens}, "scores": {"accuracy": accuracy, "f1": f1}}


def test_aggregation_per_count_and_against_mean_prompt_tokens():
    records = [record(10, 6000, 1.0, 1.0), record(10, 6101, 0.0, 0.5), record(5, 3000, 1.0, 0.8),
               record(5, 3002, 1.0, 0.6), record(5, 3004, 0.0, 0.1)]
    result = aggregate_counts(records)
    assert result["n_samples"] == 5
    assert result["metrics"] == pytest.approx({"accuracy": 0.6, "f1": 0.6})
    assert result["mean_prompt_tokens"] == pytest.approx(4221.4)
    assert result["by_count"] == {"5": pytest.approx({"accuracy": 2 / 3, "f1": 0.5}),
                                  "10": pytest.approx({"accuracy": 0.5, "f1": 0.75})}
    assert list(result["by_length"]) == ["3002", "6050"]  # FlagEmbedding's key: int(mean prompt length)
    assert result["curve"] == [
        {"num_topics": 5, "n": 3, "mean_prompt_tokens": 3002.0, **result["by_count"]["5"]},
        {"num_topics": 10, "n": 2, "mean_prompt_tokens": 6050.5, **result["by_count"]["10"]},
    ]


@pytest.mark.slow
def test_demo_run_writes_samples_results_curve_and_csv(tmp_path, cli_env, lceval_cmd):
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "hf", "--tasks", "topic",
                           "--out", str(tmp_path), "--run-id", "t"], env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "t"
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"{n}-{i:03d}" for n in (1, 2, 3) for i in range(4)]
    assert all(set(r["scores"]) == {"accuracy", "f1"} and r["meta"]["prompt_tokens"] == r["prompt_tokens"]
               for r in records)
    results = json.loads((run_dir / "results.json").read_text())["tasks"]["topic"]
    assert results["n_samples"] == results["n_expected"] == 12 and list(results["by_count"]) == ["1", "2", "3"]
    tokens = [p["mean_prompt_tokens"] for p in results["curve"]]
    assert [p["num_topics"] for p in results["curve"]] == [1, 2, 3] and tokens == sorted(tokens)
    assert (run_dir / "topic_curve.png").read_bytes()[:4] == b"\x89PNG"
    table = (run_dir / "topic_curve.csv").read_text().splitlines()
    assert table[0] == "num_topics,n,mean_prompt_tokens,accuracy,f1" and len(table) == 4
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {"topic_curve.png", "topic_curve.csv"}
    assert manifest["tasks"]["topic"]["settings"]["counts"] == [1, 2, 3]
