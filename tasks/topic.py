"""Topic retrieval (LongChat's LongEval), as the seed paper ran it through FlagEmbedding's eval_topic.py.

The user recounts a conversation on N topics, one after another, and asks for the first one. Each case is one
user turn through the model's chat template, answered greedily in at most 50 tokens. Scores: the gold topic as a
case-insensitive substring of the answer (the paper's accuracy) and SQuAD-style token F1 (rounded to 4 places per
sample, as eval_topic.py sums it). Results go per topic count and against each count's mean prompt length in
tokens, the paper's x-axis.

Cases come from lceval's own seeded generator (offline, the default), from LongChat's committed test cases or its
conversations.jsonl, or from FlagEmbedding's topic_retrieval.json. Upstream draws topics unseeded; here every
draw is seeded by (seed, count, case), so a case keeps its prompt when `cases` or `counts` change.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from lceval.api import files
from lceval.api.errors import UserError
from lceval.api.prompting import encode
from lceval.api.registry import tasks
from lceval.api.schema import Manifest, Results
from lceval.api.settings import Count, NonNegativeInt, parse_options, settings_class
from lceval.api.task import Axis, Metric, PromptContext, Sample, Task
from lceval.metrics.longbench import qa_f1_score
from lceval.metrics.text import substring_match
from lceval.tasks.benchmark_data import data_yaml, locate, numbered_rows

GENERATED = "generated"
LONGCHAT = "longchat"  # LongChat's committed test cases, {N}_topics.jsonl
LONGCHAT_CONVERSATIONS = "longchat-conversations"  # LongChat's conversations.jsonl, drawn into cases here
FLAGEMBEDDING = "flagembedding"  # FlagEmbedding's long-llm longeval/topic_retrieval.json
SOURCES = (GENERATED, LONGCHAT, LONGCHAT_CONVERSATIONS, FLAGEMBEDDING)
PAPER_COUNTS = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70)  # FlagEmbedding's eval_topic.py (LongChat ran 5..25)
METRICS = ("accuracy", "f1")
# Where the official files sit below the folder a user may pass (the file itself, or a checkout of the repo).
TESTCASE_DIRS = ("", "testcases", "topics/testcases", "evaluation/topics/testcases",
                 "longeval/evaluation/topics/testcases")
CONVERSATION_DIRS = ("", "topics", "evaluation/topics", "longeval/evaluation/topics")
FLAGEMBEDDING_DIRS = ("", "longeval")


@cache
def topic_data() -> dict[str, Any]:
    """Prompt strings, the generator's templates and the topic pool (tasks/data/topic.yaml)."""
    return data_yaml("topic")


@settings_class
class TopicOptions:
    """-o topic.KEY=VALUE: each field's type is its range (lceval.api.settings)."""

    counts: Annotated[list[Count], Field(min_length=1)] = field(default_factory=lambda: list(PAPER_COUNTS))
    cases: Count = 50  # per count (the files' first `cases` rows for the file sources)
    seed: int = 0
    source: Literal[GENERATED, LONGCHAT, LONGCHAT_CONVERSATIONS, FLAGEMBEDDING] = GENERATED
    data_dir: str | None = None  # the folder of the official files (file sources only)
    # generator: question-and-answer exchanges per conversation (0: only its opening and closing turns, for
    # windows of a few hundred tokens)
    min_exchanges: NonNegativeInt = 3
    max_exchanges: NonNegativeInt = 4
    chat_template: bool = True
    max_new_tokens: Count = 50

    @classmethod
    def from_dict(cls, options: dict[str, Any], task: str = "topic") -> TopicOptions:
        opts = parse_options(cls, options, task)
        opts.counts = sorted(set(opts.counts))
        if opts.min_exchanges > opts.max_exchanges:
            raise UserError(f"{task}.min_exchanges {opts.min_exchanges} is above {task}.max_exchanges "
                            f"{opts.max_exchanges}; it must be at most that.")
        if opts.source == GENERATED:
            opts.data_dir = None  # `lceval run --data-dir` reaches every task; the generator reads no files
        return opts


@dataclass(frozen=True)
class Case:
    """One test case as text: its prompt (without the chat template) and its topics in order (gold first)."""

    count: int
    index: int
    prompt: str
    topics: tuple[str, ...]
    line: int | None = None  # its line (or item) in the official file it came from
    test_id: Any = None  # LongChat's id of a committed test case

    @property
    def id(self) -> str:
        return f"{self.count}-{self.index:03d}"


def record_prompt(conversations: list[str]) -> str:
    """LongChat's prompt: header, the conversations back to back, the question."""
    prompt = topic_data()["prompt"]
    return prompt["header"].format(num_topics=len(conversations)) + "".join(conversations) + prompt["question"]


def case_rng(seed: int, count: int, index: int) -> random.Random:
    """The draw of one case, independent of the other cases and counts."""
    return random.Random(f"{seed}/{count}/{index}")


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _sentence(template: str, topic: str, rng: random.Random) -> str:
    data = topic_data()
    text = template.format(topic=topic, topic_lower=lower_first(topic), group=rng.choice(data["groups"]),
                           aspect=rng.choice(data["aspects"]))
    return text[:1].upper() + text[1:]


def generated_conversation(topic: str, seed: int, min_exchanges: int = 3, max_exchanges: int = 4) -> str:
    """A USER/ASSISTANT conversation on `topic` in LongChat's shape, the same for a topic and seed everywhere."""
    data, shape = topic_data(), topic_data()["conversation"]
    rng = random.Random(f"{seed}/conversation/{topic}")
    turns = [(shape["user"], _sentence(shape["first_line"], topic, rng)),
             (shape["assistant"], _sentence(rng.choice(data["openings"]), topic, rng))]
    questions = rng.sample(data["questions"], rng.randint(min_exchanges, max_exchanges))
    answers = rng.sample(data["answers"], len(data["answers"]))
    low, high = shape["answer_sentences"]
    for number, question in enumerate(questions):
        ask = _sentence(question, topic, rng)
        if number and rng.random() < 0.6:
            ask = f"{rng.choice(data['acknowledgements'])} {ask}"
        reply = [_sentence(answers.pop(), topic, rng) for _ in range(min(rng.randint(low, high), len(answers)))]
        turns += [(shape["user"], ask), (shape["assistant"], " ".join(reply))]
    turns += [(shape["user"], _sentence(rng.choice(data["closings"]["user"]), topic, rng)),
              (shape["assistant"], _sentence(rng.choice(data["closings"]["assistant"]), topic, rng)),
              (shape["user"], _sentence(shape["last_line"], topic, rng))]
    return shape["turn_separator"].join(role + text for role, text in turns)


def generated_cases(opts: TopicOptions) -> list[Case]:
    """`cases` cases per count, each drawing its topics from the pool without replacement."""
    pool = topic_data()["topics"]
    too_many = [c for c in opts.counts if c > len(pool)]
    if too_many:
        raise UserError(f"topic count {too_many[0]} is more than the {len(pool)} topics of the generator's pool; "
                        "use smaller counts.")
    conversations: dict[str, str] = {}
    cases = []
    for count in opts.counts:
        for index in range(opts.cases):
            topics = case_rng(opts.seed, count, index).sample(pool, count)
            for topic in topics:
                if topic not in conversations:
                    conversations[topic] = generated_conversation(topic, opts.seed, opts.min_exchanges,
                                                                  opts.max_exchanges)
            cases.append(Case(count, index, record_prompt([conversations[t] for t in topics]), tuple(topics)))
    return cases


# ----------------------------------------------------------------------------------------------- official files


def _official_file(opts: TopicOptions, filename: str, dirs: tuple[str, ...], origin: str) -> Path:
    if opts.data_dir is None:
        raise UserError(f"topic.source={opts.source} reads {filename} from a folder; pass --data-dir DIR or "
                        "-o topic.data_dir=DIR.")
    return locate(origin, filename, opts.data_dir, dirs)


def _field(row: dict[str, Any], name: str, where: str) -> Any:
    """A field of an official record, checked for the type the format gives it."""
    if name not in row:
        raise UserError(f"{where} lacks the field {name!r}; is it an official-format file?")
    value = row[name]
    if name == "topics":
        ok = isinstance(value, list) and bool(value) and all(isinstance(t, str) and t for t in value)
        kind = "a non-empty list of topic names"
    elif name == "num_topics":
        ok, kind = isinstance(value, int) and not isinstance(value, bool) and value > 0, "a positive integer"
    else:
        ok, kind = isinstance(value, str) and bool(value), "a non-empty string"
    if not ok:
        raise UserError(f"{where} has a field {name!r} that is not {kind}; fix or delete that line.")
    return value


def _records(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(number, where, record) of a jsonl file, or of a JSON array (the `datasets` json loader reads either)."""
    text = files.read_text(path)
    if not text.lstrip().startswith("["):
        for number, row in numbered_rows(path, text):
            yield number, f"{path} line {number}", row
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); fix the file.") from None
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise UserError(f"{path} item {number} is not a JSON object; each item must hold one record.")
        yield number, f"{path} item {number}", item


def longchat_cases(opts: TopicOptions) -> list[Case]:
    """LongChat's committed test cases: the prompt as given, gold = topics[0]; the first `cases` per file."""
    cases = []
    for count in opts.counts:
        path = _official_file(opts, f"{count}_topics.jsonl", TESTCASE_DIRS, "LongChat topics")
        rows = [(number, _field(row, "prompt", where), _field(row, "topics", where), row.get("test_id"))
                for number, where, row in _records(path)]
        if not rows:
            raise UserError(f"{path} holds no test cases; restore it from LongChat's repository.")
        cases += [Case(count, index, prompt, tuple(topics), number, test_id)
                  for index, (number, prompt, topics, test_id) in enumerate(rows[: opts.cases])]
    return cases


def conversation_cases(opts: TopicOptions) -> list[Case]:
    """Cases drawn from LongChat's conversations.jsonl as its generator draws them, but seeded."""
    path = _official_file(opts, "conversations.jsonl", CONVERSATION_DIRS, "LongChat topics")
    pool = [(_field(row, "topic", where), _field(row, "conversation", where)) for _, where, row in _records(path)]
    too_many = [c for c in opts.counts if c > len(pool)]
    if too_many:
        raise UserError(f"{path} holds {len(pool)} conversations, fewer than the {too_many[0]} topics asked for; "
                        "use smaller topic.counts.")
    cases = []
    for count in opts.counts:
        for index in range(opts.cases):
            picks = case_rng(opts.seed, count, index).sample(pool, count)
            cases.append(Case(count, index, record_prompt([text for _, text in picks]),
                              tuple(topic for topic, _ in picks)))
    return cases


def flagembedding_cases(opts: TopicOptions) -> list[Case]:
    """FlagEmbedding's topic_retrieval.json: context + " " + question, the wanted counts, the first `cases` each."""
    path = _official_file(opts, "topic_retrieval.json", FLAGEMBEDDING_DIRS, "FlagEmbedding long-llm")
    separator = topic_data()["prompt"]["context_question_separator"]
    by_count: dict[int, list[Case]] = {}
    for number, where, row in _records(path):
        count = _field(row, "num_topics", where)
        context, question, topics = (_field(row, name, where) for name in ("context", "question", "topics"))
        kept = by_count.setdefault(count, [])
        if count in opts.counts and len(kept) < opts.cases:
            kept.append(Case(count, len(kept), context + separator + question, tuple(topics), number))
    missing = [c for c in opts.counts if not by_count.get(c)]
    if missing:
        raise UserError(f"{path} has no case with {missing[0]} topics (its counts: "
                        f"{', '.join(map(str, sorted(by_count)))}); choose topic.counts among them.")
    return [case for count in opts.counts for case in by_count[count]]


CASE_BUILDERS = {GENERATED: generated_cases, LONGCHAT: longchat_cases, LONGCHAT_CONVERSATIONS: conversation_cases,
                 FLAGEMBEDDING: flagembedding_cases}


# ---------------------------------------------------------------------------------------------------------- task


@tasks.register("topic")
class TopicTask(Task):
    """Topic retrieval: name the first of N topics of a long conversation; accuracy and F1 per topic count."""

    name = "topic"
    version = "1"
    options_class = TopicOptions
    description = "Topic retrieval (LongChat/LongEval, the seed paper's counts 5-70): name the first topic."
    reads_data_dir = True
    metrics = (Metric("accuracy", "first topic named (accuracy)", pass_fail=True),
               Metric("f1", "token F1 against the first topic"))
    axes = (Axis("topics", "num_topics"),)
    neutral_settings = frozenset({"data_dir"})

    def check_window(self, window: int) -> None:
        if self.opts.max_new_tokens >= window:
            raise UserError(f"{self.name}.max_new_tokens {self.opts.max_new_tokens} leaves no room for a prompt "
                            f"in the window of {window} tokens; lower it.")

    def cases(self) -> list[Case]:
        """The cases as text, in a stable order: by count, then by case."""
        return CASE_BUILDERS[self.opts.source](self.opts)

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        turn = ctx.user_turn(chat=self.opts.chat_template)
        samples = []
        for case in self.cases():
            prompt = turn.wrap(encode(ctx.tokenizer, case.prompt))
            meta = {"num_topics": case.count, "case": case.index, "prompt_tokens": len(prompt),
                    "source": self.opts.source}
            if case.line is not None:
                meta["line"] = case.line
            if case.test_id is not None:
                meta["test_id"] = case.test_id
            samples.append(Sample(case.id, prompt, self.opts.max_new_tokens,
                                  {"topic": case.topics[0], "topics": list(case.topics)}, meta))
        self._check_lengths(samples, ctx.window)
        return samples

    def _check_lengths(self, samples: list[Sample], window: int) -> None:
        """Every case must fit the window with its answer; say which counts do, for -o topic.counts."""
        longest: dict[int, int] = {}
        for sample in samples:
            count = sample.meta["num_topics"]
            longest[count] = max(longest.get(count, 0), sample.meta["prompt_tokens"])
        room = window - self.opts.max_new_tokens
        over = [(count, n) for count, n in longest.items() if n > room]
        if not over:
            return
        count, n = over[0]
        fitting = [c for c, m in longest.items() if m <= room]
        advice = (f"run the counts that fit with -o {self.name}.counts=[{','.join(map(str, fitting))}]" if fitting
                  else "no count fits, so use a model with a longer window")
        raise UserError(f"{self.name} cases with {count} topics take up to {n:,} prompt tokens "
                        f"(+{self.opts.max_new_tokens} answer tokens), more than the window of {window:,}; {advice}.")

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        return score_topic(output, sample.target["topic"])

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return aggregate_counts(records, METRICS)

    def after_run(self, run_dir: Path, results: Results, manifest: Manifest) -> list[Path]:
        return write_topic_curve(run_dir, results, manifest, task=self.name)


def score_topic(output: str, topic: str) -> dict[str, float]:
    """FlagEmbedding's two scores: the topic inside the answer (any case), and token F1 rounded as it sums it."""
    return {"accuracy": substring_match(output, [topic]), "f1": round(qa_f1_score(output, topic), 4)}


# ----------------------------------------------------------------------------------------------------- results


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def aggregate_counts(records: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """Means overall and per topic count; each count also keyed by its mean prompt length (FlagEmbedding's key)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["meta"]["num_topics"], []).append(record)

    def means(group: list[dict[str, Any]]) -> dict[str, float]:
        return {m: _mean([r["scores"][m] for r in group]) for m in metrics}

    def mean_tokens(group: list[dict[str, Any]]) -> float:
        return _mean([r["meta"]["prompt_tokens"] for r in group])

    curve: list[dict[str, Any]] = []
    by_length: dict[str, dict[str, float]] = {}
    for count, group in sorted(groups.items()):
        tokens = mean_tokens(group)
        curve.append({"num_topics": count, "n": len(group), "mean_prompt_tokens": round(tokens, 1), **means(group)})
        key = str(int(tokens))  # eval_topic.py's key: int(sum / len)
        by_length[key if key not in by_length else f"{key} ({count} topics)"] = means(group)
    return {
        "n_samples": len(records),
        "metrics": means(records),
        "mean_prompt_tokens": round(mean_tokens(records), 1) if records else float("nan"),
        "by_count": {str(p["num_topics"]): {m: p[m] for m in metrics} for p in curve},
        "by_length": by_length,
        "curve": curve,
    }


CURVE_COLUMNS = ("num_topics", "n", "mean_prompt_tokens", *METRICS)


def write_topic_curve(run_dir: Path, results: Results, manifest: Manifest, *, task: str = "topic") -> list[Path]:
    """A CSV and a PNG of the scores per topic count against mean prompt tokens; returns the files written."""
    from lceval.analysis.plots import heatmap_title, plot_curve

    task_results = results.tasks[task]
    curve = task_results.curve or []
    if not curve:
        return []
    stem = f"{task.replace('/', '_')}_curve"
    csv_path = run_dir / f"{stem}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(curve)
    xs = [p["mean_prompt_tokens"] for p in curve]
    overall = task_results.metrics
    summary = f"accuracy {overall['accuracy']:.3f}, token F1 {overall['f1']:.3f} over {task_results.n_samples} cases"
    title = heatmap_title(manifest, task, f"First topic named: {summary}", None)
    png = plot_curve(run_dir / f"{stem}.png", {TopicTask.declaration().label(m): (xs, [p[m] for p in curve])
                                                   for m in METRICS},
                     title=title, xlabel="Mean prompt length (tokens)", ylabel="Score",
                     top_ticks=(xs, [str(p["num_topics"]) for p in curve]), top_label="Topics in the conversation")
    return [png, csv_path]
