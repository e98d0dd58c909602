"""`lceval show`, `lceval heatmap` and `lceval score`: a run folder's results, pictures, and official files
re-scored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lceval.api.errors import UserError
from lceval.api.schema import TaskResults
from lceval.api.settings import HeatmapFlags, allowed
from lceval.api.task import Task
from lceval.cli.app import app, console, stdout


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
        print_results(run_dir)
        return
    from rich.text import Text

    from lceval.analysis import sample_view
    from lceval.api.run_folder import RunFolder

    chosen = sample_view.select(RunFolder(run_dir).records(), task, sample_view.parse_where(where or []), failed)
    out = stdout()
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
    if task not in results.tasks:
        raise UserError(f"run {run_dir} has no results for task {task!r}; it has "
                        f"{', '.join(results.tasks) or 'none'}.")
    if results.tasks[task].cells is None:
        grids = [name for name, res in results.tasks.items() if res.cells is not None]
        raise UserError(f"task {task!r} of run {run_dir} has no length x depth grid to draw; the run's tasks with "
                        f"one: {', '.join(grids) or 'none'}.")
    if training_length is None:
        training_length = ((manifest.tasks.get(task) or {}).get("settings") or {}).get("training_length")
    for path in write_grid_heatmaps(run_dir, results, manifest, task=task, training_length=training_length):
        console.print(f"wrote {path}")


def _first_grid_task(run_dir: Path) -> str:
    """The first task of a run folder whose results hold a length x depth grid (`cells`)."""
    from lceval.api.run_folder import RunFolder

    results = RunFolder(run_dir).results()
    grids = [name for name, res in results.tasks.items() if res.cells is not None]
    if not grids:
        raise UserError(f"run {run_dir} has no task with a length x depth grid to draw; it has "
                        f"{', '.join(results.tasks) or 'none'}.")
    return grids[0]


@app.command()
def score(
    benchmark: Annotated[str, typer.Argument(help="A task that re-scores its benchmark's official prediction files "
                                                  "(`lceval tasks` lists them: longbench, infinitebench).")],
    pred_dir: Annotated[Path, typer.Option(help="Folder of the benchmark's official prediction files (result.json "
                                                "is written there).")],
    e: Annotated[bool, typer.Option("--e", help="The benchmark's E variant: scores by length bucket "
                                                "(LongBench-E).")] = False,
    scorer: Annotated[str | None, typer.Option(help="The benchmark's scorer version, where it has several "
                                                    "(InfiniteBench: v-a, June 2024, the default, or v-b, August "
                                                    "2024).")] = None,
) -> None:
    """Re-score official prediction files offline, writing the result file the official scorer writes."""
    import json

    from lceval.api import files, registry

    rescorers = {}  # a task's own name -> its class, for every task that re-scores official files
    for name in registry.tasks.in_order():
        try:
            registered = registry.tasks.get(name)
        except UserError:  # a broken plugin
            continue
        task_class = getattr(registered, "task_class", registered)
        if (isinstance(task_class, type) and issubclass(task_class, Task)
                and task_class.score_predictions.__func__ is not Task.score_predictions.__func__):
            rescorers.setdefault(task_class.name, task_class)
    if benchmark not in rescorers:
        raise UserError(f"BENCHMARK {benchmark!r} must be one of {', '.join(rescorers)}.")
    given = {key: value for key, value in (("e", e), ("scorer", scorer)) if value}
    if pred_dir.is_dir():
        files.check_output_file(pred_dir / "result.json", "--pred-dir's")
    result, path = rescorers[benchmark].score_predictions(pred_dir, given)
    print(json.dumps(result, ensure_ascii=False, indent=4))
    console.print(f"wrote {path}")


def print_results(run_dir: Path) -> None:
    """Each task's headline metrics, then its breakdowns (every `by_<axis>` mapping of its results)."""
    from lceval.api.run_folder import RunFolder

    results = RunFolder(run_dir).results()
    table = Table("task", "breakdown", "metric", "score", "n", title=f"results: {run_dir}")
    for name, task in results.tasks.items():
        n = f"{task.n_samples}/{task.n_expected}"
        for metric, value in task.metrics.items():
            table.add_row(name, "all", metric, _number(value), n)
            name, n = "", ""
        for axis, groups in task.breakdowns().items():
            if not isinstance(groups, dict):
                continue
            for label, value in groups.items():
                values = value if isinstance(value, dict) else {"score": value}
                for metric, number in values.items():
                    table.add_row(name, f"{axis.replace('_', ' ')} {label}", metric, _number(number), "")
                    name = ""
    stdout().print(table)
    _print_controls(results.tasks)
    if results.cost:
        _print_cost(results.cost)


def _print_controls(tasks: dict[str, TaskResults]) -> None:
    """A line per task with no-needle controls (or a grid without them): whether the model answered without the
    needle."""
    from rich.text import Text

    from lceval.analysis.sample_view import control_line

    for name, task in tasks.items():
        line = control_line(task)
        if line is not None:
            text, warning = line
            stdout().print(Text(f"{'warning: ' if warning else ''}{name} {text}",
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
    stdout().print(table)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


