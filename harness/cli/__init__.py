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

from lceval.api.errors import UserError
from lceval.api.settings import HeatmapFlags, allowed
from lceval.models import DEFAULT_MODEL
from lceval.running.config import RunConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate long-context language models: needle, LongBench, InfiniteBench and more.")
console = Console(stderr=True, soft_wrap=True)


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
    base_url: Annotated[list[str] | None, typer.Option(
        help="--backend openai: server URL, e.g. http://localhost:8000 (repeat, or comma list, for several).")] = None,
    served_model: Annotated[str | None, typer.Option(help="--backend openai: model name on the server "
                                                          "(default: the one it serves).")] = None,
    served_adapter: Annotated[str | None, typer.Option(help="--backend openai: LoRA module name serving a local "
                                                            "--adapter folder (default: the folder's name).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="--backend openai: environment variable holding the "
                                                         "API key (default OPENAI_API_KEY).")] = None,
    concurrency: Annotated[int | None, typer.Option(help=_h("--backend openai: requests in flight per server "
                                                            "(default 8).", "concurrency"))] = None,
    request_timeout: Annotated[float | None, typer.Option(help=_h("--backend openai: seconds per request "
                                                                  "(default 600).", "request_timeout"))] = None,
    max_retries: Annotated[int | None, typer.Option(help=_h("--backend openai: retries per request, with "
                                                            "exponential backoff (default 5).", "max_retries"))] = None,
    openai_api: Annotated[str | None, typer.Option(help=_h("--backend openai: completions (token-exact, "
                                                           "default) or chat (servers without /v1/completions).",
                                                           "openai_api"))] = None,
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
                 data_dir=data_dir, num_fewshot=num_fewshot,
                 base_url=base_url or None, served_model=served_model, served_adapter=served_adapter,
                 api_key_env=api_key_env, concurrency=concurrency, request_timeout=request_timeout,
                 max_retries=max_retries, openai_api=openai_api)
    cfg = build_config(config, flags, task_option or [])
    if dry_run:
        from lceval.running.runner import checkpoint_configs
        from lceval.running.runner import dry_run as plan_only

        for one in checkpoint_configs(cfg):
            _print_plan(plan_only(one, console, calibrate_from))
        return
    for run_dir in execute_checkpoints(cfg, console):
        _print_results(run_dir)
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
    _stdout().print(table)
    out = _stdout()
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


@app.command("tasks")
def list_tasks(
    options: Annotated[str | None, typer.Option("--options", help="List this task's options (-o TASK.KEY=VALUE): "
                                                                  "each key, what it allows and its default.")] = None,
) -> None:
    """List the registered tasks and backends, or one task's options."""
    from lceval.api import registry

    if options is not None:
        _print_task_options(options)
        return
    table = Table("kind", "name", "description")
    for kind, reg in (("task", registry.tasks), ("backend", registry.backends)):
        for name in reg.names():
            try:
                description = getattr(reg.get(name), "description", "") or registry.first_line(reg.get(name).__doc__)
            except UserError as err:
                description = f"[red]{escape(str(err))}[/]"
            table.add_row(kind, name, description)
    _stdout().print(table)


def _print_task_options(name: str) -> None:
    """`lceval tasks --options NAME`: the keys of a task's typed options, their ranges and defaults."""
    from dataclasses import MISSING, fields

    from lceval.api import registry

    factory = registry.tasks.get(name)
    options_class = getattr(factory, "options_class", None)
    if options_class is None:
        raise UserError(f"task {name!r} declares no typed options (a plugin without options_class).")
    table = Table("option", "allowed", "default", title=f"-o {name}.KEY=VALUE")
    for f in fields(options_class):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "(required)")
        table.add_row(f"{name}.{f.name}", escape(allowed(options_class, f.name)), escape(repr(default)))
    _stdout().print(table)


@app.command("models")
def list_models() -> None:
    """List the models lceval knows by name (--model NAME), whether each is installed, and how to install it."""
    from lceval.models import NAMED_MODELS

    table = Table("name", "installed", "what it is", "to install")
    for model in NAMED_MODELS.values():
        installed = "yes" if model.built or model.locate() else "[red]no[/]"  # built: nothing to look for
        name = f"{model.name} (default)" if model.name == DEFAULT_MODEL else model.name
        table.add_row(name, installed, model.description, escape(model.install))
    _stdout().print(table)


@app.command()
def show(
    run_dir: Path,
    samples: Annotated[bool, typer.Option("--samples", help="Print each sample: prompt excerpt, output, target, "
                                                            "scores.")] = False,
    task: Annotated[str | None, typer.Option(help="--samples: only this task's.")] = None,
    where: Annotated[list[str] | None, typer.Option(help="--samples: only those whose meta has KEY=VALUE, e.g. "
                                                         "length=4000 (repeat for several).")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="--samples: only those whose pass/fail score is below "
                                                          "1 (a no-needle control: at 1, answered without the "
                                                          "needle).")] = False,
) -> None:
    """Print a run's results table, or with --samples what the model said on each sample and how it scored."""
    if not samples:
        _print_results(run_dir)
        return
    from rich.text import Text

    from lceval.analysis import sample_view
    from lceval.api.run_folder import RunFolder

    chosen = sample_view.select(RunFolder(run_dir).records(), task, sample_view.parse_where(where or []), failed)
    out = _stdout()
    for record in chosen:
        colour = {"pass": "green", "fail": "red"}.get(sample_view.verdict(record), "white")
        out.print(Text(f"{record['task']} {record['id']}", style=f"bold {colour}"),
                  Text(f"  {sample_view.meta_text(record)}", style="dim"))
        parts = sample_view.excerpt_parts(record)
        if parts:
            before, marked, after = parts
            out.print(Text("prompt: ", style="bold") + Text(before) + Text(marked, style="reverse") + Text(after))
        out.print(Text("target: ", style="bold") + Text(sample_view.target_text(record.get("target"))))
        out.print(Text("output: ", style="bold") + Text(sample_view.shorten(record.get("output")), style="cyan"))
        out.print(Text("scores: ", style="bold") + Text(sample_view.scores_text(record)), "")
    console.print(f"{len(chosen)} samples")


@app.command()
def heatmap(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run folder, or two to show side by side.")],
    task: Annotated[str | None, typer.Option(help="The task with a length x depth grid to draw (default: the run's "
                                                  "first).")] = None,
    training_length: Annotated[int | None, typer.Option(help="Draw a dashed line at this length. Allowed: "
                                                        f"{allowed(HeatmapFlags, 'training_length')}.")] = None,
    diff: Annotated[bool, typer.Option("--diff", help="Two runs: add the difference map (second - first).")] = False,
    out: Annotated[Path | None, typer.Option(help="Two runs: folder for the pictures (default: the second run's).")]
    = None,
) -> None:
    """Write the heatmaps (PNG) and grids (CSV) of a run folder's length x depth grid, or compare two runs'."""
    from lceval.analysis.plots import write_grid_heatmaps
    from lceval.api.run_folder import RunFolder
    from lceval.api.settings import flags

    flags(HeatmapFlags, task=task, training_length=training_length)
    task = task or _first_grid_task(run_dirs[0])
    if len(run_dirs) > 1 or diff:
        from lceval.cli.compare import heatmap_comparison

        for path in heatmap_comparison(run_dirs, task, diff, out):
            console.print(f"wrote {path}")
        return
    if out is not None:
        raise UserError(f"--out {out} applies to two runs; one run's pictures are written into its own folder.")
    run_dir = run_dirs[0]
    folder = RunFolder(run_dir)
    results, manifest = folder.results(), folder.manifest()
    tasks = results.get("tasks") if isinstance(results.get("tasks"), dict) else {}
    if task not in tasks:
        raise UserError(f"run {run_dir} has no results for task {task!r}; it has {', '.join(tasks) or 'none'}.")
    if not isinstance(tasks[task], dict) or "cells" not in tasks[task]:
        grids = [name for name, res in tasks.items() if isinstance(res, dict) and "cells" in res]
        raise UserError(f"task {task!r} of run {run_dir} has no length x depth grid to draw; the run's tasks with "
                        f"one: {', '.join(grids) or 'none'}.")
    if training_length is None:
        training_length = manifest.get("tasks", {}).get(task, {}).get("settings", {}).get("training_length")
    for path in write_grid_heatmaps(run_dir, results, manifest, task=task, training_length=training_length):
        console.print(f"wrote {path}")


def _first_grid_task(run_dir: Path) -> str:
    """The first task of a run folder whose results hold a length x depth grid (`cells`)."""
    from lceval.api.run_folder import RunFolder

    results = RunFolder(run_dir).results()
    grids = [name for name, res in results["tasks"].items() if isinstance(res, dict) and "cells" in res]
    if not grids:
        raise UserError(f"run {run_dir} has no task with a length x depth grid to draw; it has "
                        f"{', '.join(results['tasks']) or 'none'}.")
    return grids[0]


@app.command()
def score(
    benchmark: Annotated[str, typer.Argument(help="longbench or infinitebench.")],
    pred_dir: Annotated[Path, typer.Option(help="Folder of the benchmark's official prediction files (result.json "
                                                "is written there).")],
    e: Annotated[bool, typer.Option("--e", help="LongBench-E: scores by length bucket.")] = False,
    scorer: Annotated[str | None, typer.Option(help="InfiniteBench scorer: v-a (June 2024, the default) or v-b "
                                                    "(August 2024).")] = None,
) -> None:
    """Re-score official prediction files offline, writing the result file the official scorer writes."""
    import json

    from lceval.api import files
    from lceval.api.settings import ScoreFlags, flags

    chosen = flags(ScoreFlags, benchmark=benchmark, **({"scorer": scorer} if scorer is not None else {}))
    if chosen.benchmark == "longbench" and scorer is not None:
        raise UserError("--scorer applies to infinitebench; LongBench has one scorer (its eval.py).")
    if chosen.benchmark == "infinitebench" and e:
        raise UserError("--e (LongBench-E) applies to longbench, not infinitebench.")
    if pred_dir.is_dir():
        files.check_output_file(pred_dir / "result.json", "--pred-dir's")
    if chosen.benchmark == "longbench":
        from lceval.metrics.longbench import score_pred_dir as score_longbench

        result, path = score_longbench(pred_dir, e=e)
    else:
        from lceval.metrics.infinitebench import score_pred_dir as score_infinitebench

        result, path = score_infinitebench(pred_dir, scorer=chosen.scorer)
    print(json.dumps(result, ensure_ascii=False, indent=4))
    console.print(f"wrote {path}")


def _print_results(run_dir: Path) -> None:
    """Each task's headline metrics, then its breakdowns (every `by_<axis>` mapping of its results)."""
    from lceval.api.run_folder import RunFolder

    results = RunFolder(run_dir).results()
    table = Table("task", "breakdown", "metric", "score", "n", title=f"results: {run_dir}")
    for name, task in results["tasks"].items():
        n = f"{task.get('n_samples', '?')}/{task.get('n_expected', '?')}"
        for metric, value in task.get("metrics", {}).items():
            table.add_row(name, "all", metric, _number(value), n)
            name, n = "", ""
        for key in [k for k, v in task.items() if k.startswith("by_") and isinstance(v, dict)]:
            for label, value in task[key].items():
                values = value if isinstance(value, dict) else {"score": value}
                for metric, number in values.items():
                    table.add_row(name, f"{key[3:].replace('_', ' ')} {label}", metric, _number(number), "")
                    name = ""
    _stdout().print(table)
    _print_controls(results["tasks"])
    if isinstance(results.get("cost"), dict):
        _print_cost(results["cost"])


def _print_controls(tasks: dict) -> None:
    """A line per task with no-needle controls (or a grid without them): whether the model answered without the
    needle."""
    from rich.text import Text

    from lceval.analysis.sample_view import control_line

    for name, task in tasks.items():
        line = control_line(task)
        if line is not None:
            text, warning = line
            _stdout().print(Text(f"{'warning: ' if warning else ''}{name} {text}",
                                 style="bold yellow" if warning else ""), soft_wrap=True)


def _print_cost(cost: dict) -> None:
    """The run's cost (lceval.running.cost): per task and per prompt-length bucket, tokens, seconds and tokens/s."""
    from lceval.running.cost import seconds_text

    def row(name: str, label: str, part: dict, seconds_key: str, **style) -> None:
        rate = part.get("tokens_per_s")
        table.add_row(name, label, str(part.get("samples", 0)), f"{part.get('prompt_tokens', 0):,}",
                      f"{part.get('generated_tokens', 0):,}", seconds_text(part.get(seconds_key)),
                      "–" if rate is None else f"{rate:,.0f}", **style)

    start = cost.get("engine_start_s")
    sessions = cost.get("sessions", 0)
    title = (f"cost: engine start {seconds_text(start)} ({sessions} session{'s' if sessions != 1 else ''})"
             if start is not None else f"cost ({sessions} session{'s' if sessions != 1 else ''})")
    if cost.get("untimed_samples"):
        title += f"; {cost['untimed_samples']} samples untimed (a killed session)"
    table = Table("task", "length bucket", "samples", "prompt tokens", "generated", "generation", "tokens/s",
                  title=title)
    row("all", "all", cost, "generation_s")
    for label, part in (cost.get("by_length_bucket") or {}).items():
        row("", label, part, "seconds", style="dim")
    for name, part in (cost.get("tasks") or {}).items():
        row(name, "all", part, "generation_s")
    _stdout().print(table)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _stdout() -> Console:
    """Tables on stdout, at full width when piped (rich would cut them to 80 columns)."""
    return Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)


from lceval.training.cli import register as _register_training  # noqa: E402

_register_training(app)


from lceval.cli.compare import register as _register_compare  # noqa: E402

_register_compare(app)  # compare, gate, report


EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130  # the README's "Exit codes"


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _click_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Click's exception classes `(module, name)`: typer's vendored copy and click itself, whichever are installed."""
    import importlib

    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_PARSE_ERRORS = {"int_parsing": "a whole number", "int_from_float": "a whole number", "int_type": "a whole number",
                 "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false"}


def _usage_sentence(err: Exception) -> str:
    """A flag click could not parse, as the settings errors read: the flag, the value, what is allowed."""
    from pydantic import ValidationError

    from lceval.api.settings import command_settings, show

    context = getattr(err, "ctx", None)
    param = getattr(err, "param", None)
    cause = err.__cause__
    hint = f"; see `{context.command_path} --help`" if context is not None else ""
    if param is not None and isinstance(cause, ValidationError) and cause.errors():
        first = cause.errors()[0]
        flag = (getattr(param, "opts", None) or [param.name])[0]
        settings = command_settings(context.command.name) if context is not None else None
        if settings is not None and param.name in settings.__pydantic_fields__:
            what = allowed(settings, param.name)
        else:
            what = _PARSE_ERRORS.get(first.get("type"), "")
        if what:
            return f"{flag} {show(first.get('input'))} must be {what}{hint}."
    return f"{err.format_message().rstrip('.')}{hint}."


def run_cli(argv: list[str] | None = None) -> int:
    """Run one `lceval` command line; returns its exit code. Bad input of any kind (a flag click cannot parse, a
    value out of range, a file that cannot be read or written) is one `error:` line and exit 2, never a traceback."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        result = app(args=argv, prog_name="lceval", standalone_mode=False)
    except UserError as err:
        _error(str(err))
        return err.exit_code
    # click's own errors (typer >= 0.22 vendors click): usage errors exit 2
    except _click_classes(("typer", "TyperException"), ("click", "ClickException")) as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `lceval` or `lceval data` alone: the help
            print(err.format_message())
            return err.exit_code
        _error(_usage_sentence(err))
        return err.exit_code
    except _click_classes(("typer", "Abort"), ("click.exceptions", "Abort")):
        _error("aborted.")
        return EXIT_GATE_FAILED
    except OSError as err:  # a file the helpers of lceval.api.files did not see (a library's own write, say)
        if err.filename is None:
            raise
        from lceval.api.files import os_error

        _error(str(os_error(err, Path(err.filename), "access")))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        result = EXIT_INTERRUPTED
    if result == EXIT_INTERRUPTED:  # typer turns Ctrl-C into exit code 130
        console.print("interrupted; rerun with the same --run-id to continue.")
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    sys.exit(run_cli())
