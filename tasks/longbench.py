"""LongBench v1 and LongBench-E, following the official pred.py / eval.py pipeline.

Per item: the dataset's template filled with the item; middle truncation of the formatted prompt to
`max_length` tokens of the model's tokenizer (BOS counted, first and last half kept); the chat template after
truncation except for the completion-style datasets; greedy decoding with the dataset's maxlen (samsum stops at
a newline after at least one token); the raw output is scored by lceval.metrics.longbench, which also
takes the first line for trec, triviaqa, samsum and lsht as eval.py does. Scores are round(100 * mean, 2).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import field
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError
from lceval.api.prompting import bos_ids, encode, middle_truncate
from lceval.api.registry import register_variant
from lceval.api.settings import CommaList, Count, parse_options, settings_class
from lceval.api.task import Axis, Metric, PromptContext, Sample, Task
from lceval.metrics import longbench as longbench_metrics
from lceval.tasks.benchmark_data import hub_file, locate, read_jsonl, spec

HUB_REPO = "THUDM/LongBench"
FIELDS = ("input", "context", "answers", "length", "all_classes")
# Room the official model2maxlen leaves between the truncation length and the window (3500 for 4K, 31500 for 32K),
# widened where the longest answer and the chat template need more.
WINDOW_MARGIN = 500
TEMPLATE_ROOM = 100
CATEGORY_SLUGS = {
    "Single-Document QA": "single-doc-qa",
    "Multi-Document QA": "multi-doc-qa",
    "Summarization": "summarization",
    "Few-shot Learning": "few-shot",
    "Synthetic Task": "synthetic",
    "Code Completion": "code",
}


def datasets_spec() -> dict[str, dict[str, Any]]:
    return spec("longbench_spec")


@settings_class
class LongBenchOptions:
    """-o longbench.KEY=VALUE (and longbench-e, longbench/<dataset>): each field's type is its range."""

    datasets: CommaList = field(default_factory=list)
    e: bool = False  # LongBench-E: the <name>_e files, scored by length bucket
    data_dir: str | None = None  # official data.zip layout (data/<name>.jsonl) or a flat folder; default: bundled
    hub: bool = False  # fetch data.zip from the hub instead of the bundled samples
    revision: str | None = None  # hub revision of the dataset repo (recorded in the results either way)
    max_length: Count | None = None  # truncation length; default: the window less max(500, longest answer + 100)
    chat_template: bool = True

    @classmethod
    def from_dict(cls, options: dict[str, Any], task: str = "longbench") -> LongBenchOptions:
        opts = parse_options(cls, options, task)
        bad = [d for d in opts.datasets if d not in datasets_spec()]
        if bad:
            raise UserError(f"unknown LongBench dataset {bad[0]!r}; datasets: {', '.join(datasets_spec())}.")
        return opts


class LongBenchTask(Task):
    name = "longbench"
    version = "1"
    options_class = LongBenchOptions
    description = "LongBench v1 (21 datasets), official prompts, middle truncation and metrics."
    metrics = (Metric("score", "Official metric of the dataset (0..1)"),)
    # length: each document's word count (a breakdown only where few distinct counts occur).
    axes = (Axis("length", "length"), Axis("category", "category"), Axis("dataset", "dataset"))
    neutral_settings = frozenset({"data_dir"})

    @classmethod
    def score_predictions(cls, pred_dir: Path, options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
        """eval.py on pred.py's files (`e`: LongBench-E's length buckets)."""
        if "scorer" in options:
            raise UserError("--scorer applies to infinitebench; LongBench has one scorer (its eval.py).")
        return longbench_metrics.score_pred_dir(pred_dir, e=bool(options.get("e")))

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        if not self.opts.datasets:
            self.opts.datasets = list(datasets_spec())
        if self.opts.e:
            outside = [d for d in self.opts.datasets if not datasets_spec()[d].get("in_longbench_e")]
            if outside:
                raise UserError(f"LongBench-E has no dataset {outside[0]!r}.")
        self.revision: str | None = None

    def _truncation_length(self, window: int) -> int:
        longest_answer = max(datasets_spec()[d]["maxlen"] for d in self.opts.datasets)
        return self.opts.max_length or window - max(WINDOW_MARGIN, longest_answer + TEMPLATE_ROOM)

    def check_window(self, window: int) -> None:
        longest = self._truncation_length(window) + max(datasets_spec()[d]["maxlen"] for d in self.opts.datasets)
        if longest > window:
            raise UserError(f"longbench max_length {self._truncation_length(window)} plus the longest answer does not "
                            f"fit the window of {window} tokens; lower -o {self.name}.max_length.")

    def _rows(self, dataset: str) -> list[dict[str, Any]]:
        filename = f"{dataset}_e.jsonl" if self.opts.e else f"{dataset}.jsonl"
        if self.opts.hub and self.opts.data_dir is None:
            archive, self.revision = hub_file(HUB_REPO, "data.zip", self.opts.revision)
            with zipfile.ZipFile(archive) as zipped:
                member = f"data/{filename}"
                if member not in zipped.namelist():
                    raise UserError(f"{archive} has no {member}; is it LongBench's data.zip?")
                text = zipped.read(member).decode("utf-8")
            return read_jsonl(archive / member, FIELDS, text=text)
        return read_jsonl(locate("longbench", filename, self.opts.data_dir), FIELDS)

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        meta = spec("longbench_meta")
        no_chat = set(meta["no_chat_template_datasets"])
        limit = self._truncation_length(ctx.window)
        n_bos = len(bos_ids(ctx.tokenizer))
        newline = encode(ctx.tokenizer, "\n")[-1]
        samples = []
        for dataset in self.opts.datasets:
            info = datasets_spec()[dataset]
            turn = ctx.user_turn(chat=self.opts.chat_template and dataset not in no_chat)
            for index, row in enumerate(self._rows(dataset)):
                content = encode(ctx.tokenizer, info["prompt"].format(**row))
                kept = middle_truncate(content, limit, n_bos)
                stops = [*ctx.stop_token_ids, newline] if dataset == "samsum" else []
                samples.append(Sample(
                    id=f"{dataset}/{row.get('_id', index)}",
                    prompt_ids=turn.wrap(kept),
                    max_new_tokens=info["maxlen"],
                    min_new_tokens=1 if dataset == "samsum" else 0,
                    stop_token_ids=stops,
                    target={"answers": row["answers"], "all_classes": row.get("all_classes")},
                    meta={"dataset": dataset, "length": row["length"], "category": info["category"],
                          "language": info["language"], "truncated": len(kept) < len(content),
                          "prompt_tokens": len(kept) + turn.overhead},
                ))
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        dataset = sample.meta["dataset"]
        value = longbench_metrics.score_sample(dataset, output, sample.target["answers"], sample.target["all_classes"])
        return {"score": value}

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        by_dataset: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_dataset.setdefault(record["meta"]["dataset"], []).append(record)
        scores = {d: longbench_metrics.percent_mean([r["scores"]["score"] for r in rs])
                  for d, rs in sorted(by_dataset.items())}
        result: dict[str, Any] = {"n_samples": len(records), "by_dataset": scores}
        if scores:
            result.update(longbench_metrics.average(scores))
        if self.opts.e:
            result["by_dataset_bucket"] = {
                d: longbench_metrics.bucket_scores([r["scores"]["score"] for r in rs],
                                                   [r["meta"]["length"] for r in rs])
                for d, rs in sorted(by_dataset.items())}
        if self.revision:
            result["data_revision"] = self.revision
        return result


def _register(name: str, description: str, **preset: Any) -> None:
    register_variant(LongBenchTask, name, description, reads_data_dir=True, **preset)


def _register_all() -> None:
    every = datasets_spec()
    _register("longbench", LongBenchTask.description)
    _register("longbench-e", "LongBench-E: its 13 datasets scored by length bucket (0-4k, 4-8k, 8k+).",
              datasets=[d for d, s in every.items() if s.get("in_longbench_e")], e=True)
    _register("longbench-en", "LongBench's English and code datasets.",
              datasets=[d for d, s in every.items() if s["language"] != "zh"])
    _register("longbench-zh", "LongBench's Chinese datasets.",
              datasets=[d for d, s in every.items() if s["language"] == "zh"])
    for category, slug in CATEGORY_SLUGS.items():
        members = [d for d, s in every.items() if s["category"] == category]
        _register(f"longbench-{slug}", f"LongBench {category}: {', '.join(members)}.", datasets=members)
    for dataset, info in every.items():
        _register(f"longbench/{dataset}", f"LongBench {dataset} ({info['category']}, {info['metric']}).",
                  datasets=[dataset])
    # The seed paper's setting: its English datasets, truncated at 31,500 tokens (the 80K model; use
    # -o longbench-paper.max_length=7500 for an 8K model); Llama-3's two stop tokens come from the model.
    _register("longbench-paper", "The seed paper's LongBench setting (English datasets, truncation 31,500).",
              datasets=[d for d, s in every.items() if s["language"] != "zh"], max_length=31500)


_register_all()


def write_prediction_files(records: list[dict[str, Any]], out_dir) -> list:
    """The run's LongBench records as official prediction files (<dataset>.jsonl: pred, answers, all_classes,
    length), so that LongBench's own eval.py, or `lceval score longbench`, can score them."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_dataset.setdefault(record["meta"]["dataset"], []).append(record)
    written = []
    for dataset, rows in by_dataset.items():
        path = out / f"{dataset}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for r in rows:
                line = {"pred": r["output"], "answers": r["target"]["answers"],
                        "all_classes": r["target"]["all_classes"], "length": r["meta"]["length"]}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        written.append(path)
    return written
