"""LongBench v1 and LongBench-E scoring, value for value the official scorer's (THUDM/LongBench, LongBench/metrics.py
and LongBench/eval.py at commit 2e00731f8d0bff23dc4325161044d0ed8af94c1e; the v1 scorer has not changed since
2023-11-24).

Each metric takes (prediction, ground_truth, all_classes) and returns a score in [0, 1]. A sample scores the best
over its answers after the dataset's post-processing; a dataset scores round(100 * mean, 2); LongBench-E splits the
samples into length buckets. `score_pred_dir` re-scores a folder of official prediction files and writes the
`result.json` the official eval.py writes for it.

Library pins that change scores: rouge 1.0.1, jieba 0.42.1 (default dictionary, HMM on), fuzzywuzzy 0.18.0 on
difflib, as the official requirements install it (where python-Levenshtein is installed, fuzzywuzzy switches to it
and gives other values, so code_sim_score then does fuzzywuzzy's difflib arithmetic itself).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lceval.api.errors import UserError
from lceval.metrics.text import rouge_l_f1
from lceval.tasks.benchmark_data import numbered_rows

with warnings.catch_warnings():  # fuzzywuzzy warns that it runs on difflib, which is what the official scorer ran
    warnings.simplefilter("ignore")
    from fuzzywuzzy import fuzz


RESULT_FILE = "result.json"
BUCKETS = ("0-4k", "4-8k", "8k+")
CODE_LANGUAGES = ("code (Python/C#/Java)", "code (Python/Java)")  # spec languages of lcc and repobench-p

# Recursion headroom the official scorer leaves the `rouge` package (measured with lceval.metrics.text.stack_headroom()
# in a script shaped like eval.py: module -> scorer -> rouge_score; the same on CPython 3.10 to 3.13 at the default
# limit of 1000). rouge_zh_score calls rouge_score, one frame deeper.
OFFICIAL_ROUGE_HEADROOM = 995
OFFICIAL_ROUGE_ZH_HEADROOM = OFFICIAL_ROUGE_HEADROOM - 1

_CJK_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣"
    "､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_EN_PUNCTUATION = frozenset(string.punctuation)
_ZH_PUNCTUATION = frozenset(string.punctuation) | frozenset(_CJK_PUNCTUATION)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DIGITS = re.compile(r"\d+")

Metric = Callable[..., float]


# --------------------------------------------------------------------------------------------------------- helpers


def _token_f1(prediction_tokens: Sequence[str], reference_tokens: Sequence[str]) -> float:
    """F1 of two token multisets; 0 when they share no token (also when either is empty)."""
    shared = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if shared == 0:
        return 0
    precision = 1.0 * shared / len(prediction_tokens)
    recall = 1.0 * shared / len(reference_tokens)
    return (2 * precision * recall) / (precision + recall)


def normalize_en(text: str) -> str:
    """Lowercase; delete ASCII punctuation; articles a/an/the become a space; whitespace runs become one space."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_zh(text: str) -> str:
    """Lowercase; delete ASCII and CJK punctuation (the official set: it has 》 but not 《); delete whitespace."""
    return "".join("".join(ch for ch in text.lower() if ch not in _ZH_PUNCTUATION).split())


def _jieba_words(text: str) -> list[str]:
    return list(_jieba().cut(text, cut_all=False))


@cache
def _jieba():
    """jieba, imported on first use (its import takes a tenth of a second, which `lceval tasks` need not pay)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no dictionary-loading chatter on stderr
    return jieba


def _share_of_numbers(prediction: str, wanted: str) -> float:
    """Share of the digit runs in `prediction` that equal `wanted`; 0.0 when it has none."""
    numbers = _DIGITS.findall(prediction)
    if not numbers:
        return 0.0
    return float(sum(1 for number in numbers if number == wanted) / len(numbers))


def _fuzz_ratio(first: str, second: str) -> int:
    """fuzzywuzzy 0.18.0's fuzz.ratio on difflib, whatever fuzzywuzzy would pick."""
    if fuzz.SequenceMatcher is difflib.SequenceMatcher:
        return fuzz.ratio(first, second)
    return _difflib_ratio(first, second)


def _difflib_ratio(first: str, second: str) -> int:
    """What fuzz.ratio computes without python-Levenshtein (used only where that package is installed)."""
    if first is None or second is None:
        return 0
    if first == second:
        return 100
    if not first or not second:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, first, second).ratio()))


# --------------------------------------------------------------------------------------------------------- metrics


def qa_f1_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """Token F1 after English normalisation (lowercase, no punctuation, no articles, single spaces)."""
    return _token_f1(normalize_en(prediction).split(), normalize_en(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """Token F1 over jieba words of the raw strings, each normalised (normalize_zh), empty words dropped."""

    def words(text: str) -> list[str]:
        return [word for word in map(normalize_zh, _jieba_words(text)) if word]

    return _token_f1(words(prediction), words(ground_truth))


def rouge_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """ROUGE-L F of the `rouge` package (0.0 on any error of it, including its recursion limit on long texts)."""
    return rouge_l_f1(prediction, ground_truth, headroom=OFFICIAL_ROUGE_HEADROOM)


def rouge_zh_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """rouge_score of the jieba words joined by spaces (Chinese has no '.', so a text is one long sentence)."""
    return rouge_l_f1(" ".join(_jieba_words(prediction)), " ".join(_jieba_words(ground_truth)),
                      headroom=OFFICIAL_ROUGE_ZH_HEADROOM)


def classification_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """1/k when the gold class is among the k classes mentioned in `prediction`, else 0.

    Behaviour of the official code at 2e00731 (unchanged since 2023-11-24, when the unreachable difflib fallback
    was dropped): mentions are case-sensitive substrings, in `all_classes` order; then a single pass drops mentions
    that are substrings of the gold class (but not equal to it), and that pass removes from the list it walks, so
    the mention right after each dropped one is never looked at and stays. Example: classes [A, AB, ABC],
    prediction and gold "ABC": A is dropped, AB skipped, so the score is 1/2, not 1.
    """
    mentions = [name for name in (all_classes or []) if name in prediction]
    position = 0
    while position < len(mentions):  # a list iterator: index-based, re-checking the (shrinking) length each step
        name = mentions[position]
        if name in ground_truth and name != ground_truth:
            mentions.remove(name)  # the first equal element, as list.remove does
        position += 1
    if ground_truth in mentions:
        return 1.0 / len(mentions)
    return 0.0


def retrieval_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """Share of the numbers in `prediction` equal to the gold's "Paragraph N"."""
    return _share_of_numbers(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """Share of the numbers in `prediction` equal to the gold's "段落N"."""
    return _share_of_numbers(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def count_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """Share of the numbers in `prediction` equal to the gold count."""
    return _share_of_numbers(prediction, str(ground_truth))


def code_sim_score(prediction: str, ground_truth: str, all_classes: Sequence[str] | None = None) -> float:
    """fuzz.ratio / 100 between the gold line and the first predicted line (leading newlines dropped) that holds
    no backtick, no '#' and no '//' anywhere; "" when every line does. Indentation is kept."""
    line = next((ln for ln in prediction.lstrip("\n").split("\n") if "`" not in ln and "#" not in ln
                 and "//" not in ln), "")
    return _fuzz_ratio(line, ground_truth) / 100


METRICS: dict[str, Metric] = {
    metric.__name__: metric
    for metric in (qa_f1_score, qa_f1_zh_score, rouge_score, rouge_zh_score, classification_score, retrieval_score,
                   retrieval_zh_score, count_score, code_sim_score)
}


# ----------------------------------------------------------------------------------------------------- datasets


@cache
def spec() -> dict[str, dict[str, Any]]:
    """The 21 datasets of tasks/data/longbench_spec.json (metric, category, language, first_line_only, ...)."""
    text = resources.files("lceval.tasks").joinpath("data/longbench_spec.json").read_text(encoding="utf-8")
    return json.loads(text)


def _dataset(dataset: str) -> dict[str, Any]:
    try:
        return spec()[dataset]
    except KeyError:
        raise UserError(f"unknown LongBench dataset {dataset!r}; known datasets: {', '.join(spec())}.") from None


def dataset_metric(dataset: str) -> str:
    """Name of the dataset's metric (a key of METRICS)."""
    return _dataset(dataset)["metric"]


def postprocess(dataset: str, prediction: str) -> str:
    """eval.py's only post-processing: trec, triviaqa, samsum and lsht keep the first line after leading newlines."""
    if _dataset(dataset)["first_line_only"]:
        return prediction.lstrip("\n").split("\n")[0]
    return prediction


def score_sample(dataset: str, prediction: str, answers: Sequence[str],
                 all_classes: Sequence[str] | None) -> float:
    """The best metric value over `answers` of the post-processed prediction (0.0 with no answers)."""
    metric = METRICS[dataset_metric(dataset)]
    prediction = postprocess(dataset, prediction)
    score = 0.0
    for answer in answers:
        score = max(score, metric(prediction, answer, all_classes=all_classes))
    return score


def percent_mean(scores: Sequence[float]) -> float:
    """round(100 * mean, 2), summing left to right as eval.py does (not math.fsum, not 3.12's compensated sum())."""
    if not scores:
        raise ValueError("percent_mean of no scores")
    total = 0.0
    for score in scores:
        total += score
    return round(100 * total / len(scores), 2)


def bucket_scores(scores: Sequence[float], lengths: Sequence[int]) -> dict[str, float]:
    """LongBench-E: round(100 * mean, 2) per bucket of the official `length` field (< 4000, < 8000, the rest);
    numpy's mean and numpy's rounding as eval.py has them; nan for an empty bucket."""
    buckets: dict[str, list[float]] = {name: [] for name in BUCKETS}
    for score, length in zip(scores, lengths, strict=True):
        buckets["0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"].append(score)
    return {name: float(round(100 * np.mean(values), 2)) if values else math.nan for name, values in buckets.items()}


def score_dataset(dataset: str, predictions: Sequence[str], answers: Sequence[Sequence[str]],
                  all_classes: Sequence[str] | None) -> float:
    """A dataset's score: round(100 * mean of score_sample, 2)."""
    return percent_mean([score_sample(dataset, p, a, all_classes) for p, a in zip(predictions, answers, strict=True)])


def score_dataset_e(dataset: str, predictions: Sequence[str], answers: Sequence[Sequence[str]],
                    all_classes: Sequence[str] | None, lengths: Sequence[int]) -> dict[str, float]:
    """A LongBench-E dataset's scores by length bucket: {"0-4k": ..., "4-8k": ..., "8k+": ...}."""
    scores = [score_sample(dataset, p, a, all_classes) for p, a in zip(predictions, answers, strict=True)]
    return bucket_scores(scores, lengths)


def average(scores: dict[str, float]) -> dict[str, Any]:
    """Averages of per-dataset scores (as in result.json), unrounded inputs, results rounded to 2 decimals.

    metrics.average_over_datasets: mean over the datasets given. by_category: mean of each spec category's datasets
    among them; metrics.average_over_categories: mean of those. metrics.average_over_categories_en / _zh: the
    README leaderboard's "Avg": categories of the English (resp. Chinese) datasets plus the code datasets, which
    both tables share; present when the scores include datasets of that language.
    """
    if not scores:
        raise ValueError("average of no scores")
    for dataset in scores:
        _dataset(dataset)

    def category_means(datasets: list[str]) -> dict[str, float]:
        members: dict[str, list[float]] = {}
        for dataset in datasets:
            members.setdefault(spec()[dataset]["category"], []).append(scores[dataset])
        return {category: float(np.mean(values)) for category, values in members.items()}

    by_category = category_means(list(scores))
    metrics = {"average_over_datasets": round(float(np.mean(list(scores.values()))), 2),
               "average_over_categories": round(float(np.mean(list(by_category.values()))), 2)}
    for language in ("en", "zh"):
        if any(spec()[d]["language"] == language for d in scores):
            datasets = [d for d in scores if spec()[d]["language"] in (language, *CODE_LANGUAGES)]
            metrics[f"average_over_categories_{language}"] = round(
                float(np.mean(list(category_means(datasets).values()))), 2)
    return {"metrics": metrics, "by_category": {c: round(v, 2) for c, v in by_category.items()}}


# -------------------------------------------------------------------------------------------- prediction folders


# Metrics that read the gold answer through str() in eval.py, and so score answers of any JSON type (passage_count's
# integers); the others call string methods on it and need strings.
STR_ANSWER_METRICS = ("count_score",)


def _read_predictions(path: Path, e: bool, dataset: str = "") -> tuple[list[str], list[list[Any]], list[int], Any]:
    """pred, answers and length of each line, and all_classes of the last line (eval.py takes the last one).

    Answers must be strings, except where eval.py's metric takes str() of them (passage_count's count_score)."""
    any_answer = bool(dataset) and dataset_metric(dataset) in STR_ANSWER_METRICS
    predictions: list[str] = []
    answers: list[list[str]] = []
    lengths: list[int] = []
    all_classes: Any = None
    required = ("pred", "answers", "all_classes", "length") if e else ("pred", "answers", "all_classes")
    for number, row in numbered_rows(path):
        where = f"{path} line {number}"
        missing = [name for name in required if name not in row]
        if missing:
            raise UserError(f"{where} lacks the field {missing[0]!r}; each line must hold "
                            f"{', '.join(required)} as LongBench's pred.py writes them.")
        if not isinstance(row["pred"], str):
            raise UserError(f"{where}: pred is not a string; write the model's output text there.")
        if not isinstance(row["answers"], list):
            raise UserError(f"{where}: answers is not a list; copy the dataset's answers field.")
        if not any_answer and not all(isinstance(a, str) for a in row["answers"]):
            raise UserError(f"{where}: answers is not a list of strings; copy the dataset's answers field.")
        if row["all_classes"] is not None and not (isinstance(row["all_classes"], list)
                                                   and all(isinstance(c, str) for c in row["all_classes"])):
            raise UserError(f"{where}: all_classes is neither null nor a list of strings; copy the dataset's "
                            "all_classes field.")
        if e and (isinstance(row["length"], bool) or not isinstance(row["length"], (int, float))):
            raise UserError(f"{where}: length is not a number; copy the dataset's length field.")
        predictions.append(row["pred"])
        answers.append(row["answers"])
        lengths.append(row.get("length"))
        all_classes = row["all_classes"]
    if not predictions:
        raise UserError(f"{path} holds no predictions; delete it or rerun the predictions of that dataset.")
    return predictions, answers, lengths, all_classes


def _write_result(path: Path, result: dict[str, Any]) -> None:
    """result.json as eval.py writes it (indent 4, non-ASCII kept, no final newline), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=4), encoding="utf-8")
    os.replace(tmp, path)


def score_pred_dir(pred_dir: Path, e: bool = False) -> tuple[dict[str, Any], Path]:
    """Score every <dataset>.jsonl of `pred_dir` (official pred.py format) and write `pred_dir/result.json`.

    Keys come in the folder's listing order (os.listdir, as eval.py), so the file matches eval.py's byte for byte;
    values are dataset scores, or with `e` the bucket scores of each dataset. Every file is read and checked before
    anything is written; result.json is replaced atomically.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder {pred_dir} does not exist or is not a folder; pass the folder that "
                        "holds the <dataset>.jsonl files.")
    names = [name for name in os.listdir(pred_dir) if name.endswith(".jsonl")]
    if not names:
        raise UserError(f"{pred_dir} holds no .jsonl prediction files; pass the folder with one <dataset>.jsonl "
                        "per LongBench dataset.")
    datasets = {}
    for name in names:
        dataset = name[: -len(".jsonl")]
        if dataset not in spec():
            raise UserError(f"{pred_dir / name} is not named after a LongBench dataset; rename or move it (known "
                            f"datasets: {', '.join(spec())}).")
        datasets[dataset] = _read_predictions(pred_dir / name, e, dataset)
    result: dict[str, Any] = {}
    for dataset, (predictions, answers, lengths, all_classes) in datasets.items():
        if e:
            result[dataset] = score_dataset_e(dataset, predictions, answers, all_classes, lengths)
        else:
            result[dataset] = score_dataset(dataset, predictions, answers, all_classes)
    path = pred_dir / RESULT_FILE
    _write_result(path, result)
    return result, path
