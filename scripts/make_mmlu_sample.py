"""Write lceval's bundled MMLU-format sample (tasks/data/mmlu) in the original release's CSV layout.

The questions are this project's own toy arithmetic items, one file per subject and split, so that lm-eval's
MMLU task definitions can run offline on the demo model; they measure nothing about any subject.
"""

import csv
import random
import sys
from pathlib import Path

from lceval.tasks.mmlu_data import LETTERS, subjects

SPLITS = {"dev": 5, "test": 2}


def row(rng: random.Random, subject: str) -> list[str]:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    right = a + b
    wrong = rng.sample([n for n in range(right - 9, right + 10) if n != right and n > 0], 3)
    answer = rng.randrange(4)
    choices = [str(n) for n in wrong]
    choices.insert(answer, str(right))
    topic = subject.replace("_", " ")
    return [f"In this {topic} exercise, what is {a} plus {b}?", *choices, LETTERS[answer]]


def main(out: Path) -> None:
    rng = random.Random(0)
    for subject in subjects():
        for split, count in SPLITS.items():
            folder = out / "data" / split
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(row(rng, subject) for _ in range(count))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tasks/data/mmlu")
