"""lceval data retrieval: seeded, in the tasks' surface forms, and free of every evaluation needle, question, key
fact, passkey filler sentence and topic (the no-leak guarantee of lceval-mini's training data). No model needed."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from lceval.cli import run_cli
from lceval.tasks.haystack import NOISE_UNIT
from lceval.tasks.needle import presets
from lceval.tasks.topic import topic_data
from lceval.training.data import load_mix, mix_texts, source_records
from lceval.training.retrieval import RetrievalSpec, copy_pool, forbidden_strings, generate, leaks, vocabulary

ROOT = Path(__file__).resolve().parents[1]
MINI_MIXES = sorted((ROOT / "recipes" / "mini" / "data").glob("*.yaml"))


def test_the_forbidden_list_holds_the_evaluation_text():
    forbidden = forbidden_strings()
    for name in ("seed-paper", "gkamradt"):
        preset = presets()[name]
        assert preset["needle"].strip() in forbidden and preset["question"].strip() in forbidden
        assert set(preset["facts"]) <= set(forbidden)
    assert "What is the pass key? The pass key is" in forbidden and "The pass key is" in forbidden
    for sentence in ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                     "There and back again."):
        assert sentence in forbidden and sentence in NOISE_UNIT
    assert set(topic_data()["topics"]) <= set(forbidden)
    assert leaks("... the Sky is blue. ...") == ["The sky is blue."]  # case-insensitive


@pytest.mark.parametrize("mix", MINI_MIXES, ids=lambda p: p.stem)
def test_the_mini_recipes_training_data_holds_no_evaluation_text(mix):
    """Every record of each lceval-mini data mix (its generated sources as the recipe makes them, the first 3,000
    records of each) is clear of the evaluation strings."""
    sources = load_mix(mix)
    assert sources and all(s.generate is not None for s in sources)
    for source in sources:
        sample = replace(source, generate=replace(source.generate, samples=3000))
        records = source_records(sample, 0)
        assert len(records) == 3000
        text = "\n".join(mix_texts([sample], 0))
        assert leaks(text) == []


def test_the_same_seed_gives_the_same_records_and_another_seed_others():
    spec = RetrievalSpec(samples=50, copy=0.2, seed=7)
    assert list(generate(spec)) == list(generate(spec))
    assert list(generate(RetrievalSpec(samples=50, copy=0.2, seed=8))) != list(generate(spec))


def test_each_kind_asks_for_what_its_prompt_holds():
    records = list(generate(RetrievalSpec(samples=400, copy=0.15, seed=3)))
    kinds = {r["task"] for r in records}
    assert kinds == {"needle", "key", "topic", "copy"}
    copies: set[str] = set()
    for record in records:
        if record["task"] == "needle":
            user, answer = record["conversations"][-2]["content"], record["conversations"][-1]["content"]
            assert answer in user  # the answer restates the buried needle sentence
            subject = re.match(r"The (.+?) (is|was) ", answer).group(1)
            assert subject in user.rsplit("\n", 2)[-2] or subject in user[-300:]  # the question names its subject
        elif record["task"] == "key":
            key = record["completion"].strip(" .")
            assert key.isdigit() and f" {key}." in record["prompt"] and "pass key" not in record["prompt"]
        elif record["task"] == "topic":
            user, topic = record["conversations"][0]["content"], record["conversations"][1]["content"]
            first = re.search(r"USER: I would like to discuss the topic of (.+?)\.", user).group(1)
            assert first.lower() == topic.lower() and "What is the first topic we discussed?" in user
        else:
            words = record["prompt"].rstrip(".").split()
            assert record["completion"] == " " + record["prompt"] and len(words) >= 4
            copies.update(words)
    # The copied words are not a few hundred known ones: invented names, random letters and numbers too, and listed
    # words grown past where they end ("eating" after "eat"), so that a copy goes on past a piece that could end a word.
    assert any(w.isdigit() for w in copies) and any(w[0].isupper() for w in copies) and len(copies) > 500
    grown = {word + suffix for word in copy_pool() for suffix in ("ing", "ed", "er")} - set(copy_pool())
    assert len({w.lower() for w in copies} & grown) >= 3


def test_filler_sizes_follow_the_spec():
    short = [len(json.dumps(r)) for r in generate(RetrievalSpec(samples=100, min_chars=50, max_chars=100, seed=1,
                                                                  topic=0.0))]
    long = [len(json.dumps(r)) for r in generate(RetrievalSpec(samples=100, min_chars=3000, max_chars=4000, seed=1,
                                                                 topic=0.0))]
    assert max(short) < 1500 and min(long) > 3000


def test_the_command_writes_the_records_and_refuses_bad_settings(tmp_path, capsys):
    out = tmp_path / "retrieval.jsonl"
    assert run_cli(["data", "retrieval", "--output", str(out), "--samples", "30", "--seed", "4"]) == 0
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == list(generate(RetrievalSpec(samples=30, seed=4)))
    capsys.readouterr()
    for argv, words in ((["--samples", "0"], "--samples 0 must be a whole number, 1 or more"),
                        (["--copy", "-1"], "--copy -1.0 must be a number, 0 or more"),
                        (["--fillers", "poems"],
                         "--fillers 'poems' must be one of any, story, short, haystack, lookalike"),
                        (["--min-chars", "500", "--max-chars", "100"], "min_chars 500 is above max_chars 100")):
        assert run_cli(["data", "retrieval", "--output", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("error:") == 1 and "Traceback" not in err
        assert out.read_text().splitlines() == lines  # nothing already written is lost


def test_a_data_mix_names_the_generator_and_checks_its_settings(tmp_path):
    from lceval.api.errors import UserError

    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"sources": [{"generate": "retrieval", "samples": 5, "seed": 2}]}))
    (source,) = load_mix(mix)
    assert source_records(source, 0) == list(generate(RetrievalSpec(samples=5, seed=2)))
    mix.write_text(yaml.safe_dump({"sources": [{"generate": "retrieval", "sampels": 5}]}))
    with pytest.raises(UserError, match="unknown key 'sampels'"):
        load_mix(mix)
    mix.write_text(yaml.safe_dump({"sources": [{"generate": "poems"}]}))
    with pytest.raises(UserError, match="the generator is `retrieval`"):
        load_mix(mix)


def test_a_mix_digest_changes_with_what_its_records_are_made_from(tmp_path, monkeypatch):
    from lceval.training import retrieval
    from lceval.training.data import mix_digest

    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n')
    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"sources": ["a.jsonl", {"generate": "retrieval", "samples": 5, "seed": 2}]}))
    first = mix_digest(load_mix(mix), 0)
    assert mix_digest(load_mix(mix), 0) == first and mix_digest(load_mix(mix), 1) != first
    (tmp_path / "a.jsonl").write_text('{"text": "two"}\n')
    assert mix_digest(load_mix(mix), 0) != first
    mix.write_text(yaml.safe_dump({"sources": ["a.jsonl", {"generate": "retrieval", "samples": 6, "seed": 2}]}))
    second = mix_digest(load_mix(mix), 0)
    assert len({first, second}) == 2
    # a generator that draws other records for the same settings is another mix (a cached tokenizer is not reused)
    monkeypatch.setattr(retrieval, "GENERATOR_VERSION", retrieval.GENERATOR_VERSION + 1)
    assert mix_digest(load_mix(mix), 0) != second


def _needle_place(record: dict) -> float:
    """Where the asked needle starts in its prompt, as a share of the prompt's length."""
    body, answer = record["conversations"][-2]["content"], record["conversations"][-1]["content"]
    return body.index(answer) / len(body)


def test_edges_put_the_asked_needle_at_the_start_or_end_of_its_filler():
    """--edges 1: every needle stands first or last in its filler (the needle tasks' depths 0 and 100), both ends
    used; with the default (0) they stand anywhere."""
    spec = RetrievalSpec(samples=40, min_chars=3000, max_chars=4000, needle=1, key=0, topic=0, seed=5)
    at_edges = [_needle_place(r) for r in generate(replace(spec, edges=1.0))]
    assert all(place < 0.08 or place > 0.9 for place in at_edges), at_edges
    assert any(place < 0.08 for place in at_edges) and any(place > 0.9 for place in at_edges)
    anywhere = [_needle_place(r) for r in generate(spec)]
    assert sum(0.2 < place < 0.8 for place in anywhere) > len(anywhere) / 2


def test_fillers_short_buries_every_needle_and_key_in_a_few_sentences_said_over_and_over():
    """--fillers short: each needle's and key's filler repeats 3 to 6 of the short sentences (the passkey task's kind
    of filler, in other words); --fillers story never does; the default draws the style at random, so some do."""
    shorts = vocabulary()["short_sentences"]

    def repeated(record: dict) -> int:
        text = record.get("prompt") or record["conversations"][-2]["content"]
        return sum(text.count(sentence) >= 3 for sentence in shorts)

    spec = RetrievalSpec(samples=30, min_chars=2000, max_chars=3000, needle=1, key=1, topic=0, seed=3)
    assert all(3 <= repeated(r) <= 6 for r in generate(replace(spec, fillers="short")))
    assert not any(repeated(r) for r in generate(replace(spec, fillers="story")))
    mixed = [repeated(r) for r in generate(spec)]
    assert 0 < sum(n > 0 for n in mixed) < len(mixed)


def test_fillers_lookalike_repeats_sentences_about_names_a_few_letters_from_the_asked_one():
    """--fillers lookalike: around each needle and key, up to 4 sentences "The NAME is WORD." said over and over, each
    NAME the asked name with one or two of its words changed in one or two letters, never the name itself."""
    spec = RetrievalSpec(samples=30, min_chars=1500, max_chars=2500, needle=1, key=1, topic=0, seed=8,
                         fillers="lookalike")

    def near(lookalike: list[str], name: list[str]) -> bool:
        if len(lookalike) != len(name):
            return False
        changed = [(a, b) for a, b in zip(lookalike, name, strict=True) if a != b]
        return 1 <= len(changed) <= 2 and all(
            len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 2 for a, b in changed)

    shorts = " ".join(vocabulary()["short_sentences"])
    kinds = set()
    for record in generate(spec):
        text = record.get("prompt") or record["conversations"][-2]["content"]
        sentences = re.findall(r"The ([^.\n]+?) is [a-z]+\.", text)
        lookalikes = {s for s in sentences if sentences.count(s) >= 3 and f"The {s} is" not in shorts}
        assert 1 <= len(lookalikes) <= 4, lookalikes
        if "prompt" in record:
            key = record["completion"].strip(" .")
            name = re.search(rf"[Tt]he ([^.\n]+?) is {key}\.", text).group(1).split(" ")
        else:
            name = record["conversations"][-1]["content"].split(" ")[1:]
        for lookalike in lookalikes:
            assert near(lookalike.split(" "), name[:lookalike.count(" ") + 1]), (lookalike, name)
        kinds.add(record["task"])
    assert kinds == {"needle", "key"}
