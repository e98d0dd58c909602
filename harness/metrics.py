"""Per-sample metrics. One implementation of each; tasks, the CLI and re-scoring all call these.

ROUGE-L uses the `rouge` 1.0.1 package exactly as LongBench's official metrics.py does (its F score, and 0 when
the package raises, e.g. on an empty prediction or when its recursion limit is hit).
"""

from __future__ import annotations

from rouge import Rouge

# Pinned metric libraries, recorded in every manifest (they change scores).
METRIC_LIBRARIES = ("rouge", "fuzzywuzzy", "jieba")


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of `prediction` against `reference` (0.0 where the package cannot score)."""
    try:
        scores = Rouge().get_scores([prediction], [reference], avg=True)
    except Exception:  # the official scorer swallows every error of the package as a 0
        return 0.0
    return float(scores["rouge-l"]["f"])


def substring_match(prediction: str, answers: list[str]) -> float:
    """Share of `answers` found in `prediction`, case-insensitively (RULER's string_match_all)."""
    if not answers:
        return 0.0
    lowered = prediction.lower()
    return sum(1.0 for answer in answers if answer.lower() in lowered) / len(answers)
