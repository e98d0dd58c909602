"""How long lceval's own work takes around the model: building needle grids and generating on the demo model.

Run: python -m pytest benchmarks --benchmark-only
"""

from lceval.api.backend import BackendSettings, GenerationRequest
from lceval.api.task import PromptContext
from lceval.tasks.needle import NeedleTask


def test_build_seed_paper_grid(benchmark, demo_tokenizer):
    """The seed paper's grid (8K..80K x 10 depths = 100 prompts, and 10 no-needle controls) built in tokens."""
    ctx = PromptContext(demo_tokenizer, window=81920, stop_token_ids=[1, 4], chat_template=True)
    samples = benchmark.pedantic(lambda: NeedleTask({"preset": "seed-paper"}).build_samples(ctx), rounds=3)
    assert len(samples) == 110 and max(len(s.prompt_ids) for s in samples) == 80000


def test_hf_generation_on_the_demo_model(benchmark, demo_model):
    """25 demo-grid prompts (256..1984 tokens), 32 new tokens each, transformers backend on the CPU."""
    from lceval.backends.hf import HFBackend

    backend = HFBackend(BackendSettings(model_path=demo_model, max_length=2048, batch_size=8))
    requests = [GenerationRequest([0, *range(10, 10 + n)], 32) for n in (256, 512, 900, 1000, 1000) * 5]
    results = benchmark.pedantic(lambda: list(backend.generate(requests)), rounds=3, warmup_rounds=1)
    assert len(results) == 25
