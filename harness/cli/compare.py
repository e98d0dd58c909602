"""`lceval compare`, `lceval gate` and `lceval report`: commands that read run folders only, never a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lceval.api.errors import UserError
from lceval.api.settings import CompareFlags, allowed
from lceval.cli.app import app, console, stdout


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders; differences are taken to the first.")],
    format: Annotated[str, typer.Option("--format", "-f", help="table (rich), md, csv or json. Allowed: "
                                                               f"{allowed(CompareFlags, 'format')}.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Runs side by side: each metric with its 95% CI, and each run's paired difference to the first."""
    from lceval.analysis.compare import compare_rows, comparison_warnings, load_runs
    from lceval.analysis.report import format_rows, rich_table
    from lceval.api import files
    from lceval.api.settings import flags

    format = flags(CompareFlags, format=format).format
    if output:
        files.check_output_file(output, "--output")
    runs = load_runs(run_dirs)
    rows = compare_rows(runs)
    if format != "json":
        for warning in comparison_warnings(runs):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if format == "table":

        if output:
            with files.open_text(output, "w", "--output") as handle:
                Console(file=handle, width=200).print(rich_table(runs, rows))
        else:
            stdout().print(rich_table(runs, rows))
        return
    text = format_rows(runs, rows, format)
    if output:
        files.write_text(output, text, "--output")
        console.print(f"wrote {output}")
    else:
        print(text, end="")


@app.command()
def gate(
    candidate: Annotated[Path, typer.Option(help="The run folder of the checkpoint to gate.")],
    baseline: Annotated[Path, typer.Option(help="Baseline run folder or its results.json (e.g. "
                                                "results/baselines/NAME); with --update-baseline, where to write.")],
    policy: Annotated[Path | None, typer.Option(help="Gate policy YAML (default: every 0..1 metric of the "
                                                     "baseline, overall, margin 0.05, alpha 0.05).")] = None,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Gate on the shared samples even when "
                                                 "task versions, settings, prompts or scorers differ.")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the verdict as JSON here.")] = None,
    summary: Annotated[Path | None, typer.Option(help="Append the Markdown summary to this file "
                                                      "(e.g. $GITHUB_STEP_SUMMARY).")] = None,
    update_baseline: Annotated[bool, typer.Option("--update-baseline", help="Promote the candidate to the baseline "
                                                  "folder (manifest, results, samples) instead of gating.")] = False,
) -> None:
    """Gate a candidate against a baseline: exit 0 pass, 1 regression, 2 unusable input."""
    from lceval.analysis.compare import load_run
    from lceval.analysis.gate import default_policy, load_policy, promote, run_gate, verdict_json, verdict_markdown
    from lceval.api import files

    for path, flag in ((json_file, "--json"), (summary, "--summary")):
        if path is not None:  # refused before any work, so that a bad path does not cost a verdict
            files.check_output_file(path, flag)
    if update_baseline:
        files.check_output_dir(baseline, "--baseline")
        run = promote(candidate, baseline)
        console.print(f"promoted {run.path} ({len(run.records)} samples) to the baseline {baseline}; commit it.")
        return
    base, cand = load_run(baseline), load_run(candidate)
    rules = load_policy(policy) if policy else default_policy(base)
    verdict = run_gate(base, cand, rules, allow_mismatch)
    text = verdict_markdown(verdict)
    print(text)
    if summary:
        files.append_text(summary, text + "\n", "--summary")
    if json_file:
        files.write_json(json_file, verdict_json(verdict), "--json")
    failed = sum(not c.passed for c in verdict.checks)
    console.print("gate: [bold green]pass[/]" if verdict.passed
                  else f"gate: [bold red]fail[/] ({failed} of {len(verdict.checks)} checks)", highlight=False)
    raise typer.Exit(verdict.exit_code)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders; differences are taken to the first.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="report.html (self-contained), report.md "
                                                                "(pictures in report_files/) or report.png.")],
) -> None:
    """A report of one or more runs: the compare table, heatmaps and their differences, curves, categories."""
    from lceval.analysis.report import write_report
    from lceval.api import files

    if output.is_dir():
        raise UserError(f"cannot write --output {output}: it is a folder, not a file; give a file name.")
    files.check_output_dir(output.parent, "--output's folder")  # created if missing
    try:
        written = write_report(run_dirs, output)
    except OSError as err:
        raise files.os_error(err, Path(err.filename or output), "write", "--output") from None
    for path in written:
        console.print(f"wrote {path}")


def heatmap_comparison(run_dirs: list[Path], task: str, diff: bool, out: Path | None) -> list[Path]:
    """`lceval heatmap A B [--diff]`: per metric, both heatmaps side by side (and B - A on a diverging scale)."""
    from lceval.analysis.compare import load_runs, task_declaration
    from lceval.analysis.plots import plot_heatmap_panels, write_grid_csv
    from lceval.analysis.report import grid_tasks, heatmap_panels

    if len(run_dirs) != 2:
        raise UserError(f"lceval heatmap takes one run folder, or two to compare; got {len(run_dirs)}.")
    runs = load_runs(run_dirs)
    if task not in grid_tasks(runs) or any(r.task_results(task) is None for r in runs):
        missing = next((r for r in runs if r.task_results(task) is None), runs[0])
        raise UserError(f"run {missing.path} has no results for the grid task {task!r}; pass --task.")
    from lceval.api import files

    folder = files.ensure_dir(out, "--out") if out else runs[1].path
    written = []
    for metric in runs[0].task_results(task).metrics:
        lengths, depths, panels = heatmap_panels(runs, task, metric, diff)
        stem = f"{task.replace('/', '_')}_heatmap_{'diff' if diff else 'pair'}_{metric}"
        label = task_declaration(runs, task).label(metric)
        title = f"{task}: {label}"
        written.append(plot_heatmap_panels(folder / f"{stem}.png", lengths, depths, panels, title=title,
                                           metric=label))
        if diff:
            write_grid_csv(folder / f"{stem}.csv", lengths, depths, panels[-1][1])
            written.append(folder / f"{stem}.csv")
    return written

