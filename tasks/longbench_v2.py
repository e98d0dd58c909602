"""LongBench v2 (503 four-choice questions over long contexts), following the official pred.py / result.py.

Per item: the 0shot template (tasks/data/longbench_meta.json, key v2) with $DOC$, $Q$ and $C_A$..$C_D$ replaced
by the stripped fields, one str.replace after the other in the official order; middle truncation of the filled
prompt to `max_length` tokens of the model's tokenizer (BOS counted; the first max_length//2 and the last
ceil(max_length/2) tokens kept, as `ids[:n//2] + ids[-n//2:]` slices); the chat template after truncation (the
official runs send one user message to a chat endpoint); decoding with at most 128 new tokens. lceval decodes
greedily, where the official API runs sample at temperature 0.1, so scores can differ from published ones by
that noise. The answer is extracted as pred.py does ('*' removed, then "The correct answer is (X)", then "The
correct answer is X", else none, which counts as wrong) and scored 1.0 or 0.0. Results are result.py's table:
overall, easy/hard and short/medium/long accuracies, round(100 * mean, 1); `compensated` counts an item with
no extractable answer as 0.25, as result.py's optional mode.

The default `max_length` is the window less 128 answer tokens and 100 tokens of chat-template room (the
official model2maxlen is 120,000 for 128K models; pass -o longbench-v2.max_length=120000 to match it).

Differences from pred.py: an empty model output is scored as wrong (pred.py drops an item whose API call
returned '', after 5 failed tries, from the file and so from the denominator); the truncated ids are used as
they are, not decoded and re-encoded by a server. The two-pass chain of thought (cot) is not implemented yet.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lceval.api import files
from lceval.api.errors import UserError
from lceval.api.prompting import bos_ids, encode, middle_truncate
from lceval.api.registry import register_variant
from lceval.api.settings import Count, parse_options, settings_class
from lceval.api.task import Axis, Metric, PromptContext, Sample, Task
from lceval.tasks.benchmark_data import hub_file, locate, spec

HUB_REPO = "THUDM/LongBench-v2"
FIELDS = ("_id", "domain", "difficulty", "length", "question", "choice_A", "choice_B", "choice_C", "choice_D",
          "answer", "context")
# The official order of the replacements (a placeholder inside an earlier field's text is replaced too).
PLACEHOLDERS = (("$DOC$", "context"), ("$Q$", "question"), ("$C_A$", "choice_A"), ("$C_B$", "choice_B"),
                ("$C_C$", "choice_C"), ("$C_D$", "choice_D"))
ANSWER_TOKENS = 128  # pred.py's max_tokens without CoT
TEMPLATE_ROOM = 100  # tokens left for the chat template around the truncated prompt
ANSWERS = ("A", "B", "C", "D")
DIFFICULTIES = ("easy", "hard")
LENGTHS = ("short", "medium", "long")
COMPENSATION = 0.25  # result.py's compensated mode: the expected accuracy of a guess among four choices


@settings_class
class LongBenchV2Options:
    """-o longbench-v2.KEY=VALUE: each field's type is its range (lceval.api.settings)."""

    data_dir: str | None = None  # a folder with the official data.json (a JSON list); default: the bundled samples
    hub: bool = False  # fetch data.json from the hub instead of the bundled samples
    revision: str | None = None  # hub revision of the dataset repo (recorded in the results either way)
    max_length: Count | None = None  # truncation length; default: the window less the answer and template room
    chat_template: bool = True  # the official runs go through a chat endpoint
    cot: bool = False  # the official two-pass chain of thought: not implemented yet
    compensated: bool = False  # result.py's optional mode: no extractable answer counts 0.25

    @classmethod
    def from_dict(cls, options: dict[str, Any], task: str = "longbench-v2") -> LongBenchV2Options:
        opts = parse_options(cls, options, task)
        if opts.cot:
            raise UserError(f"{task}.cot=true (the official two-pass chain of thought) is not implemented yet; "
                            "run without it for the direct 0shot setting.")
        return opts


def fill_template(template: str, item: dict[str, Any]) -> str:
    """pred.py's prompt: each placeholder replaced by the stripped field, one replacement after the other."""
    for placeholder, key in PLACEHOLDERS:
        template = template.replace(placeholder, item[key].strip())
    return template


def extract_answer(response: str) -> str | None:
    """pred.py's extract_answer: the letter after "The correct answer is", '*' removed first; None if absent."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response)
    if match is None:
        match = re.search(r"The correct answer is ([A-D])", response)
    return match.group(1) if match else None


def _percent(total: float, count: int) -> float | None:
    return round(100 * total / count, 1) if count else None


def summarize(judged: list[tuple[float, str, str]]) -> dict[str, Any]:
    """result.py's row from (acc, difficulty, length) per item: overall and per-subset accuracies, rounded to one
    decimal; None for an empty subset (result.py divides by zero there)."""
    sums = {key: 0.0 for key in (*DIFFICULTIES, *LENGTHS)}
    counts = dict.fromkeys(sums, 0)
    for acc, difficulty, length in judged:
        for key in (difficulty, length):
            sums[key] += acc
            counts[key] += 1
    return {
        "metrics": {"overall": _percent(sums["easy"] + sums["hard"], len(judged))},
        "by_difficulty": {d: _percent(sums[d], counts[d]) for d in DIFFICULTIES},
        "by_length_bucket": {n: _percent(sums[n], counts[n]) for n in LENGTHS},
    }


def read_items(path: Path) -> list[dict[str, Any]]:
    """The official data.json: a JSON list of items with the official fields; a bad file gets one sentence."""
    try:
        items = json.loads(files.read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}); is it LongBench v2's data.json?"
                        ) from err
    if not isinstance(items, list):
        raise UserError(f"{path} is not a JSON list of items; is it LongBench v2's data.json?")
    seen: set[str] = set()
    for number, item in enumerate(items):
        missing = [key for key in FIELDS if not isinstance(item, dict) or key not in item]
        if missing:
            raise UserError(f"{path} item {number} lacks the field {missing[0]!r}; is it LongBench v2's data.json?")
        if item["difficulty"] not in DIFFICULTIES or item["length"] not in LENGTHS or item["answer"] not in ANSWERS:
            raise UserError(f"{path} item {number} ({item['_id']}) has difficulty {item['difficulty']!r}, length "
                            f"{item['length']!r}, answer {item['answer']!r}; expected {'/'.join(DIFFICULTIES)}, "
                            f"{'/'.join(LENGTHS)}, one of {'/'.join(ANSWERS)}.")
        if item["_id"] in seen:
            raise UserError(f"{path} holds the _id {item['_id']!r} twice.")
        seen.add(item["_id"])
    return items


class LongBenchV2Task(Task):
    name = "longbench-v2"
    version = "1"
    options_class = LongBenchV2Options
    description = "LongBench v2 (503 four-choice questions), official 0shot prompt, truncation and accuracy."
    metrics = (Metric("correct", "Choice correct", pass_fail=True),)
    axes = (Axis("length", "length"), Axis("difficulty", "difficulty"))
    neutral_settings = frozenset({"data_dir"})

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self.revision: str | None = None

    def _truncation_length(self, window: int) -> int:
        return self.opts.max_length or window - ANSWER_TOKENS - TEMPLATE_ROOM

    def check_window(self, window: int) -> None:
        limit = self._truncation_length(window)
        if limit < 1 or limit + ANSWER_TOKENS > window:
            raise UserError(f"longbench-v2 max_length {limit} plus the {ANSWER_TOKENS} answer tokens does not fit "
                            f"the window of {window} tokens; lower -o {self.name}.max_length.")

    def _items(self) -> list[dict[str, Any]]:
        if self.opts.hub and self.opts.data_dir is None:
            path, self.revision = hub_file(HUB_REPO, "data.json", self.opts.revision)
            return read_items(path)
        return read_items(locate("longbench_v2", "data.json", self.opts.data_dir))

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        template = spec("longbench_meta")["v2"]["templates"]["0shot"]
        limit = self._truncation_length(ctx.window)
        n_bos = len(bos_ids(ctx.tokenizer))
        turn = ctx.user_turn(chat=self.opts.chat_template)
        samples = []
        for item in self._items():
            content = encode(ctx.tokenizer, fill_template(template, item))
            kept = middle_truncate(content, limit, n_bos, tail_rounds_up=True)  # pred.py: ids[-limit//2:]
            samples.append(Sample(
                id=str(item["_id"]),
                prompt_ids=turn.wrap(kept),
                max_new_tokens=ANSWER_TOKENS,
                target={"answer": item["answer"]},
                meta={"difficulty": item["difficulty"], "length": item["length"], "domain": item["domain"],
                      "truncated": len(kept) < len(content), "prompt_tokens": len(kept) + turn.overhead},
            ))
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        return {"correct": 1.0 if extract_answer(output) == sample.target["answer"] else 0.0}

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        judged = []
        for record in records:
            acc = record["scores"]["correct"]
            if self.opts.compensated and extract_answer(record["output"]) is None:
                acc = COMPENSATION
            judged.append((acc, record["meta"]["difficulty"], record["meta"]["length"]))
        result: dict[str, Any] = {"n_samples": len(records), **summarize(judged),
                                  "n_no_answer": sum(extract_answer(r["output"]) is None for r in records)}
        if self.opts.compensated:
            result["compensated"] = True
        if self.revision:
            result["data_revision"] = self.revision
        return result


register_variant(LongBenchV2Task, "longbench-v2", LongBenchV2Task.description, reads_data_dir=True)
