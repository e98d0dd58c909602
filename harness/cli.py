"""The `lceval` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lceval.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate long-context language models: needle, LongBench, InfiniteBench and more.")
console = Console(stderr=True, soft_wrap=True)


@app.command()
def run(
    model: Annotated[str | None, typer.Option(help="Local checkpoint folder or hub id; default: demo model.")] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT adapter folder to apply to the model (--backend openai: "
                                                     "or a served LoRA module name).")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --model.")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks, e.g. needle,longbench.")] = None,
    backend: Annotated[str | None, typer.Option(help="auto (vLLM where it starts, else hf), vllm, hf or openai "
                                                     "(a server, see --base-url).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Window to open the model with (prompt + answer).")] = None,
    rope_theta: Annotated[float | None, typer.Option(help="Override the RoPE base (e.g. 200e6).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16.")] = None,
    out: Annotated[str | None, typer.Option(help="Folder that holds run folders (default results/).")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run folder name; an existing one is continued.")] = None,
    limit: Annotated[int | None, typer.Option(help="Run only the first N samples of each task.")] = None,
    chat_template: Annotated[bool | None, typer.Option("--chat-template/--no-chat-template",
                                                       help="Wrap prompts in the model's chat template.")] = None,
    trust_remote_code: Annotated[bool | None, typer.Option("--trust-remote-code",
                                                           help="Allow code shipped in the model folder.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size of the hf backend.")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="vLLM memory share (CPU: of host RAM).")] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option(help="--backend vllm: split the model over this "
                                                                  "many GPUs (vLLM tensor parallelism).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the engine.")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Few-shot examples for mmlu and lm-eval:<name> tasks "
                                                         "(mmlu default 0, the seed paper's).")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Benchmark files in their official layout (default: "
                                                      "the bundled samples).")] = None,
    task_option: Annotated[list[str] | None, typer.Option(
        "--task-option", "-o", help="TASK.KEY=VALUE, e.g. needle.lengths=[1000,2000].")] = None,
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
    max_retries: Annotated[int | None, typer.Option(help="--backend openai: retries per request, with "
                                                         "exponential backoff (default 5).")] = None,
    openai_api: Annotated[str | None, typer.Option(help="--backend openai: completions (token-exact, default) or "
                                                        "chat (servers without /v1/completions).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file with the same settings; flags win.")] = None,
) -> None:
    """Run tasks on a model and write a run folder (manifest, samples, results, pictures)."""
    from lceval.config import build_config
    from lceval.runner import execute

    flags = dict(model=model, adapter=adapter, revision=revision, tasks=tasks, backend=backend, max_length=max_length,
                 rope_theta=rope_theta, dtype=dtype, out=out, run_id=run_id, limit=limit, chat_template=chat_template,
                 trust_remote_code=trust_remote_code, batch_size=batch_size,
                 gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size, seed=seed,
                 data_dir=data_dir, num_fewshot=num_fewshot,
                 base_url=base_url or None, served_model=served_model, served_adapter=served_adapter,
                 api_key_env=api_key_env, concurrency=concurrency, request_timeout=request_timeout,
                 max_retries=max_retries, openai_api=openai_api)
    cfg = build_config(config, flags, task_option or [])
    run_dir = execute(cfg, console)
    _print_results(run_dir)
    console.print(f"run folder: {run_dir}")


@app.command("tasks")
def list_tasks() -> None:
    """List the registered tasks and backends."""
    from lceval import registry

    table = Table("kind", "name", "description")
    for kind, reg in (("task", registry.tasks), ("backend", registry.backends)):
        for name in reg.names():
            try:
                description = getattr(reg.get(name), "description", "") or registry.first_line(reg.get(name).__doc__)
            except UserError as err:
                description = f"[red]{escape(str(err))}[/]"
            table.add_row(kind, name, description)
    _stdout().print(table)


@app.command("models")
def list_models() -> None:
    """List the models lceval knows by name (--model NAME), whether each is installed, and how to install it."""
    from lceval.models import DEFAULT_MODEL, NAMED_MODELS

    table = Table("name", "installed", "what it is", "install")
    for model in NAMED_MODELS.values():
        path = model.locate() if model.name != DEFAULT_MODEL else "built on first use"
        name = f"{model.name} (default)" if model.name == DEFAULT_MODEL else model.name
        table.add_row(name, escape(str(path)) if path else "[red]no[/]", model.description, escape(model.install))
    _stdout().print(table)


@app.command()
def show(run_dir: Path) -> None:
    """Print a run's results table."""
    _print_results(run_dir)


@app.command()
def heatmap(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run folder, or two to show side by side.")],
    task: Annotated[str, typer.Option(help="The needle-style task of the run.")] = "needle",
    training_length: Annotated[int | None, typer.Option(help="Draw a dashed line at this length.")] = None,
    diff: Annotated[bool, typer.Option("--diff", help="Two runs: add the difference map (second - first).")] = False,
    out: Annotated[Path | None, typer.Option(help="Two runs: folder for the pictures (default: the second run's).")]
    = None,
) -> None:
    """Write the needle heatmaps (PNG) and grids (CSV) of a run folder, or compare two runs' heatmaps."""
    from lceval.plots import write_needle_heatmaps
    from lceval.results import RunFolder

    if len(run_dirs) > 1 or diff:
        from lceval.cli_compare import heatmap_comparison

        for path in heatmap_comparison(run_dirs, task, diff, out):
            console.print(f"wrote {path}")
        return
    run_dir = run_dirs[0]
    folder = RunFolder(run_dir)
    results, manifest = folder.results(), folder.manifest()
    if task not in results.get("tasks", {}):
        raise UserError(f"run {run_dir} has no results for task {task!r}; it has {', '.join(results['tasks'])}.")
    if training_length is None:
        training_length = manifest.get("tasks", {}).get(task, {}).get("settings", {}).get("training_length")
    for path in write_needle_heatmaps(run_dir, results, manifest, task=task, training_length=training_length):
        console.print(f"wrote {path}")


@app.command()
def score(
    benchmark: Annotated[str, typer.Argument(help="longbench or infinitebench")],
    pred_dir: Annotated[Path, typer.Option(help="Folder of the benchmark's official prediction files.")],
    e: Annotated[bool, typer.Option("--e", help="LongBench-E: scores by length bucket.")] = False,
    scorer: Annotated[str, typer.Option(help="InfiniteBench scorer: v-a (June 2024) or v-b (August 2024).")] = "v-a",
) -> None:
    """Re-score official prediction files offline, writing the result file the official scorer writes."""
    import json

    if benchmark == "longbench":
        from lceval.tasks.longbench_metrics import score_pred_dir as score_longbench

        result, path = score_longbench(pred_dir, e=e)
    elif benchmark == "infinitebench":
        from lceval.tasks.infinitebench_metrics import score_pred_dir as score_infinitebench

        result, path = score_infinitebench(pred_dir, scorer=scorer)
    else:
        raise UserError(f"unknown benchmark {benchmark!r} for lceval score; use longbench or infinitebench.")
    print(json.dumps(result, ensure_ascii=False, indent=4))
    console.print(f"wrote {path}")


BREAKDOWNS = ("by_length", "by_count", "by_category", "by_dataset", "by_task", "by_dataset_bucket", "by_difficulty",
              "by_length_bucket")


def _print_results(run_dir: Path) -> None:
    """Each task's headline metrics, then its breakdowns (per length, category, dataset, bucket)."""
    from lceval.results import RunFolder

    results = RunFolder(run_dir).results()
    table = Table("task", "breakdown", "metric", "score", "n", title=f"results: {run_dir}")
    for name, task in results["tasks"].items():
        n = f"{task.get('n_samples', '?')}/{task.get('n_expected', '?')}"
        for metric, value in task.get("metrics", {}).items():
            table.add_row(name, "all", metric, _number(value), n)
            name, n = "", ""
        for key in BREAKDOWNS:
            for label, value in task.get(key, {}).items():
                values = value if isinstance(value, dict) else {"score": value}
                for metric, number in values.items():
                    table.add_row(name, f"{key[3:].replace('_', ' ')} {label}", metric, _number(number), "")
                    name = ""
    _stdout().print(table)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _stdout() -> Console:
    """Tables on stdout, at full width when piped (rich would cut them to 80 columns)."""
    return Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)


from lceval.training.cli import register as _register_training  # noqa: E402

_register_training(app)


from lceval.cli_compare import register as _register_compare  # noqa: E402

_register_compare(app)  # compare, gate, report


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        app()
    except UserError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted; rerun with the same --run-id to continue.")
        sys.exit(130)
