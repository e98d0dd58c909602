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


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on lceval's generated haystack, with Llama-3-style special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lceval.tasks.haystack import generated_text

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LLAMA3_STYLE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
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
        model_max_length=DEMO_WINDOW,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(path: Path, seed: int = 0, window: int = DEMO_WINDOW, rope_theta: float = 10000.0) -> Path:
    """Write a tiny random Llama checkpoint with its tokenizer to `path` (atomically) and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=window,
        rope_theta=rope_theta,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_ids,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    # Sharper logits than the default init, so greedy outputs vary with the prompt instead of repeating a token.
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
