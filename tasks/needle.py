"""Needle in a haystack, as gkamradt's original test and the seed paper ran it, built exactly in tokens.

Each cell (context length x depth) is one prompt of at most `length` tokens, chat template included: the
haystack is cut to whole sentences within what the description, needle, question and template leave (a
filler cut mid-sentence before the needle or the question makes models continue the broken sentence instead of
answering), and the needle goes in at the depth, moved back to the start of the sentence it would have split.
The nominal and the real length, and the nominal and the realised depth, are all recorded.

Scores: `key_facts`, the pass/fail one (every key fact of the needle, declared per preset as `facts`, appears in
the answer, case-insensitively: a paraphrase counts as found and a wrong fact as missed, as RULER scores by its
keys); ROUGE-L F1 against the needle (the seed paper's); and `exact_phrase`, the strict secondary check that the
preset's whole answer phrase appears verbatim (case-insensitively).

Each length also has a no-needle control (`control-<length>`): the same haystack cut, description, question,
target and scores with the needle left out. A model that "finds" the absent needle answers from memory, and the
heatmap then measures memory, not retrieval; the controls are aggregated on their own (`control`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from lceval.api.errors import UserError
from lceval.api.prompting import encode
from lceval.api.registry import tasks
from lceval.api.run_folder import is_control
from lceval.api.schema import Manifest, Results
from lceval.api.settings import Count, Percent, parse_options, settings_class
from lceval.api.task import Axis, Metric, PromptContext, Sample, Task
from lceval.metrics.text import all_found, rouge_l_f1, substring_match
from lceval.tasks.benchmark_data import data_yaml
from lceval.tasks.haystack import GENERATED, haystack_text

METRICS = ("key_facts", "rouge_l_f1", "exact_phrase")
# Sentences of the prompt shown before and after the needle in a sample's excerpt.
EXCERPT_SENTENCES = 3
# A sentence ends at . ! or ?, maybe followed by closing quotes or brackets, then whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(\s+|$)")


@cache
def presets() -> dict[str, dict[str, Any]]:
    return data_yaml("needle")


@cache
def judge_rubric() -> dict[str, Any]:
    """gkamradt's judge prompt: system message, 1-10 criteria and LangChain's template (data/needle_judge.yaml)."""
    return data_yaml("needle_judge")


@settings_class
class NeedleOptions:
    """-o needle.KEY=VALUE (and passkey.KEY): each field's type is its range (lceval.api.settings)."""

    preset: str = "seed-paper"
    lengths: Annotated[list[Count], Field(min_length=1)] | None = None
    min_length: Count | None = None
    max_length: Count | None = None
    num_lengths: Count = 10
    depths: Annotated[list[Percent], Field(min_length=1)] | None = None
    num_depths: Count = 10
    min_depth: Percent = 0.0
    max_depth: Percent = 100.0
    depth_spacing: Literal["linear", "sigmoid"] = "linear"  # sigmoid: gkamradt's spacing, dense near both ends
    depth_rounding: Literal["floor", "round", "none"] = "round"  # applied to linear depths
    haystack: str = GENERATED  # 'generated', a folder of .txt files, or hf:NAME_OR_PATH:SPLIT:COLUMN
    haystack_seed: int = 0
    description: str = ""
    needle: str = ""
    question: str = ""
    answer: str = ""
    facts: list[str] | None = None  # what an answer must hold to count as found (key_facts); {key} for passkeys
    system: str | None = None
    chat_template: bool = True
    max_new_tokens: Count = 50
    training_length: Count | None = None
    # One extra prompt per length without the needle (same cut, question, target and scores): a model that passes
    # it answers from memory, not from the context.
    control: bool = True
    key_seed: int = 0  # passkey: seed of the 5-digit key drawn for each cell ({key} in needle and answer)
    judge_url: str | None = None  # an OpenAI-compatible server that rates each answer with gkamradt's 1-10 rubric
    judge_model: str | None = None  # default: the one model the judge server serves
    judge_api_key_env: str | None = None  # environment variable holding the judge's API key (default OPENAI_API_KEY)

    @classmethod
    def from_dict(cls, options: dict[str, Any], task: str = "needle") -> NeedleOptions:
        name = options.get("preset", cls.preset)
        if not isinstance(name, str) or name not in presets():
            raise UserError(f"unknown {task} preset {name!r}; presets: {', '.join(presets())}.")
        merged = {**presets()[name], **options}
        if ("needle" in options or "answer" in options) and "facts" not in options:
            # The preset's facts belong to the preset's needle: a new needle needs its own.
            if not options.get("answer"):
                raise UserError(f"a custom {task}.needle needs {task}.facts (the key words an answer must hold to "
                                f"count as found, e.g. [Dolores Park, hamburg]) or {task}.answer.")
            merged["facts"] = [options["answer"]]
        opts = parse_options(cls, merged, task)
        if not opts.needle or not opts.question:
            raise UserError(f"{task}.needle and {task}.question must not be empty.")
        if not opts.facts or not all(isinstance(f, str) and f.strip() for f in opts.facts):
            raise UserError(f"{task}.facts {opts.facts!r} must be a list of non-empty strings, e.g. [Dolores Park].")
        return opts


def length_grid(opts: NeedleOptions) -> list[int]:
    """Explicit lengths, or round(linspace(min, max, num)) as in the original test."""
    if opts.lengths:
        return sorted({int(x) for x in opts.lengths})
    if opts.min_length is None or opts.max_length is None:
        raise UserError("give needle.lengths, or needle.min_length and needle.max_length.")
    grid = np.round(np.linspace(opts.min_length, opts.max_length, opts.num_lengths)).astype(int)
    return sorted({int(x) for x in grid})


def depth_grid(opts: NeedleOptions) -> list[float]:
    """Depth percents: explicit, linear (rounded as the preset says) or gkamradt's sigmoid spacing."""
    if opts.depths is not None:
        values = [float(x) for x in opts.depths]
    else:
        xs = np.linspace(opts.min_depth, opts.max_depth, opts.num_depths)
        if opts.depth_spacing == "sigmoid":
            values = [float(x) if x in (0, 100) else round(100 / (1 + math.exp(0.1 * (x - 50))), 3) for x in xs]
        elif opts.depth_rounding == "floor":
            values = [float(int(x)) for x in xs]
        elif opts.depth_rounding == "round":
            values = [float(x) for x in np.round(xs).astype(int)]
        else:
            values = [round(float(x), 3) for x in xs]
    return sorted(set(values))


def sentence_starts(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """Token indices where a sentence starts: the previous token ends after a sentence's end mark."""
    gap = np.zeros(len(text) + 1, dtype=bool)
    for match in _SENTENCE_END.finditer(text):
        gap[match.start(1) : match.end(1) + 1] = True
    starts = [0]
    for i in range(1, len(offsets)):
        if gap[offsets[i - 1][1]]:
            starts.append(i)
    return starts


def insertion_point(budget: int, depth: float, starts: list[int]) -> int:
    """Where the needle goes in a context of `budget` tokens: the sentence start at or before the depth."""
    if depth >= 100:
        return budget
    target = int(budget * depth / 100)
    return starts[bisect.bisect_right(starts, target) - 1]


def whole_sentences(starts: list[int], budget: int) -> tuple[list[int], int]:
    """The sentence starts of a context of at most `budget` haystack tokens, and its end (the context is
    haystack[:end]): where the last sentence that fits ends, or the budget where no sentence mark falls within it."""
    whole = starts[: bisect.bisect_right(starts, budget)]
    return whole, whole[-1] if whole[-1] > 0 else budget


def cell_id(length: int, depth: float) -> str:
    return f"L{length}-D{depth:g}"


def control_id(length: int) -> str:
    return f"control-{length}"


@tasks.register("needle")
class NeedleTask(Task):
    """Needle in a haystack: length x depth grid, ROUGE-L and key-answer substring scores, heatmaps."""

    name = "needle"
    version = "3"  # 3: a no-needle control per length
    options_class = NeedleOptions
    description = "Needle in a haystack over a length x depth grid (seed paper and gkamradt presets), with heatmaps."
    metrics = (Metric("key_facts", "Needle's key facts found", pass_fail=True),
               Metric("rouge_l_f1", "ROUGE-L F1 vs the needle"),
               Metric("exact_phrase", "Whole answer phrase found (strict)", pass_fail=True),
               Metric("judge", "Judge's rating / 10 (with needle.judge_url)"))
    axes = (Axis("length", "length"),)
    # Where the haystack and the judge live, and how the heatmap marks the training length.
    neutral_settings = frozenset({"haystack", "training_length", "judge_url", "judge_api_key_env"})

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        # The scores of this run: every declared metric but the judge's, which needs a judge.
        self.scored = tuple(m.name for m in self.metrics if m.name != "judge")
        self.lengths = length_grid(self.opts)
        self.depths = depth_grid(self.opts)
        self._judge = None
        if self.opts.judge_url:
            from lceval.tasks.judge import Judge

            self._judge = Judge(self.opts.judge_url, self.opts.judge_model, self.opts.judge_api_key_env,
                                option=f"{self.name}.judge")
            self.scored = (*self.scored, "judge")

    def settings(self) -> dict[str, Any]:
        resolved = asdict(self.opts)
        resolved.update(lengths=self.lengths, depths=self.depths)
        return resolved

    def check_window(self, window: int) -> None:
        longest = self.lengths[-1]
        if longest + self.opts.max_new_tokens > window:
            raise UserError(f"{self.name} length {longest} (+{self.opts.max_new_tokens} answer tokens) does not fit "
                            f"the window of {window} tokens; drop it from the lengths or raise --max-length.")

    # The last tokens of a text may change when the text goes on (a word or sentence cut short tokenizes
    # otherwise); tokens this many before its end do not, so two texts that both go on this far past their first
    # n tokens share those n tokens.
    SETTLED_TOKENS = 512
    PROBE_CHARS = 50_000  # at most: a piece of haystack that tells how many characters a token takes

    def _tokenized(self, tokenizer, n_chars: int) -> tuple[str, list[int], list[tuple[int, int]]]:
        text = haystack_text(self.opts.haystack, n_chars, self.opts.haystack_seed)
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        except NotImplementedError as err:
            raise UserError("the needle task needs a fast tokenizer (tokenizer.json) to find sentences.") from err
        return text, enc["input_ids"], enc["offset_mapping"]

    def _haystack(self, tokenizer, n_tokens: int) -> tuple[list[int], list[int]]:
        """At least `n_tokens` haystack ids, and the sentence starts among them (up to and including n_tokens).

        They are the first n_tokens ids of the first of the haystack texts of c, 2c, 4c, ... characters (c = 6 a
        token, at least 2000) that holds more than n_tokens tokens. Tokenizing those texts in turn, each whole,
        cost up to 3.6 times the text needed (tokens of 25 characters); instead one text a little longer than
        needed is tokenized, and its tokens' ends count the tokens each of those texts holds. Only a text whose
        count falls within SETTLED_TOKENS of n_tokens is tokenized itself, and where it is the first long enough
        its ids are used.
        """
        settled = self.SETTLED_TOKENS
        first = max(n_tokens * 6, 2000)
        text, ids, offsets = self._tokenized(tokenizer, min(first, max(first // 8, 8000), self.PROBE_CHARS))
        while len(ids) <= n_tokens + settled:
            # The characters a token takes, from what was tokenized, with room for its error (a short piece: more).
            cushion = 1 + max(0.01, 1.5 / math.sqrt(max(len(ids), 1)))
            needed = int((n_tokens + settled) * len(text) / max(len(ids), 1) * cushion) + 1000
            text, ids, offsets = self._tokenized(tokenizer, max(needed, len(text) + len(text) // 8 + 1))
        ends: list[int] = []
        size = first
        while True:
            # A haystack text has at least the characters asked for; one as long as this one holds all of it, and
            # this one goes on well past n_tokens.
            if size >= len(text):
                break
            chars = len(haystack_text(self.opts.haystack, size, self.opts.haystack_seed))
            if chars >= len(text):
                break
            ends = ends or list(itertools.accumulate((end for _, end in offsets), max))
            held = bisect.bisect_right(ends, chars)  # the tokens of this text within that one
            if held > n_tokens + settled:
                break
            if held >= n_tokens - settled:  # too close to tell: tokenize that text itself
                exact = self._tokenized(tokenizer, size)
                if len(exact[1]) > n_tokens:
                    text, ids, offsets = exact
                    break
            size *= 2
        starts = sentence_starts(text, offsets[: n_tokens + 1])
        return list(ids[:n_tokens]), [s for s in starts if s <= n_tokens]

    def cell_needle(self, length: int, depth: float) -> dict[str, Any]:
        """The needle, its answer phrase and key facts in one cell (the same everywhere, unless they hold a {key})."""
        return {"needle": self.opts.needle, "answer": self.opts.answer, "facts": list(self.opts.facts)}

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        opts = self.opts
        turn = ctx.user_turn(opts.system, chat=opts.chat_template)
        tok = ctx.tokenizer
        description, question = (encode(tok, t) if t else [] for t in (opts.description, opts.question))
        cells = {(n, d): self.cell_needle(n, d) for n in self.lengths for d in self.depths}
        needles = {target["needle"]: encode(tok, target["needle"]) for target in cells.values()}
        fixed = turn.overhead + len(description) + len(question)
        longest_needle = max(len(ids) for ids in needles.values())
        if self.lengths[0] <= fixed + longest_needle:
            raise UserError(
                f"{self.name} length {self.lengths[0]} is too short: template, description, needle and question "
                f"alone take {fixed + longest_needle} tokens; use lengths above {fixed + longest_needle}."
            )
        haystack, starts = self._haystack(tok, self.lengths[-1] - fixed)
        samples = []
        for (length, depth), target in cells.items():
            needle = needles[target["needle"]]
            whole, cut = whole_sentences(starts, length - fixed - len(needle))  # the context is haystack[:cut]
            pos = insertion_point(cut, depth, whole)
            prompt = turn.wrap(description, haystack[:pos], needle, haystack[pos:cut], question)
            meta = {
                "length": length,
                "depth": depth,
                "realized_depth": round(100 * pos / cut, 3),
                "prompt_tokens": len(prompt),
                "needle_token_index": len(turn.prefix_ids) + len(description) + pos,
            }
            samples.append(Sample(cell_id(length, depth), prompt, opts.max_new_tokens, target, meta,
                                  excerpt=_excerpt(tok, haystack, cut, pos, needle, question, whole)))
        if opts.control:
            for length in self.lengths:
                # The first depth's cell of the length: its target (a passkey's key) and its haystack cut.
                target = cells[(length, self.depths[0])]
                whole, cut = whole_sentences(starts, length - fixed - len(needles[target["needle"]]))
                prompt = turn.wrap(description, haystack[:cut], question)
                meta = {"length": length, "control": True, "prompt_tokens": len(prompt)}
                samples.append(Sample(control_id(length), prompt, opts.max_new_tokens, target, meta,
                                      excerpt=_excerpt(tok, haystack, cut, cut, [], question, whole)))
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        target = sample.target
        return self._judged(sample, output, {
            "key_facts": all_found(output, target["facts"]),
            "rouge_l_f1": rouge_l_f1(output, target["needle"]),
            "exact_phrase": substring_match(output, [target["answer"]] if target["answer"] else []),
        })

    def _judged(self, sample: Sample, output: str, scores: dict[str, Any]) -> dict[str, Any]:
        """Adds `judge`: the judge's 1-10 rating / 10 (0.1 to 1, the heatmaps' scale); None if it gave none."""
        if self._judge is None:
            return scores
        from lceval.tasks.judge import parse_rating

        rubric = judge_rubric()
        prompt = rubric["template"].format(criteria=rubric["criteria"], reference=sample.target["needle"].strip(),
                                           input=self.opts.question.strip(), prediction=output)
        reply = self._judge.ask([{"role": "system", "content": rubric["system"]}, {"role": "user", "content": prompt}],
                                rubric["max_tokens"])
        rating = parse_rating(reply)
        return {**scores, "judge": None if rating is None else rating / 10}

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return aggregate_grid(records, self.scored)

    def after_run(self, run_dir: Path, results: Results, manifest: Manifest) -> list[Path]:
        from lceval.analysis.plots import write_grid_heatmaps

        return write_grid_heatmaps(run_dir, results, manifest, task=self.name,
                                     training_length=self.opts.training_length)


_FIRST_INTEGER = re.compile(r"\d+")


@tasks.register("passkey")
class PasskeyTask(NeedleTask):
    """Passkey retrieval (Landmark Attention, LongLoRA): a 5-digit key in filler text, exact-key scoring."""

    name = "passkey"
    version = "3"  # 3: a no-needle control per length
    description = "Passkey retrieval (Landmark/LongLoRA): a seeded 5-digit key in filler, length x depth grid."
    metrics = (Metric("passkey_match", "Pass key retrieved (first integer)", pass_fail=True),
               Metric("judge", "Judge's rating / 10 (with passkey.judge_url)"))

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__({"preset": "passkey", **(options or {})})

    def cell_needle(self, length: int, depth: float) -> dict[str, Any]:
        key = str(random.Random(f"{self.opts.key_seed}/{length}/{depth:g}").randint(10000, 99999))
        target = super().cell_needle(length, depth)
        return {"needle": target["needle"].replace("{key}", key), "answer": target["answer"].replace("{key}", key),
                "facts": [fact.replace("{key}", key) for fact in target["facts"]]}

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        """Landmark's rule: the first integer of the output must be the key."""
        found = _FIRST_INTEGER.search(output)
        return self._judged(sample, output,
                            {"passkey_match": float(found is not None and found.group(0) == sample.target["answer"])})


def _excerpt(tokenizer, haystack: list[int], cut: int, pos: int, needle: list[int], question: list[int],
             starts: list[int]) -> dict[str, Any]:
    """A few whole sentences before and after the needle, the needle, and the question, as text (the context is
    haystack[:cut]; `starts` are its sentence starts)."""
    i = bisect.bisect_right(starts, pos)
    first = starts[max(i - 1 - EXCERPT_SENTENCES, 0)] if starts else 0
    last = starts[i + EXCERPT_SENTENCES - 1] if i + EXCERPT_SENTENCES - 1 < len(starts) else cut
    before = ("[...] " if first > 0 else "") + tokenizer.decode(haystack[first:pos])
    needle_text = tokenizer.decode(needle)
    after = tokenizer.decode(haystack[pos:last]) + (" [...]" if last < cut else "")
    text = before + needle_text + after + tokenizer.decode(question)
    return {"text": text, "highlight": [len(before), len(before) + len(needle_text)]}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _means(group: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, float]:
    """Each metric's mean over the group; a judge's missing rating (None) is left out."""
    return {m: _mean([r["scores"][m] for r in group if r["scores"].get(m) is not None]) for m in metrics}


def aggregate_controls(controls: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """The no-needle controls: their scores per length, means, and the lengths whose control passes the first
    (pass/fail) metric, i.e. where the model answered without the needle."""
    by_length: dict[int, list[dict[str, Any]]] = {}
    for record in controls:
        by_length.setdefault(record["meta"]["length"], []).append(record)
    found = [r for r in controls if (r["scores"].get(metrics[0]) or 0) >= 1]
    return {
        "n": len(controls),
        "metric": metrics[0],
        "metrics": _means(controls, metrics),
        "by_length": {str(k): _means(v, metrics) for k, v in sorted(by_length.items())},
        "found_without_needle": len(found),
        "found_lengths": sorted({r["meta"]["length"] for r in found}),
    }


def aggregate_grid(records: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """Means overall, per length, per depth and per cell, for every metric of a grid task, over its cells; the
    no-needle controls, if any, apart (`control`). `n_samples` counts both."""
    controls = [r for r in records if is_control(r)]
    held = len(records)
    records = [r for r in records if not is_control(r)]
    cells: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for record in records:
        cells.setdefault((record["meta"]["length"], record["meta"]["depth"]), []).append(record)

    def means(group: list[dict[str, Any]]) -> dict[str, float]:
        return _means(group, metrics)

    by_length: dict[int, list] = {}
    by_depth: dict[float, list] = {}
    for (length, depth), group in cells.items():
        by_length.setdefault(length, []).extend(group)
        by_depth.setdefault(depth, []).extend(group)
    real: dict[int, list[int]] = {}
    for record in records:
        real.setdefault(record["meta"]["length"], []).append(record["meta"]["prompt_tokens"])
    result = {
        "n_samples": held,
        "metrics": means(records),
        # How far the real prompts (whole sentences, chat template included) fall short of each nominal length.
        "real_lengths": {str(k): {"min_tokens": min(v), "max_tokens": max(v), "mean_tokens": round(_mean(v), 1),
                                  "mean_shortfall": round(k - _mean(v), 1)} for k, v in sorted(real.items())},
        "by_length": {str(k): means(v) for k, v in sorted(by_length.items())},
        "by_depth": {f"{k:g}": means(v) for k, v in sorted(by_depth.items())},
        "cells": [
            {
                "length": length,
                "depth": depth,
                "n": len(group),
                "realized_depth": _mean([r["meta"]["realized_depth"] for r in group]),
                "prompt_tokens": max(r["meta"]["prompt_tokens"] for r in group),
                **means(group),
            }
            for (length, depth), group in sorted(cells.items())
        ],
    }
    if controls:
        result["control"] = aggregate_controls(controls, metrics)
    return result
