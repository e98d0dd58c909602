"""`lceval run`: run tasks on a model (or several checkpoints of it) and write run folders; `--dry-run` plans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lceval.api.errors import UserError
from lceval.api.settings import allowed
from lceval.cli.app import app, console, stdout
from lceval.models import DEFAULT_MODEL
from lceval.running.config import RunConfig


def _h(text: str, name: str) -> str:
    """A run flag's help, ending in its range as RunConfig checks it (the words a refused value's error uses)."""
    return f"{text} Allowed: {allowed(RunConfig, name)}."


@app.command()
def run(
    model: Annotated[str | None, typer.Option(help="Local checkpoint folder, hub id, GGUF file, or a name from "
                                                   f"`lceval models`; default: {DEFAULT_MODEL}.")] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT adapter folder to apply to the model (--backend openai: "
                                                     "or a served LoRA module name); a comma list (none: the "
                                                     "model alone) runs each checkpoint, one run folder each, "
                                                     "in one engine start.")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --model.")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks, e.g. needle,longbench.")] = None,
    backend: Annotated[str | None, typer.Option(help="auto (vLLM where it starts, else hf), vllm, hf or openai "
                                                     "(a server, see --base-url).")] = None,
    max_length: Annotated[int | None, typer.Option(help=_h("Window to open the model with (prompt + answer).",
                                                           "max_length"))] = None,
    rope_theta: Annotated[float | None, typer.Option(help=_h("Override the RoPE base (e.g. 200e6).",
                                                             "rope_theta"))] = None,
    dtype: Annotated[str | None, typer.Option(help=_h("Weights dtype (auto: the checkpoint's).", "dtype"))] = None,
    out: Annotated[str | None, typer.Option(help="Folder that holds run folders (default results/).")] = None,
    run_id: Annotated[str | None, typer.Option(help=_h("Run folder name inside --out; an existing one is "
                                                       "continued.", "run_id"))] = None,
    limit: Annotated[int | None, typer.Option(help=_h("Run only the first N samples of each task.", "limit"))] = None,
    chat_template: Annotated[bool | None, typer.Option("--chat-template/--no-chat-template",
                                                       help="Wrap prompts in the model's chat template.")] = None,
    trust_remote_code: Annotated[bool | None, typer.Option("--trust-remote-code",
                                                           help="Allow code shipped in the model folder.")] = None,
    batch_size: Annotated[int | None, typer.Option(help=_h("Batch size of the hf backend.", "batch_size"))] \
        = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help=_h("vLLM memory share (CPU: of host RAM).",
                                                                         "gpu_memory_utilization"))] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option(help=_h("--backend vllm: split the model over "
                                                                     "this many GPUs (vLLM tensor parallelism).",
                                                                     "tensor_parallel_size"))] = None,
    seed: Annotated[int | None, typer.Option(help=_h("Seed of the engine.", "seed"))] = None,
    num_fewshot: Annotated[int | None, typer.Option(help=_h("Few-shot examples for mmlu and lm-eval:<name> "
                                                            "tasks (mmlu default 0, the seed paper's).",
                                                            "num_fewshot"))] = None,
    data_dir: Annotated[str | None, typer.Option(help="Benchmark files in their official layout (default: "
                                                      "the bundled samples).")] = None,
    task_option: Annotated[list[str] | None, typer.Option(
        "--task-option", "-o", help="TASK.KEY=VALUE, e.g. needle.lengths=[1000,2000]; `lceval tasks --options "
                                    "TASK` lists a task's keys and what each allows.")] = None,
    backend_option: Annotated[list[str] | None, typer.Option(
        "--backend-option", "-M", help="KEY=VALUE (value as YAML): an option of the backend itself, handed to it "
                                       "unread and checked by it (--backend openai: the server flags below, by "
                                       "their names with _; a plugin backend's own).")] = None,
    base_url: Annotated[list[str] | None, typer.Option(
        help="--backend openai: server URL, e.g. http://localhost:8000 (repeat, or comma list, for several).")] = None,
    served_model: Annotated[str | None, typer.Option(help="--backend openai: model name on the server "
                                                          "(default: the one it serves).")] = None,
    served_adapter: Annotated[str | None, typer.Option(help="--backend openai: LoRA module name serving a local "
                                                            "--adapter folder (default: the folder's name).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="--backend openai: environment variable holding the "
                                                         "API key (default OPENAI_API_KEY).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="--backend openai: requests in flight per server "
                                                         "(default 8).")] = None,
    request_timeout: Annotated[float | None, typer.Option(help="--backend openai: seconds per request "
                                                               "(default 600).")] = None,
    max_retries: Annotated[int | None, typer.Option(help="--backend openai: retries per request, with exponential "
                                                         "backoff (default 5).")] = None,
    openai_api: Annotated[str | None, typer.Option(help="--backend openai: completions (token-exact, default) or "
                                                        "chat (servers without /v1/completions).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with the same settings; flags win.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build every sample as the run would, print the plan "
                                                            "(samples, prompt tokens per length bucket, max new "
                                                            "tokens, an estimated time and its basis) and exit; "
                                                            "writes nothing under --out.")] = False,
    calibrate_from: Annotated[Path | None, typer.Option(help="--dry-run: estimate from the tokens/s recorded in "
                                                             "this earlier run folder's cost, instead of timing a "
                                                             "few samples on hf.")] = None,
) -> None:
    """Run tasks on a model and write a run folder (manifest, samples, results, pictures)."""
    from lceval.running.config import build_config
    from lceval.running.runner import execute_checkpoints

    if calibrate_from is not None and not dry_run:
        raise UserError(f"--calibrate-from {calibrate_from} applies to --dry-run; add --dry-run, or drop it.")

    flags = dict(model=model, adapter=adapter, revision=revision, tasks=tasks, backend=backend, max_length=max_length,
                 rope_theta=rope_theta, dtype=dtype, out=out, run_id=run_id, limit=limit, chat_template=chat_template,
                 trust_remote_code=trust_remote_code, batch_size=batch_size,
                 gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size, seed=seed,
                 data_dir=data_dir, num_fewshot=num_fewshot)
    # The server flags are -M options of --backend openai under names of their own (checked by its options class).
    server = dict(base_url=base_url or None, served_model=served_model, served_adapter=served_adapter,
                  api_key_env=api_key_env, concurrency=concurrency, request_timeout=request_timeout,
                  max_retries=max_retries, openai_api=openai_api)
    cfg = build_config(config, flags, task_option or [], backend_option or [], server)
    if dry_run:
        from lceval.running.runner import checkpoint_configs
        from lceval.running.runner import dry_run as plan_only

        for one in checkpoint_configs(cfg):
            _print_plan(plan_only(one, console, calibrate_from))
        return
    from lceval.cli.results import print_results

    for run_dir in execute_checkpoints(cfg, console):
        print_results(run_dir)
        console.print(f"run folder: {run_dir}")


def _print_plan(dry) -> None:
    """`lceval run --dry-run`: per task and length bucket what would run, and the estimate with its basis."""
    from lceval.running.cost import seconds_text

    p = dry.plan
    total = sum(len(v) for v in p.samples.values())
    state = (f"a new run folder {p.run.path}" if not p.run.exists()
             else f"run folder {p.run.path}: {total - len(dry.todo)} of {total} samples done")
    console.print(f"dry run: nothing was written; {state}.")
    table = Table("task", "length bucket", "samples", "prompt tokens", "max new tokens", "estimate", "rate from",
                  title=f"plan: {len(dry.todo)} samples to run on model {p.model.spec} (window {p.max_length})")
    estimate = dry.estimate or {}
    for name, row in dry.table.items():
        guess = (estimate.get("tasks") or {}).get(name) or {}
        table.add_row(name, "all", str(row["samples"]), f"{row['prompt_tokens']:,}", str(row["max_new_tokens"]),
                      seconds_text(guess.get("seconds")), "")
        for label, part in row["by_length_bucket"].items():
            bucket = (guess.get("by_length_bucket") or {}).get(label) or {}
            table.add_row("", label, str(part["samples"]), f"{part['prompt_tokens']:,}",
                          str(part["max_new_tokens"]), seconds_text(bucket.get("seconds")),
                          escape(bucket.get("from") or ""), style="dim")
    stdout().print(table)
    out = stdout()
    if dry.estimate is None or dry.estimate.get("generation_s") is None:
        out.print(escape(dry.basis if dry.basis.startswith(("no estimate", "nothing")) else
                         f"no estimate for every task; basis: {dry.basis}."), highlight=False)
        return
    generation = dry.estimate["generation_s"]
    engine = dry.engine_start_s
    whole = generation + (engine or 0)
    out.print(escape(f"estimated time: {seconds_text(whole)} (generation {seconds_text(generation)}"
                     + (f" + engine start {seconds_text(engine)}" if engine is not None else "") + f"); basis: "
                     f"{dry.basis}. Each bucket takes its measured seconds per prompt token (answers included, at "
                     "that task's answer length); a bucket marked ~ borrows the nearest measured one's, which "
                     "underestimates longer prompts (attention grows with length)."), highlight=False)


