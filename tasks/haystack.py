"""Haystack text for retrieval tasks: lceval's own generated English, a folder of .txt files, or a dataset column.

The generated haystack is seeded and built from the word lists in data/haystack.yaml, so it is the same on
every machine and carries no third-party text.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from lceval.api.errors import UserError
from lceval.tasks.benchmark_data import data_yaml

GENERATED = "generated"
NOISE = "noise"
# The passkey filler of Landmark Attention and LongLoRA, verbatim (benchmark data).
NOISE_UNIT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@cache
def _vocabulary() -> dict:
    return data_yaml("haystack")


def generated_paragraphs(seed: int = 0) -> Iterator[str]:
    """Endless paragraphs of 3 to 7 varied sentences, deterministic from `seed`."""
    vocab = _vocabulary()
    patterns = vocab["patterns"]
    slots = {key: values for key, values in vocab.items() if key != "patterns"}
    rng = random.Random(seed)
    while True:
        sentences = []
        for _ in range(rng.randint(3, 7)):
            pattern = rng.choice(patterns)
            fill = {key: rng.choice(values) for key, values in slots.items()}
            fill["number"] = str(rng.randint(2, 99))
            sentence = pattern.format(**fill)
            sentences.append(sentence[0].upper() + sentence[1:])
        yield " ".join(sentences)


# seed -> the paragraphs generated so far, their running lengths (each + 2 for its separator), and the generator:
# a longer text of a seed starts with every shorter one, so each paragraph is generated once per process.
_GENERATED: dict[int, tuple[list[str], list[int], Iterator[str]]] = {}


def generated_text(n_chars: int, seed: int = 0) -> str:
    """At least `n_chars` characters of generated haystack, paragraphs separated by blank lines: the fewest
    paragraphs whose lengths, each counted with its 2-character separator, reach `n_chars`."""
    paragraphs, totals, source = _GENERATED.setdefault(seed, ([], [], generated_paragraphs(seed)))
    while not totals or totals[-1] < n_chars:
        paragraph = next(source)
        paragraphs.append(paragraph)
        totals.append((totals[-1] if totals else 0) + len(paragraph) + 2)
    return "\n\n".join(paragraphs[: bisect.bisect_left(totals, n_chars) + 1])


def forget_generated() -> None:
    """Drop the generated paragraphs kept for reuse (benchmarks that time a cold build)."""
    _GENERATED.clear()


def folder_text(folder: Path) -> str:
    """All .txt files of `folder` in sorted name order (not filesystem order), separated by blank lines."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise UserError(f"haystack folder {folder} holds no .txt files; point needle.haystack at a folder of them.")
    return "\n\n".join(path.read_text(encoding="utf-8", errors="replace").strip() for path in files)


def dataset_text(spec: str) -> str:
    """Text of a dataset column, `hf:NAME_OR_PATH:SPLIT:COLUMN`, rows separated by blank lines."""
    parts = spec.split(":")
    if len(parts) != 4 or not all(parts[1:]):
        raise UserError(f"haystack {spec!r} is not of the form hf:NAME_OR_PATH:SPLIT:COLUMN.")
    _, name, split, column = parts
    try:
        import datasets
    except ImportError as err:
        raise UserError("a dataset haystack needs the `datasets` package; run `pip install datasets`.") from err
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as err:  # the hub or the folder said no; say which dataset
        raise UserError(f"could not load dataset {name!r} split {split!r} for the haystack: {err}") from err
    if column not in rows.column_names:
        raise UserError(f"dataset {name!r} has no column {column!r}; it has {', '.join(rows.column_names)}.")
    return "\n\n".join(str(text).strip() for text in rows[column])


def haystack_text(source: str, min_chars: int, seed: int = 0) -> str:
    """The haystack named by `source` ('generated', 'noise', a folder, or hf:...), at least `min_chars` long."""
    if source == GENERATED:
        return generated_text(min_chars, seed)
    if source == NOISE:
        return " ".join([NOISE_UNIT] * (min_chars // len(NOISE_UNIT) + 1))
    if source.startswith("hf:"):
        text = dataset_text(source)
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(f"haystack folder {folder} does not exist; pass a folder of .txt files or 'generated'.")
        text = folder_text(folder)
    if not text.strip():
        raise UserError(f"haystack {source} is empty; give it some text.")
    repeats = -(-min_chars // (len(text) + 2))
    return "\n\n".join([text] * max(repeats, 1))
