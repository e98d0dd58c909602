"""lceval against its engine: the same token prompts through lceval's run path and through a plain
`vllm.LLM.generate`, on one in-process vLLM engine, each timed with the prefix cache emptied first.

The ratio is measured within one test, rounds alternating, so that the machine's noise falls on both sides.
lceval's side is everything a run does after planning: requests built from the samples, generation through the
backend, each answer scored and appended to samples.jsonl. The engine start is reported apart (extra_info).

Run: python -m pytest benchmarks/test_bench_engine.py --benchmark-only -s
Another model than the demo one: LCEVAL_BENCH_MODEL (a named model, a checkpoint folder or a GGUF file); fewer
rounds: LCEVAL_BENCH_ROUNDS; other needle lengths: LCEVAL_BENCH_NEEDLE_LENGTHS (comma-separated tokens). The real
model's figure in the README:
  LCEVAL_BENCH_MODEL=smollm2-135m-instruct LCEVAL_BENCH_ROUNDS=3 LCEVAL_BENCH_NEEDLE_LENGTHS=1024,2048 \
      python -m pytest benchmarks/test_bench_engine.py -k raw_engine --benchmark-only -s
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytest
from rich.console import Console

ROUNDS = int(os.environ.get("LCEVAL_BENCH_ROUNDS", "5"))
NEEDLE_LENGTHS = [int(n) for n in os.environ.get("LCEVAL_BENCH_NEEDLE_LENGTHS", "").split(",") if n.strip()]


@pytest.fixture(scope="module")
def planned(demo_model):
    """The plan of a needle and a LongBench run (prompts in tokens), and one vLLM engine on its model."""
    from lceval.running.config import RunConfig
    from lceval.running.runner import _backend_settings, plan, start_backend

    console = Console(file=io.StringIO())
    model = os.environ.get("LCEVAL_BENCH_MODEL", "lceval-demo")
    options = {"needle": {"lengths": NEEDLE_LENGTHS}} if NEEDLE_LENGTHS else {}
    cfg = RunConfig(model=model, tasks=["needle", "longbench"], backend="vllm", out=tempfile.mkdtemp(),
                    task_options=options)
    p = plan(cfg, console, write=False)
    started = time.monotonic()
    backend = start_backend("vllm", _backend_settings(p), p.model.spec, console)
    start_s = time.monotonic() - started
    yield p, backend, start_s
    backend.close()


def _raw(backend, samples) -> list[list[int]]:
    from vllm import SamplingParams, TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=s.prompt_ids) for s in samples]
    params = [SamplingParams(temperature=0.0, max_tokens=s.max_new_tokens, min_tokens=s.min_new_tokens,
                             stop_token_ids=list(s.stop_token_ids), detokenize=False) for s in samples]
    outputs = backend.llm.generate(prompts, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def _lceval(p, backend) -> int:
    from lceval.api.run_folder import RunFolder
    from lceval.running.runner import _generate

    todo = [(task, sample) for task in p.tasks for sample in p.samples[task.name]]
    with tempfile.TemporaryDirectory() as folder:
        run = RunFolder(Path(folder) / "run")
        run.path.mkdir()
        return _generate(backend, todo, run, Console(file=io.StringIO()))


def test_lceval_against_the_raw_engine(benchmark, planned):
    """Generation time of lceval / of vllm.LLM.generate on identical token prompts. Target: at most 1.05."""
    p, backend, start_s = planned
    samples = [s for task in p.tasks for s in p.samples[task.name]]
    _raw(backend, samples)  # warm-up: the engine's first batches compile and allocate
    raw_s, per_task_s, ours_s = [], [], []

    def one_round() -> None:
        backend.llm.reset_prefix_cache()
        started = time.perf_counter()
        _raw(backend, samples)
        raw_s.append(time.perf_counter() - started)
        backend.llm.reset_prefix_cache()
        started = time.perf_counter()
        for task in p.tasks:  # as lceval sends them: each task's prompts at once, one task after another
            _raw(backend, p.samples[task.name])
        per_task_s.append(time.perf_counter() - started)
        backend.llm.reset_prefix_cache()
        started = time.perf_counter()
        assert _lceval(p, backend) == len(samples)
        ours_s.append(time.perf_counter() - started)

    benchmark.pedantic(one_round, rounds=ROUNDS)
    ratio = statistics.median(ours_s) / statistics.median(raw_s)
    per_task = statistics.median(ours_s) / statistics.median(per_task_s)
    times = {"raw_s": raw_s, "raw_per_task_s": per_task_s, "lceval_s": ours_s}
    benchmark.extra_info.update(model=p.model.spec, samples=len(samples),
                                prompt_tokens=sum(len(s.prompt_ids) for s in samples),
                                engine_start_s=round(start_s, 1), ratio=round(ratio, 3),
                                ratio_per_task=round(per_task, 3),
                                **{k: [round(t, 2) for t in v] for k, v in times.items()})
    print(f"\n{p.model.spec}: {len(samples)} samples; engine start {start_s:.1f} s; "
          + "; ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in times.items())
          + f"; ratio {ratio:.3f} (to the raw engine fed task by task: {per_task:.3f})")


def test_several_checkpoints_in_one_engine_start(benchmark, demo_model, tmp_path):
    """`--adapter none,A,B,C` on vLLM: one engine start and three LoRA swaps, against four runs of their own."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from openai_server import make_lora_adapter

    from lceval.running.config import RunConfig
    from lceval.running.runner import checkpoint_configs, execute, execute_checkpoints

    adapters = [make_lora_adapter(demo_model, tmp_path / f"checkpoint-{seed}00", seed=seed) for seed in (1, 2, 3)]
    spec = ",".join(["none", *map(str, adapters)])
    grid = {"needle": {"lengths": [256, 1024], "depths": [0, 50, 100]}}
    quiet = Console(file=io.StringIO())
    times = {}

    def shared() -> None:
        cfg = RunConfig(model="lceval-demo", adapter=spec, backend="vllm", out=str(tmp_path / "shared"),
                        task_options=grid)
        started = time.perf_counter()
        execute_checkpoints(cfg, quiet)
        times["one engine"] = time.perf_counter() - started

    benchmark.pedantic(shared, rounds=1)
    started = time.perf_counter()
    for one in checkpoint_configs(RunConfig(model="lceval-demo", adapter=spec, backend="vllm", task_options=grid)):
        execute(RunConfig(**{**one.to_dict(), "out": str(tmp_path / "alone")}), quiet)
    times["one engine per checkpoint"] = time.perf_counter() - started
    benchmark.extra_info.update({k: round(v, 1) for k, v in times.items()})
    print(f"\n4 checkpoints: {times}")
