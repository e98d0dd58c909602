"""InfiniteBench scoring, value for value the official scorer's (OpenBMB/InfiniteBench, src/compute_scores.py).

Two official versions exist and give different numbers, so the version is always chosen and recorded:

* ``v-a``: the June 2024 state, commit 88b3daa6989da2fbe0077170d7a3c84c25d5ae58 (2024-06-13). It reproduces the
  table of the official README from the official prediction files.
* ``v-b``: the August 2024 state, commit ae04ef161b0d2e99eb77c0e845630b44e655bc65 (2024-08-25; compute_scores.py is
  the same at 51d9b37, the upstream head third-party ports pin). It is v-a plus three changes: 214808d (En.Dia:
  any label as a case-insensitive substring), ae0cdc5 / PR #22 (Code.Debug and En.MC: the last standalone option
  letter first; Code.Debug drops the "<letter>." opening rule for a starts-with test after normalisation) and
  ae04ef1 (Retrieve.KV unwraps a list label).

A sample's label is the pred files' ``ground_truth`` as the official pred scripts write it: the dataset's
``answer`` unchanged, except [option text, letter] for longbook_choice_eng and code_debug. A task scores the plain
mean of its sample scores (``sum(scores) / len(scores)``, unrounded, as compute_scores.py prints it); the README
reports ``round(100 * mean, 2)``.

Library pins that change scores: rouge-score 0.1.2 for En.Sum. The official scorer calls it through
``evaluate.load("rouge")`` (evaluate 0.4.1, which fetches the metric script from the Hub); that script builds a
``RougeScorer`` with no stemmer and, for a list label, takes ``score_multi`` (the best reference), which is called
directly here. This is ROUGE-Lsum of rouge_score (lines split on newlines, ASCII alphanumeric tokens), not the ROUGE-L
of the `rouge` package in lceval.metrics.text.rouge_l_f1, and gives other numbers. En.QA and Zh.QA reuse LongBench's
normalisation (the official code is the same); Zh.QA scores characters, not jieba words.

Deliberate differences from the official scorer, all where it has no number to give:

* math_find with an integer label and a decimal first number in the prediction ("12.5"): the official scorer stops
  with ValueError, losing the whole run. Here the sample scores 0.0 (it is a wrong answer), and `score_pred_dir`
  lists such lines under ``official_scorer_would_stop``.
* Ground truths the official scorer cannot handle (it raises) raise `GroundTruthError` here. For En.Sum a label must
  be a string or a non-empty list of strings; the official path through `evaluate` stringifies numbers inside a list.
* In prediction files, a line without ``ground_truth`` (or ``label``) or without ``prediction`` (or ``pred``) is an
  error; the official scorer reads a missing label as "XXXXXXXXXX".
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError
from lceval.api.run_folder import write_json
from lceval.metrics.longbench import _token_f1, normalize_zh
from lceval.metrics.longbench import qa_f1_score as _longbench_qa_f1
from lceval.tasks.benchmark_data import numbered_rows

SCORERS = ("v-a", "v-b")
SCORER_COMMITS = {
    "v-a": "88b3daa6989da2fbe0077170d7a3c84c25d5ae58",
    "v-b": "ae04ef161b0d2e99eb77c0e845630b44e655bc65",
}
# compute_scores.py's ALL_TASKS, in its order; the two kv_retrieval variants are scored like kv_retrieval.
TASKS = (
    "passkey", "number_string", "kv_retrieval", "longdialogue_qa_eng", "longbook_sum_eng", "longbook_choice_eng",
    "longbook_qa_eng", "longbook_qa_chn", "math_find", "math_calc", "code_run", "code_debug",
)
TASK_ALIASES = {"kv_retrieval_prefix": "kv_retrieval", "kv_retrieval_both": "kv_retrieval"}
# args.py --model_name: its default, and its choices (compute_scores.py reads results/<model_name>/).
DEFAULT_MODEL_NAME = "gpt4"
OFFICIAL_MODEL_NAMES = ("gpt4", "yarn-mistral", "kimi", "claude2", "rwkv", "yi-6b-200k", "yi-34b-200k", "chatglm3")
RESULT_FILE = "result.json"  # the official compute_scores.py prints its scores and writes no file

_KV_SEPARATORS = ("\n", ":", '"', "'", ".", ",", "?", "!", "{", "}")
_CHOICE_SEPARATORS = ("\n", '"', "'", ".", ",", "?", "!", "{", "}")
_CODE_RUN_SEPARATORS = ("\n", ".", "`", "'", '"', ":")
_CODE_DEBUG_SEPARATORS = ("\n", "`", "'", '"', "-", "*", "Option", "option")
_CHOICE_PREFIXES = ("answer is:", "answer:", "answer is", "option is")
_CODE_DEBUG_PREFIXES = ("answer is:", "is:", "answer:", "correct option is:")  # "is:" shadows the last one
_LAST_LETTER_A_D = re.compile(r"\b[A-D]\b(?!.*\b[A-D]\b)")  # no DOTALL: the first line that has a letter
_LAST_LETTER_A_J = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_FIRST_NUMBER = re.compile(r"\d+\.\d+|\d+")  # \d: any Unicode decimal digit, as the official pattern


class GroundTruthError(ValueError):
    """A ground truth the official scorer cannot score (it raises on it)."""


# --------------------------------------------------------------------------------------------------------- helpers


def _spaced(text: str, separators: Sequence[str]) -> str:
    """Each separator in turn replaced by a space."""
    for separator in separators:
        text = text.replace(separator, " ")
    return text


def _single_spaced(text: str) -> str:
    """Double spaces collapsed until none is left (other whitespace untouched)."""
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def _int(text: str) -> int:
    """int(text), also past the 4300-digit limit Python 3.11 put on str -> int (the official ran before it)."""
    try:
        return int(text)
    except ValueError as err:
        if "limit" not in str(err):
            raise
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    digits = "".join(str(unicodedata.decimal(ch)) for ch in body.lstrip("+-") if ch != "_")
    value = 0
    for start in range(0, len(digits), 4000):
        chunk = digits[start:start + 4000]
        value = value * 10 ** len(chunk) + int(chunk)
    return sign * value


def first_int(prediction: str) -> str:
    """The first run of ASCII digits in `prediction`, or "" (compute_scores.first_int_match)."""
    found = _ASCII_DIGITS.search(prediction)
    return found.group(0) if found else ""


def _unwrap(label: Any) -> Any:
    return label[0] if isinstance(label, list) else label


@cache
def _rouge_lsum_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)


# ------------------------------------------------------------------------------------------------ per-task rules


def score_passkey(prediction: str, label: Any) -> float:
    """Retrieve.PassKey: the (first, if a list) label equals the first ASCII digit run, compared as strings."""
    return float(_unwrap(label) == first_int(prediction))


def score_number_string(prediction: str, label: Any) -> float:
    """Retrieve.Number: the same rule as passkey ("99999 then 71432" is wrong)."""
    return float(_unwrap(label) == first_int(prediction))


def score_kv_retrieval_va(prediction: str, label: Any) -> float:
    """Retrieve.KV (v-a): the label is one of the words after \\n : " ' . , ? ! { } became spaces ("-" stays, so a
    UUID is one word). A list label is compared as a list, so it never matches: v-a scores 0 on every line of the
    current data files, whose answers are lists."""
    return float(label in _spaced(prediction, _KV_SEPARATORS).split())


def score_kv_retrieval_vb(prediction: str, label: Any) -> float:
    """Retrieve.KV (v-b): as v-a, with a list label unwrapped to its first element."""
    return float(_unwrap(label) in _spaced(prediction, _KV_SEPARATORS).split())


def score_longbook_sum_eng(prediction: str, label: Any) -> float:
    """En.Sum: rouge_score 0.1.2 ROUGE-Lsum F (no stemmer); a list label takes the best reference (score_multi)."""
    scorer = _rouge_lsum_scorer()
    if isinstance(label, str):
        return float(scorer.score(label, prediction)["rougeLsum"].fmeasure)
    if not isinstance(label, list) or not label or not all(isinstance(ref, str) for ref in label):
        raise GroundTruthError("an En.Sum label must be a string or a non-empty list of strings")
    return float(scorer.score_multi(label, prediction)["rougeLsum"].fmeasure)


def score_longbook_qa_eng(prediction: str, label: Any) -> float:
    """En.QA: best token F1 over the labels after SQuAD/LongBench normalisation (a string label iterates its
    characters, as the official loop does)."""
    best = 0.0
    for answer in label:
        best = max(best, _longbench_qa_f1(prediction, answer))
    return float(best)


def score_longbook_qa_chn(prediction: str, label: Any) -> float:
    """Zh.QA: best F1 over the labels, one character one token, after normalising the whole string (lowercase, no
    ASCII or CJK punctuation, no whitespace)."""
    best = 0.0
    for answer in label:
        best = max(best, _token_f1(list(normalize_zh(prediction)), list(normalize_zh(answer))))
    return float(best)


def _choice_rules(prediction: str, label: Any) -> bool:
    """En.MC as v-a reads it; `prediction` is stripped."""
    if prediction == "":
        return False
    if prediction[0] in "ABCD":  # any opening capital A-D, "Based on ..." included
        return prediction[0] in label
    if prediction in label:
        return True
    text = _single_spaced(_spaced(prediction, _CHOICE_SEPARATORS))
    found, rest = _after_answer_prefix(text, _CHOICE_PREFIXES)
    if found:
        return rest is not None and any(rest.startswith(option) for option in label)
    for word in text.split():
        if word in "ABCD":  # a substring test: "AB" and "BCD" count as well
            return word in label
    return False


def score_longbook_choice_eng_va(prediction: str, label: Any) -> float:
    """En.MC (v-a), label [option text, letter]: the opening letter, else the exact option, else the text after an
    answer prefix, else the first word that is a substring of "ABCD"."""
    return float(_choice_rules(prediction.strip(), label))


def score_longbook_choice_eng_vb(prediction: str, label: Any) -> float:
    """En.MC (v-b): first the last standalone A-D of the first line that has one; if it is not the label's letter,
    the v-a rules."""
    prediction = prediction.strip()
    found = _LAST_LETTER_A_D.search(prediction)
    if found and found.group(0) in label:
        return 1.0
    return float(_choice_rules(prediction, label))


def score_longdialogue_qa_eng_va(prediction: str, label: Any) -> float:
    """En.Dia (v-a): only the first label, as is (not uppercased), must equal one uppercased word of the prediction
    after the retrieval separators became spaces; so a multi-word name never matches."""
    name = label[0]
    words = [word.upper() for word in _spaced(prediction.strip(), _KV_SEPARATORS).split()]
    return float(name in words)


def score_longdialogue_qa_eng_vb(prediction: str, label: Any) -> float:
    """En.Dia (v-b): any label, uppercased, is a substring of the uppercased prediction."""
    text = prediction.strip().upper()
    return float(any(name.upper() in text for name in label))


def _after_answer_prefix(text: str, prefixes: Sequence[str]) -> tuple[bool, str | None]:
    """Whether one of `prefixes` (tried in order) occurs in `text`, and what follows it past one character (None
    where the text ends right at the prefix, which the official rules count as wrong)."""
    for prefix in prefixes:
        at = text.find(prefix)
        if at != -1:
            end = at + len(prefix)
            return True, (None if len(text) < end + 1 else text[end + 1:])
    return False, None


def _code_debug_prefix_rule(text: str, letter: Any, function: Any) -> bool:
    found, rest = _after_answer_prefix(text, _CODE_DEBUG_PREFIXES)
    return found and rest is not None and (rest.startswith(letter) or rest.startswith(function))


def score_code_debug_va(prediction: str, label: Any) -> float:
    """Code.Debug (v-a), label [function name, letter]: the prediction opens with "<letter>." or "<letter>:", or after
    normalisation the text after the first answer prefix starts with the letter or the function name."""
    prediction = prediction.strip()
    letter, function = label[1], label[0]
    if prediction[:2] in (f"{letter}.", f"{letter}:"):
        return 1.0
    text = _single_spaced(_spaced(prediction.strip(), _CODE_DEBUG_SEPARATORS))
    return float(_code_debug_prefix_rule(text, letter, function))


def score_code_debug_vb(prediction: str, label: Any) -> float:
    """Code.Debug (v-b): the last standalone A-J of the first line that has one equals the letter (English "A" and
    "I" count), or the normalised text starts with the letter or the function name, or the v-a prefix rule."""
    prediction = prediction.strip()
    letter, function = label[1], label[0]
    found = _LAST_LETTER_A_J.search(prediction)
    if found and found.group(0) == letter:
        return 1.0
    text = _single_spaced(_spaced(prediction.strip(), _CODE_DEBUG_SEPARATORS))
    if text.startswith(letter) or text.startswith(function):
        return 1.0
    return float(_code_debug_prefix_rule(text, letter, function))


def score_code_run(prediction: str, label: Any) -> float:
    """Code.Run: the last word (after \\n . ` ' " : became spaces) read by int() equals the (first) label; a word
    int() refuses ("5,") scores 0."""
    label = _unwrap(label)
    words = _spaced(prediction.strip(), _CODE_RUN_SEPARATORS).split()
    if not words:
        return 0.0
    try:
        return float(label == _int(words[-1]))
    except Exception:  # the official rule counts every failure as wrong
        return 0.0


def _math_find_number(prediction: str) -> str | None:
    found = _FIRST_NUMBER.search(prediction)
    return found.group(0).strip() if found else None


def _math_find_official_stops(prediction: str, label: Any) -> bool:
    """Whether the official scorer raises on this sample (an int label, a decimal first number)."""
    label = _unwrap(label)
    number = _math_find_number(prediction)
    return isinstance(label, int) and number is not None and "." in number


def score_math_find(prediction: str, label: Any) -> float:
    """Math.Find: the first unsigned number ("-5" reads 5) equals the (first) label, as int for an int label and
    as float for a float label. A decimal against an int label scores 0.0 (the official scorer raises)."""
    label = _unwrap(label)
    if not isinstance(label, (int, float)):  # a bool passes as an int, as in the official isinstance test
        raise GroundTruthError(f"a Math.Find label must be a number, not {type(label).__name__}")
    number = _math_find_number(prediction)
    if number is None:
        return 0.0
    if isinstance(label, int):
        if "." in number:
            return 0.0
        return float(_int(number) == label)
    return float(float(number) == label)


def score_math_calc(prediction: str, label: Any, model_name: str = DEFAULT_MODEL_NAME) -> float:
    """Math.Calc: the share of the label's values matched, in order from the first, by the prediction's ASCII digit
    runs (minus signs are lost). With model_name "gpt4" (the official default) the first number of the prediction
    is dropped first, since the official GPT-4 prompt makes it echo the first operand."""
    if not isinstance(label, list):
        raise GroundTruthError(f"a Math.Calc label must be a list, not {type(label).__name__}")
    if isinstance(label[0], list):
        label = label[0]
    numbers = _ASCII_DIGITS.findall(prediction)
    if model_name == "gpt4":
        numbers = numbers[1:]
    matched = 0
    for expected, found in zip(label, numbers, strict=False):
        if expected != _int(found):
            break
        matched += 1
    return matched / len(label)


_SHARED = {
    "passkey": score_passkey,
    "number_string": score_number_string,
    "longbook_sum_eng": score_longbook_sum_eng,
    "longbook_qa_eng": score_longbook_qa_eng,
    "longbook_qa_chn": score_longbook_qa_chn,
    "code_run": score_code_run,
    "math_find": score_math_find,
    "math_calc": score_math_calc,
}
RULES: dict[str, dict[str, Callable[..., float]]] = {
    "v-a": {**_SHARED, "kv_retrieval": score_kv_retrieval_va, "longbook_choice_eng": score_longbook_choice_eng_va,
            "longdialogue_qa_eng": score_longdialogue_qa_eng_va, "code_debug": score_code_debug_va},
    "v-b": {**_SHARED, "kv_retrieval": score_kv_retrieval_vb, "longbook_choice_eng": score_longbook_choice_eng_vb,
            "longdialogue_qa_eng": score_longdialogue_qa_eng_vb, "code_debug": score_code_debug_vb},
}


# ------------------------------------------------------------------------------------------------- samples, tasks


def check_scorer(scorer: str) -> str:
    if scorer not in SCORERS:
        raise UserError(f"unknown InfiniteBench scorer {scorer!r}; use v-a (June 2024, the published table) or v-b "
                        "(August 2024).")
    return scorer


def _rule(task: str, scorer: str) -> Callable[..., float]:
    check_scorer(scorer)
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise UserError(f"unknown InfiniteBench task {task!r}; tasks: {', '.join(TASKS)}.")
    return RULES[scorer][name]


def score_sample(task: str, prediction: str, ground_truth: Any, scorer: str = "v-a",
                 model_name: str = DEFAULT_MODEL_NAME) -> float:
    """One prediction's official score in [0, 1].

    `ground_truth` is what the official pred scripts write (see the module notes). `model_name` matters only for
    math_calc, where "gpt4" (the official --model_name default) drops the prediction's first number; pass the name
    of another model family (e.g. "yarn-mistral") for completion-style prompts that do not echo the first operand.
    Raises GroundTruthError where the official scorer would raise on the ground truth.
    """
    rule = _rule(task, scorer)
    if not isinstance(prediction, str):
        raise TypeError(f"an InfiniteBench prediction must be a string, not {type(prediction).__name__}")
    try:
        if rule is score_math_calc:
            return float(rule(prediction, ground_truth, model_name=model_name))
        return float(rule(prediction, ground_truth))
    except GroundTruthError:
        raise
    except (TypeError, IndexError, KeyError, AttributeError, ValueError, ZeroDivisionError) as err:
        raise GroundTruthError(f"the official {scorer} scorer cannot score {task} against the ground truth "
                               f"{_short(ground_truth)} ({type(err).__name__}: {err})") from err


def score_task(task: str, predictions: Sequence[str], ground_truths: Sequence[Any], scorer: str = "v-a",
               model_name: str = DEFAULT_MODEL_NAME) -> float:
    """A task's official score: the plain mean of its sample scores, in [0, 1] and unrounded."""
    _rule(task, scorer)
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions but {len(ground_truths)} ground truths for {task}")
    if not predictions:
        raise ValueError(f"no predictions to score for {task}")
    scores = [score_sample(task, p, g, scorer, model_name) for p, g in zip(predictions, ground_truths, strict=True)]
    return mean_score(scores)


def mean_score(sample_scores: Sequence[float]) -> float:
    """A task's official score from its sample scores: sum / len, unrounded, as compute_scores.py prints it."""
    return sum(sample_scores) / len(sample_scores)


def percent(score: float) -> float:
    """A task score as the README reports it: x100, 2 decimals."""
    return round(100 * score, 2)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------------------------- prediction folders


def _read_preds(path: Path) -> list[tuple[int, str, Any]]:
    """(line number, prediction, ground truth) of each non-blank line, keys as compute_scores reads them."""
    rows: list[tuple[int, str, Any]] = []
    label_key = None
    for number, row in numbered_rows(path):
        where = f"{path} line {number}"
        if label_key is None:  # the first line decides, as get_labels does
            label_key = next((key for key in ("ground_truth", "label") if key in row), None)
            if label_key is None:
                raise UserError(f"{where} lacks the field 'ground_truth'; each line must hold prediction and "
                                "ground_truth as the official pred scripts write them.")
        if label_key not in row:
            raise UserError(f"{where} lacks the field {label_key!r} that the file's first line has; add it or "
                            "delete that line.")
        pred_key = next((key for key in ("prediction", "pred") if key in row), None)
        if pred_key is None:
            raise UserError(f"{where} lacks the field 'prediction'; each line must hold prediction and "
                            "ground_truth as the official pred scripts write them.")
        if not isinstance(row[pred_key], str):
            raise UserError(f"{where}: {pred_key} is not a string; write the model's output text there.")
        rows.append((number, row[pred_key], row[label_key]))
    if not rows:
        raise UserError(f"{path} holds no predictions; delete it or rerun the predictions of that task.")
    return rows


def _model_name_for(pred_dir: Path) -> str:
    """The official scorer reads results/<model_name>/; a folder with another name gets the default --model_name."""
    name = pred_dir.resolve().name
    return name if name in OFFICIAL_MODEL_NAMES else DEFAULT_MODEL_NAME


def score_pred_dir(pred_dir: Path, scorer: str = "v-a", model_name: str | None = None) -> tuple[dict[str, Any], Path]:
    """Score every preds_<task>.jsonl of `pred_dir` as compute_scores.py does and write `pred_dir/result.json`.

    The result holds the scorer version and its commit, the model name used (it matters for math_calc only: the
    folder's name when it is one of the official --model_name choices, else the official default "gpt4", unless
    given), per task the official score (``scores``, unrounded in [0, 1]), the README's form (``scores_x100``) and
    the number of lines. Files of other tasks (such as the official preds_code_debug_step_by_step.jsonl) are listed
    under ``ignored_files``. Every file is read and scored before anything is written; the write is atomic.
    """
    check_scorer(scorer)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder {pred_dir} does not exist or is not a folder; pass the folder that holds "
                        "the preds_<task>.jsonl files.")
    model = model_name or _model_name_for(pred_dir)
    names = sorted(n for n in os.listdir(pred_dir) if n.startswith("preds_") and n.endswith(".jsonl"))
    known = {}
    for name in names:
        task = name[len("preds_"):-len(".jsonl")]
        if task in TASKS or task in TASK_ALIASES:
            known[task] = name
    if not known:
        raise UserError(f"{pred_dir} holds no preds_<task>.jsonl files of InfiniteBench tasks; pass the folder the "
                        f"official pred scripts wrote (tasks: {', '.join(TASKS)}).")
    scores: dict[str, float] = {}
    counts: dict[str, int] = {}
    would_stop: dict[str, list[int]] = {}
    for task in (*TASKS, *TASK_ALIASES):
        if task not in known:
            continue
        path = pred_dir / known[task]
        sample_scores = []
        for number, prediction, ground_truth in _read_preds(path):
            try:
                sample_scores.append(score_sample(task, prediction, ground_truth, scorer, model))
            except GroundTruthError as err:
                raise UserError(f"{path} line {number}: {err}; copy the dataset's answer there as the official pred "
                                "scripts write it.") from None
            if task == "math_find" and _math_find_official_stops(prediction, ground_truth):
                would_stop.setdefault(task, []).append(number)
        scores[task] = mean_score(sample_scores)
        counts[task] = len(sample_scores)
    result: dict[str, Any] = {
        "benchmark": "infinitebench",
        "scorer": scorer,
        "scorer_commit": SCORER_COMMITS[scorer],
        "model_name": model,
        "scores": scores,
        "scores_x100": {task: percent(value) for task, value in scores.items()},
        "n": counts,
    }
    ignored = [n for n in names if n not in known.values()]
    if ignored:
        result["ignored_files"] = ignored
    if would_stop:
        result["official_scorer_would_stop"] = would_stop
    path = pred_dir / RESULT_FILE
    write_json(path, result)
    return result, path
