"""The needle haystack is tokenized once, yet its ids are those of the doubling search that tokenized each try."""

from __future__ import annotations

import numpy as np
import pytest

from lceval.tasks.haystack import generated_text, haystack_text
from lceval.tasks.needle import NeedleTask, sentence_starts


def doubling_search(task: NeedleTask, tokenizer, n_tokens: int) -> tuple[list[int], list[int]]:
    """The search as it was: texts of 6 characters a token (at least 2000), doubled until one holds > n_tokens."""
    n_chars = max(n_tokens * 6, 2000)
    while True:
        text = haystack_text(task.opts.haystack, n_chars, task.opts.haystack_seed)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = list(enc["input_ids"])
        if len(ids) > n_tokens:
            return ids[:n_tokens], [s for s in sentence_starts(text, enc["offset_mapping"]) if s <= n_tokens]
        n_chars *= 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("haystack")
    for i in range(3):
        (path / f"b{i}.txt").write_text(generated_text(3000 + 1000 * i, seed=10 + i))
    return path


@pytest.mark.parametrize("source", ["generated", "noise", "folder"])
def test_one_tokenization_gives_the_ids_and_sentences_of_the_doubling_search(demo_tokenizer, folder, source):
    task = NeedleTask({"lengths": [1000], "haystack": str(folder) if source == "folder" else source,
                       "haystack_seed": 3})
    # Lengths near and far from where the texts of the doubling search end (small ones end near often).
    for n in sorted(set(np.geomspace(20, 40_000, 90 if source == "generated" else 30).astype(int).tolist())):
        assert task._haystack(demo_tokenizer, n) == doubling_search(task, demo_tokenizer, n), n


def test_generated_text_is_the_same_from_its_kept_paragraphs():
    from lceval.tasks import haystack

    def fresh(n_chars: int, seed: int) -> str:
        parts, total = [], 0
        for paragraph in haystack.generated_paragraphs(seed):
            parts.append(paragraph)
            total += len(paragraph) + 2
            if total >= n_chars:
                break
        return "\n\n".join(parts)

    for n in (0, 1, 2000, 123_457, 5000, 300_000, 77):
        for seed in (0, 1):
            assert generated_text(n, seed) == fresh(n, seed)
    haystack.forget_generated()
    assert generated_text(4321, 2) == fresh(4321, 2)
