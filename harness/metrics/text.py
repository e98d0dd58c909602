"""Per-sample metrics. One implementation of each; tasks, the CLI and re-scoring all call these.

ROUGE-L uses the `rouge` 1.0.1 package exactly as LongBench's official metrics.py does (its F score, and 0 when
the package raises, e.g. on an empty prediction or when its recursion limit is hit).
"""

from __future__ import annotations

import sys

from rouge import Rouge


def rouge_l_f1(prediction: str, reference: str, *, headroom: int | None = None) -> float:
    """ROUGE-L F1 of `prediction` against `reference` (0.0 where the package cannot score).

    The package rebuilds each LCS recursively, so long single-sentence texts raise RecursionError (scored 0.0), and
    where that happens depends on how deep the caller's stack already is. With `headroom`, the package runs with
    exactly that many frames left (as `stack_headroom()` counts them here), wherever this is called from: pass the
    headroom the official scorer had to reproduce its zeros at the same lengths. The recursion limit is changed for
    the duration of the call only (it is process-wide: other threads see it too).
    """
    saved = sys.getrecursionlimit()
    if headroom is not None:
        sys.setrecursionlimit(saved + headroom - stack_headroom())
    try:
        scores = Rouge().get_scores([prediction], [reference], avg=True)
    except Exception:  # the official scorer swallows every error of the package as a 0
        return 0.0
    finally:
        if headroom is not None:
            sys.setrecursionlimit(saved)
    return float(scores["rouge-l"]["f"])


def stack_headroom() -> int:
    """How many more nested Python calls the caller of this function can make before RecursionError."""

    def descend(depth: int) -> int:
        try:
            return descend(depth + 1)
        except RecursionError:
            return depth

    return descend(0)


def substring_match(prediction: str, answers: list[str]) -> float:
    """Share of `answers` found in `prediction`, case-insensitively (RULER's string_match_all)."""
    if not answers:
        return 0.0
    lowered = prediction.lower()
    return sum(1.0 for answer in answers if answer.lower() in lowered) / len(answers)


def all_found(prediction: str, keys: list[str]) -> float:
    """1.0 when every key appears in `prediction`, case-insensitively, else 0.0: a pass/fail score that counts a
    paraphrase holding the key facts as found and a wrong fact as missed (RULER scores by its keys this way)."""
    lowered = prediction.lower()
    return float(bool(keys) and all(key.lower() in lowered for key in keys))
