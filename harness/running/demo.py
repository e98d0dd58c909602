"""The embedded default: a tiny Llama-architecture model and tokenizer that lceval builds offline.

This is the one place that says what `lceval run` uses when no --model is given, and which grid it runs on
it. The model is deterministic from its seed (same torch, same weights), a few MB, and answers nothing
useful: it exists so that the whole pipeline runs anywhere in about a minute.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from lceval.api.settings import Count, PositiveFloat, Seed, settings_class

DEMO_VERSION = "v1"
DEMO_SEED = 0
DEMO_WINDOW = 2048
# What `lceval run` with no --model runs, per task: a grid small enough for 2 CPU cores.
DEMO_TASK_OPTIONS = {
    "needle": {"lengths": [256, 512, 1024, 1536, 1984], "num_depths": 5, "max_new_tokens": 32},
    "passkey": {"lengths": [256, 512, 1024, 1536, 1984], "num_depths": 5},
    # Cases of 1-3 topics with one exchange per conversation fit the window (the longest is 1,943 tokens: the
    # demo tokenizer takes about 3 tokens a word).
    "topic": {"counts": [1, 2, 3], "cases": 4, "min_exchanges": 1, "max_exchanges": 1, "max_new_tokens": 32},
}

LLAMA3_STYLE_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|pad|>",
]
# A Llama-3-shaped chat template, so that the demo model has two end tokens like the real one.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def cache_dir() -> Path:
    """Where lceval keeps what it builds: $LCEVAL_CACHE, else ~/.cache/lceval."""
    return Path(os.environ.get("LCEVAL_CACHE", Path.home() / ".cache" / "lceval"))


def demo_model_path() -> Path:
    """The demo model's folder, built on first use."""
    path = cache_dir() / f"demo-llama-{DEMO_VERSION}-seed{DEMO_SEED}"
    if not (path / "config.json").exists():
        build_tiny_llama(path, seed=DEMO_SEED)
    return path


def build_tokenizer(vocab_size: int = 1024, corpus: list[str] | None = None, window: int = DEMO_WINDOW):
    """A byte-level BPE tokenizer with Llama-3-style special tokens, trained on `corpus`; without one, on lceval's
    generated haystack (the demo's). A trained corpus also gets one token per digit, as Llama's tokenizers do, so
    that every number is spelt from ten well-trained tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lceval.tasks.haystack import generated_text

    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.pre_tokenizer = byte_level if corpus is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LLAMA3_STYLE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if corpus is None:
        corpus = generated_text(200_000, seed=1).split("\n\n")
        corpus.append("What is the best thing to do in San Francisco? Answer: the pass key is 12345.")
    core.train_from_iterator(corpus, trainer=trainer)
    bos = core.token_to_id("<|begin_of_text|>")
    core.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|pad|>",
        model_max_length=window,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@settings_class
class TinyLlama:
    """A tiny Llama's shape and initialisation (`model.build` of a recipe whose base is builtin:tiny-llama).

    The defaults are the demo model's. `tokenizer: mix` trains the tokenizer on the recipe's own data mix (a model
    trained from scratch on it: lceval-mini) instead of on the demo's haystack text.
    """

    seed: Seed = 0
    window: Count = DEMO_WINDOW
    rope_theta: PositiveFloat = 10000.0
    hidden_size: Count = 128
    intermediate_size: Count = 256
    num_layers: Count = 2
    num_heads: Count = 2
    num_kv_heads: Count = 1
    head_dim: Count = 64
    vocab_size: Annotated[int, Field(ge=300)] = 1024
    tokenizer: Literal["haystack", "mix"] = "haystack"
    sharpen_logits: bool = True  # the demo's x8 output layer, so that a random model's greedy output varies


def build_tiny_llama(path: Path, seed: int = 0, window: int = DEMO_WINDOW, rope_theta: float = 10000.0,
                     shape: TinyLlama | None = None, corpus: list[str] | None = None) -> Path:
    """Write a tiny random Llama checkpoint with its tokenizer to `path` (atomically) and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = shape or TinyLlama(seed=seed, window=window, rope_theta=rope_theta)
    tokenizer = build_tokenizer(shape.vocab_size, corpus, shape.window)
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.window,
        rope_theta=shape.rope_theta,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_ids,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(shape.seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    if shape.sharpen_logits:
        with torch.no_grad():
            model.lm_head.weight.mul_(8.0)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end_ids, pad_token_id=tokenizer.pad_token_id
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
