"""Prompts built in token ids of the model's own tokenizer, so that lengths are exact.

A task's text is encoded without special tokens and wrapped in the ids of the model's chat template (or only
its BOS when the template is off). The template is rendered once around a placeholder and split there, so
the wrapper's ids are fixed and the task's content ids are placed between them untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from lceval.api.errors import UserError

_PLACEHOLDER = "\u2063LCEVAL_CONTENT\u2063"


def hash_ids(ids: list[int]) -> str:
    """A short stable hash of a token-id sequence (the prompt identity in samples.jsonl)."""
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


def hash_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptFormat:
    """The ids that go before and after a user turn's content."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]

    @property
    def overhead(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)

    def wrap(self, *content_parts: list[int]) -> list[int]:
        """The content (its parts one after another) between the prefix and the suffix; parts are copied once,
        not joined first (a long prompt is built in one list)."""
        prompt = list(self.prefix_ids)
        for part in content_parts:
            prompt += part
        prompt += self.suffix_ids
        return prompt


def encode(tokenizer, text: str) -> list[int]:
    """Text to ids with no special tokens added (a BOS inside a needle or context would be a bug)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_ids(tokenizer) -> list[int]:
    """What the tokenizer puts in front of a plain prompt (the BOS for Llama-style models, nothing for others)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without) :] == without:
        return list(with_special[: len(with_special) - len(without)])
    return []


def prompt_format(tokenizer, use_chat_template: bool, system: str | None = None) -> PromptFormat:
    """The wrapper for one user turn: the chat template split around the content, or just the BOS."""
    if not use_chat_template:
        return PromptFormat(tuple(bos_ids(tokenizer)), ())
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "the model's tokenizer has no chat template; run with --no-chat-template for a base model."
        )
    messages = [{"role": "user", "content": _PLACEHOLDER}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered.count(_PLACEHOLDER) != 1:
        raise UserError("the model's chat template does not place the user message verbatim; use --no-chat-template.")
    before, after = rendered.split(_PLACEHOLDER)
    return PromptFormat(tuple(encode(tokenizer, before)), tuple(encode(tokenizer, after)))


def middle_truncate(content_ids: list[int], limit: int, n_leading_special: int = 0,
                    tail_rounds_up: bool = False) -> list[int]:
    """Keep the first and the last half of a prompt longer than `limit` tokens (LongBench and InfiniteBench).

    The official scripts count the tokenizer's leading special tokens (the BOS) inside the limit and inside the
    first half: `ids[:limit // 2] + ids[-(limit // 2):]` over the ids with BOS. Here the same split is taken on
    the content ids alone, so the wrapped prompt has exactly the official token count without a decode and
    re-encode round trip. LongBench v2 slices the tail as `ids[-limit//2:]`, which in Python keeps
    ceil(limit / 2) tokens: `tail_rounds_up` says so.
    """
    if n_leading_special + len(content_ids) <= limit:
        return content_ids
    head = limit // 2
    tail = limit - head if tail_rounds_up else head
    return content_ids[: max(head - n_leading_special, 0)] + content_ids[-tail:]


def stop_token_ids(tokenizer, generation_config_eos=None) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's (Llama-3 has two)."""
    ids: list[int] = []
    for value in (generation_config_eos, tokenizer.eos_token_id):
        if value is None:
            continue
        for token_id in value if isinstance(value, list | tuple) else [value]:
            if token_id not in ids:
                ids.append(int(token_id))
    return ids
