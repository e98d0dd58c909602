"""Renderings of a comparison: text tables (rich, Markdown, CSV, JSON) and reports (HTML, Markdown, PNG).

The HTML report is one self-contained file (pictures embedded as base64 PNG); the Markdown report writes its
pictures into a folder beside it. Both hold the compare table, a heatmap of every task with a length x depth grid
(results' `cells`: each run, and each later run's difference to the first), a curve of every task with one
(results' `curve`), per-category bars of every task with a `category` axis, and a line per run and task on its
controls (results' `control`). What each picture calls a metric is what its task declares (lceval.api.task).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lceval.analysis.compare import Row, Run, compare_rows, comparison_warnings, task_declaration
from lceval.api.errors import UserError
from lceval.api.run_folder import is_control
from lceval.api.schema import TaskResults

# ------------------------------------------------------------------------------------------------ the table


def _score(cell) -> str:
    return "–" if cell is None else f"{cell.score:.3f} [{cell.ci[0]:.3f}, {cell.ci[1]:.3f}]"


def _diff(diff) -> str:
    return "–" if diff is None else f"{diff.difference:+.3f} [{diff.ci[0]:+.3f}, {diff.ci[1]:+.3f}]"


def table_header(runs: list[Run]) -> list[str]:
    header = ["task", "metric", "breakdown", "n"]
    for i, run in enumerate(runs):
        header.append(run.label)
        if i:
            header.append(f"Δ {run.label}")
    return header


def table_cells(row: Row) -> list[str]:
    """One row's texts: each run's score [95% CI], and each later run's paired difference to the first [95% CI]."""
    n = next((c.n for c in row.cells if c is not None), 0)
    out = [row.task, row.metric, row.breakdown, str(n)]
    for i, (cell, diff) in enumerate(zip(row.cells, row.diffs, strict=True)):
        out.append(_score(cell))
        if i:
            out.append(_diff(diff))
    return out


def _significance(diff) -> str:
    """'up' or 'down' where the 95% interval of the difference excludes 0, else ''."""
    if diff is None:
        return ""
    return "up" if diff.ci[0] > 0 else "down" if diff.ci[1] < 0 else ""


def rich_table(runs: list[Run], rows: list[Row]):
    from rich.table import Table

    table = Table(*table_header(runs), title="lceval compare: score [95% CI]; Δ = run − first run [paired 95% CI]")
    previous_task = None
    colour = {"up": "green", "down": "red"}
    for row in rows:
        cells = table_cells(row)
        if row.axis is not None:
            cells[0], cells[1], cells[2] = "", "", f"  {row.breakdown}"
        elif row.task == previous_task:
            cells[0] = ""
        previous_task = row.task
        for i, diff in enumerate(row.diffs[1:], start=1):
            if _significance(diff):
                cells[4 + 2 * i] = f"[{colour[_significance(diff)]}]{cells[4 + 2 * i]}[/]"
        table.add_row(*cells, style="dim" if row.axis else None)
    return table


def markdown_table(runs: list[Run], rows: list[Row]) -> str:
    header = table_header(runs)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = table_cells(row)
        if row.axis is not None:
            cells[2] = f"↳ {row.breakdown}"
        else:
            cells = [f"**{c}**" if i < 3 else c for i, c in enumerate(cells)]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def csv_text(runs: list[Run], rows: list[Row]) -> str:
    """Long format: one line per row and run, numbers unformatted."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "metric", "breakdown", "group", "kind", "run", "n", "score", "ci_low", "ci_high",
                     "diff_n", "diff", "diff_ci_low", "diff_ci_high", "diff_p_two_sided"])
    for row in rows:
        for run, cell, diff in zip(runs, row.cells, row.diffs, strict=True):
            base = [row.task, row.metric, row.axis or "all", row.label or "", row.kind, run.label]
            base += [cell.n, cell.score, *cell.ci] if cell else ["", "", "", ""]
            base += [diff.n, diff.difference, *diff.ci, diff.p_value] if diff else ["", "", "", "", ""]
            writer.writerow(base)
    return out.getvalue()


def json_data(runs: list[Run], rows: list[Row]) -> dict[str, Any]:
    def clean(obj: Any) -> Any:
        return None if obj is None else {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}

    return {
        "runs": [run.describe() for run in runs],
        "confidence": 0.95,
        "warnings": comparison_warnings(runs),
        "rows": [{"task": r.task, "metric": r.metric, "breakdown": r.axis or "all", "group": r.label, "kind": r.kind,
                  "runs": [clean(c) for c in r.cells], "diffs": [clean(d) for d in r.diffs]} for r in rows],
    }


def format_rows(runs: list[Run], rows: list[Row], fmt: str) -> str:
    if fmt == "md":
        return markdown_table(runs, rows) + "\n"
    if fmt == "csv":
        return csv_text(runs, rows)
    if fmt == "json":
        return json.dumps(json_data(runs, rows), indent=2) + "\n"
    raise UserError(f"unknown --format {fmt!r}; use table, md, csv or json.")


# ---------------------------------------------------------------------------------------------- the pictures


@dataclass
class Figure:
    name: str  # file stem
    caption: str
    png: bytes


def _png(draw) -> bytes:
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def _task(run: Run, task: str) -> TaskResults:
    """The run's results of the task; empty (no metrics, cells or curve) where it wrote none."""
    return run.task_results(task) or TaskResults.from_dict({})


def grid_tasks(runs: list[Run]) -> list[str]:
    """Tasks with a length x depth grid (results' `cells`) in any run's results."""
    names = [t for run in runs if run.results for t, res in run.results.tasks.items() if res.cells]
    return list(dict.fromkeys(names))


def heatmap_panels(runs: list[Run], task: str, metric: str, diff: bool):
    """Shared axes and the panels of a grid task's metric: each run, then each later run minus the first."""
    from lceval.analysis.plots import grid_on_axes

    cells = [_task(run, task).cells or [] for run in runs]
    lengths = sorted({c["length"] for group in cells for c in group})
    depths = sorted({c["depth"] for group in cells for c in group})
    grids = [grid_on_axes(group, metric, lengths, depths) for group in cells]
    panels = []
    for run, grid in zip(runs, grids, strict=True):
        mean = np.nanmean(grid) if np.isfinite(grid).any() else float("nan")
        panels.append((f"{run.label}\nmean {mean:.3f}", grid, "score"))
    if diff:
        for run, grid in zip(runs[1:], grids[1:], strict=True):
            panels.append((f"{run.label} − {runs[0].label}", grid - grids[0], "diff"))
    return lengths, depths, panels


def heatmap_figures(runs: list[Run], diff: bool = True) -> list[Figure]:
    from lceval.analysis.plots import plot_heatmap_panels

    figures = []
    for task in grid_tasks(runs):
        metrics = dict.fromkeys(m for run in runs for m in _task(run, task).metrics)
        for metric in metrics:
            lengths, depths, panels = heatmap_panels(runs, task, metric, diff and len(runs) > 1)
            label = task_declaration(runs, task).label(metric)
            title = f"{task}: {label}"
            png = _png(lambda out, lengths=lengths, depths=depths, panels=panels, title=title, label=label:
                       plot_heatmap_panels(out, lengths, depths, panels, title=title, metric=label))
            figures.append(Figure(f"{task.replace('/', '_')}_heatmap_{metric}", title, png))
    return figures


def curve_figures(runs: list[Run]) -> list[Figure]:
    """Tasks with a curve (results' `curve`: points with `mean_prompt_tokens`): the task's first declared metric
    that the points hold against mean prompt length, one line per run."""
    from lceval.analysis.plots import plot_curve

    tasks = dict.fromkeys(t for run in runs if run.results for t, res in run.results.tasks.items() if res.curve)
    figures = []
    for task in tasks:
        curves = {run.label: _task(run, task).curve or [] for run in runs}
        held = {key for points in curves.values() for p in points for key in p}
        declared = task_declaration(runs, task)
        metric = next((m.name for m in declared.metrics if m.name in held), None)
        if metric is None:
            continue
        series = {label: ([p["mean_prompt_tokens"] for p in points], [p.get(metric) for p in points])
                  for label, points in curves.items() if points}
        label = declared.label(metric)
        title = f"{task}: {label} against prompt length"
        png = _png(lambda out, series=series, title=title, label=label: plot_curve(
            out, series, title=title, xlabel="Mean prompt length (tokens)", ylabel=label))
        figures.append(Figure(f"{task.replace('/', '_')}_curve", title, png))
    return figures


def category_figures(runs: list[Run], rows: list[Row]) -> list[Figure]:
    """Per-category bars with 95% intervals for every task and metric broken down by category."""
    from lceval.analysis.plots import plot_category_bars

    figures = []
    keys = dict.fromkeys((r.task, r.metric) for r in rows if r.axis == "category")
    for task, metric in keys:
        mine = [r for r in rows if (r.task, r.metric, r.axis) == (task, metric, "category")]
        if any(abs(c.score) > 1 for r in mine for c in r.cells if c):
            continue  # not on a 0..1 scale
        categories = [r.label or "" for r in mine]
        series = {run.label: ([r.cells[i].score if r.cells[i] else np.nan for r in mine],
                              [r.cells[i].ci if r.cells[i] else (np.nan, np.nan) for r in mine])
                  for i, run in enumerate(runs)}
        title = f"{task} {metric} by category (bars: 95% intervals)"
        png = _png(lambda out, c=categories, s=series, t=title, m=metric: plot_category_bars(out, c, s, title=t,
                                                                                             ylabel=m))
        figures.append(Figure(f"{task.replace('/', '_')}_{metric}_by_category", title, png))
    return figures


def all_figures(runs: list[Run], rows: list[Row]) -> list[Figure]:
    return heatmap_figures(runs) + curve_figures(runs) + category_figures(runs, rows)


# --------------------------------------------------------------------------------------------------- reports

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#1a1a1a;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td.l{text-align:left} tr.sub td{color:#555;font-size:12px} tr.sub td.b{padding-left:2em}
td.up{background:#dcefff} td.down{background:#fde0e6} img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.warn{background:#fff6dc;padding:.5em 1em;border-left:4px solid #EBB839}
table.grid td{text-align:center;min-width:3em} table.grid a{color:#111;text-decoration:none;display:block}
details{border-left:4px solid #ccc;margin:.3em 0;padding:.2em .6em} details.pass{border-color:#0CD79F}
details.fail{border-color:#F0496E} details:target{background:#fffbe6} summary{cursor:pointer;font-size:13px}
span.m{color:#666} div.k{font-size:11px;color:#666;margin-top:.4em}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.4em;margin:.1em 0;font-size:12px}
pre.out{background:#eef6ff} mark{background:#ffe58a}
"""


def _runs_table_html(runs: list[Run]) -> str:
    keys = ["label", "model", "adapter", "backend", "status", "created_at", "git_sha", "path"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f'<td class="l">{html.escape(str(run.describe()[k] or "–"))}</td>' for k in keys)
                   + "</tr>" for run in runs)
    return f"<table><tr>{head}</tr>{body}</table>"


COST_NOTE = ("Tokens per second: prompt and generated tokens per second of generation, overall and per "
             "prompt-length bucket (K = 1024 tokens); engine start summed over a run's sessions.")


def cost_table(runs: list[Run]) -> tuple[list[str], list[tuple[str, list[str] | None]]] | None:
    """Each run's cost (results.json `cost`, lceval.running.cost) as text: the header, and per run its label and cells
    (None where the run recorded no cost): tokens, time, tokens/s overall and per length bucket. None: no run has
    one."""
    from lceval.running.cost import seconds_text, sorted_buckets

    costs = [run.results.cost if run.results else None for run in runs]
    if not any(costs):
        return None
    buckets = sorted_buckets(label for c in costs if c for label in c.get("by_length_bucket") or {})

    def rate(part: dict[str, Any] | None) -> str:
        value = (part or {}).get("tokens_per_s")
        return "–" if value is None else f"{value:,.0f}"

    head = ["run", "engine start", "samples", "prompt tokens", "generated tokens", "generation", "tokens/s",
            *(f"tokens/s {b}" for b in buckets)]
    rows = []
    for run, c in zip(runs, costs, strict=True):
        cells = None if not c else [
            seconds_text(c.get("engine_start_s")), str(c.get("samples", 0)), f"{c.get('prompt_tokens', 0):,}",
            f"{c.get('generated_tokens', 0):,}", seconds_text(c.get("generation_s")), rate(c),
            *(rate((c.get("by_length_bucket") or {}).get(b)) for b in buckets)]
        rows.append((run.label, cells))
    return head, rows


def _cost_table_html(runs: list[Run]) -> str:
    table = cost_table(runs)
    if table is None:
        return ""
    head, rows = table
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for label, cells in rows:
        body = (f"<td class='l' colspan='{len(head) - 1}'>no cost recorded</td>" if cells is None
                else "".join(f"<td>{html.escape(text)}</td>" for text in cells))
        lines.append(f"<tr><td class='l'>{html.escape(label)}</td>{body}</tr>")
    return f"<h2>Cost</h2><p>{COST_NOTE}</p>" + "".join(lines) + "</table>"


def _cost_table_md(runs: list[Run]) -> list[str]:
    table = cost_table(runs)
    if table is None:
        return []
    head, rows = table
    lines = ["## Cost", "", COST_NOTE, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells in rows:
        cells = cells if cells is not None else ["no cost recorded"] + [""] * (len(head) - 2)
        lines.append("| " + " | ".join(_md_cell(text) for text in [label, *cells]) + " |")
    return [*lines, ""]


def _md_cell(text: str) -> str:
    """Text in a Markdown table cell: its pipes escaped."""
    return str(text).replace("|", "\\|")


def _rows_table_html(runs: list[Run], rows: list[Row]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table_header(runs))
    lines = [f"<table><tr>{head}</tr>"]
    for row in rows:
        cells = table_cells(row)
        classes = ["l", "l", "l b", ""] + [""] * (len(cells) - 4)
        for i, diff in enumerate(row.diffs[1:], start=1):
            classes[4 + 2 * i] = _significance(diff)
        tds = "".join(f'<td class="{c}">{html.escape(text)}</td>' for c, text in zip(classes, cells, strict=True))
        lines.append(f'<tr class="{"sub" if row.axis else ""}">{tds}</tr>')
    return "".join(lines) + "</table>"


SAMPLES_PER_TASK = 100  # samples listed per task and run in the HTML report (all cells of a grid task)


def _colour(value: float | None) -> str:
    """The heatmaps' red-amber-green for a 0..1 value (grey where there is none)."""
    from lceval.analysis.plots import HEATMAP_COLOURS

    if value is None or not np.isfinite(value):
        return "#dddddd"
    stops = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in HEATMAP_COLOURS]
    x = min(max(float(value), 0.0), 1.0) * (len(stops) - 1)
    low = min(int(x), len(stops) - 2)
    mix = [round(a + (b - a) * (x - low)) for a, b in zip(stops[low], stops[low + 1], strict=True)]
    return "#" + "".join(f"{v:02x}" for v in mix)


def _anchor(run_index: int, task: str, sample_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{task}-{sample_id}")
    return f"s{run_index}-{safe}"


def _grid_html(run_index: int, task: str, records: list[dict[str, Any]]) -> str:
    """A grid task's samples as a clickable heatmap: depth down, length across, each cell links to its sample."""
    from lceval.analysis.sample_view import headline

    cells: dict[tuple[Any, Any], dict[str, Any]] = {}
    for record in (r for r in records if not is_control(r)):  # the controls have no cell
        meta = record.get("meta") or {}
        cells.setdefault((meta.get("length"), meta.get("depth")), record)
    lengths = sorted({k[0] for k in cells})
    depths = sorted({k[1] for k in cells})
    metric = next((h[0] for h in map(headline, records) if h), "score")
    head = "".join(f"<th>{html.escape(str(n))}</th>" for n in lengths)
    lines = [f"<table class='grid'><caption>{html.escape(task)}: {html.escape(metric)} per cell (click a cell for "
             f"its sample)</caption><tr><th>depth % \\ length</th>{head}</tr>"]
    for depth in depths:
        tds = []
        for length in lengths:
            record = cells.get((length, depth))
            if record is None:
                tds.append("<td></td>")
                continue
            head_score = headline(record)
            value = head_score[1] if head_score else None
            text = "–" if value is None else f"{value:.2f}"
            tds.append(f"<td style='background:{_colour(value)}'><a href='#{_anchor(run_index, task, record['id'])}'>"
                       f"{text}</a></td>")
        lines.append(f"<tr><th>{html.escape(f'{depth:g}' if isinstance(depth, float) else str(depth))}</th>"
                     f"{''.join(tds)}</tr>")
    return "".join(lines) + "</table>"


def _sample_html(run_index: int, record: dict[str, Any]) -> str:
    from lceval.analysis import sample_view

    state = sample_view.verdict(record)
    parts = sample_view.excerpt_parts(record)
    excerpt = ""
    if parts:
        before, marked, after = (html.escape(p) for p in parts)
        excerpt = f"<div class='k'>prompt (excerpt)</div><pre>{before}<mark>{marked}</mark>{after}</pre>"
    return (f"<details id='{_anchor(run_index, record['task'], record['id'])}' class='{state}'"
            f"{' open' if state == 'fail' else ''}><summary><b>{html.escape(record['task'])} "
            f"{html.escape(str(record['id']))}</b> · {html.escape(sample_view.scores_text(record))} · "
            f"<span class='m'>{html.escape(sample_view.meta_text(record))}</span></summary>{excerpt}"
            f"<div class='k'>target</div><pre>{html.escape(sample_view.target_text(record.get('target')))}</pre>"
            f"<div class='k'>output</div><pre class='out'>{html.escape(sample_view.shorten(record.get('output')))}"
            f"</pre></details>")


def samples_html(runs: list[Run]) -> str:
    """Each run's samples: a clickable grid for length x depth tasks, then the samples (failures open)."""
    from lceval.analysis.sample_view import failed

    parts = ["<h2>Samples</h2><p>What each model was asked (an excerpt around what it had to find, where the task "
             "gives one), what it answered, the target and the scores. Failed samples are open.</p>"]
    for i, run in enumerate(runs):
        parts.append(f"<h3>{html.escape(run.label)}</h3>")
        for task in run.tasks:
            records = run.task_records(task)
            if not records:
                continue
            is_grid = bool(_task(run, task).cells)
            if is_grid:
                parts.append(_grid_html(i, task, records))
                shown = sorted(records, key=lambda r: (is_control(r), r["meta"].get("length", 0),
                                                       r["meta"].get("depth", 0)))
            else:
                shown = sorted(records, key=lambda r: not failed(r))[:SAMPLES_PER_TASK]
            more = len(records) - len(shown)
            parts.append(f"<h4>{html.escape(task)}: {len(records)} samples"
                         f"{f' ({len(shown)} shown, failures first; lceval show --samples lists all)' if more else ''}"
                         "</h4>")
            parts += [_sample_html(i, record) for record in shown]
    return "\n".join(parts)


def control_lines(runs: list[Run]) -> list[tuple[str, str, bool]]:
    """(run label, line, warning) for each run's task with no-needle controls or a grid (sample_view.control_line)."""
    from lceval.analysis.sample_view import control_line

    lines = []
    for run in runs:
        for task, res in (run.results.tasks if run.results else {}).items():
            line = control_line(res)
            if line is not None:
                lines.append((run.label, f"{task} {line[0]}", line[1]))
    return lines


def _controls_html(runs: list[Run]) -> str:
    lines = control_lines(runs)
    if not lines:
        return ""
    items = "".join(f"<li class='{'warn' if warning else ''}'>{html.escape(label)}: {html.escape(text)}</li>"
                    for label, text, warning in lines)
    return ("<h2>No-needle control</h2><p>Each length's prompt without the needle, scored as the cells are; a model "
            f"that passes it answers from memory, not from the context.</p><ul>{items}</ul>")


def html_report(runs: list[Run], rows: list[Row], figures: list[Figure]) -> str:
    warnings = comparison_warnings(runs)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>lceval report</title>",
             f"<style>{_CSS}</style></head><body><h1>lceval report</h1>", "<h2>Runs</h2>", _runs_table_html(runs)]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(f"<div class='warn'><b>Not measured alike:</b><ul>{items}</ul></div>")
    parts.append(_cost_table_html(runs))
    parts += ["<h2>Scores</h2>",
              "<p>Each score is the mean over samples with its 95% interval (Wilson for pass/fail metrics, bootstrap "
              "otherwise); Δ is the paired difference to the first run on the samples both ran with the same prompt "
              "(Tango's score interval for pass/fail metrics, else a paired bootstrap). Blue: the interval lies "
              "above 0; red: below.</p>",
              _rows_table_html(runs, rows), _controls_html(runs), "<h2>Pictures</h2>"]
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(f"<h3>{html.escape(figure.caption)}</h3><img alt='{html.escape(figure.caption)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append(samples_html(runs))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def markdown_report(runs: list[Run], rows: list[Row], figures: list[Figure], folder: Path, link: str) -> str:
    """The Markdown report; pictures are written into `folder` and linked as `link/<name>.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# lceval report", "", "## Runs", ""]
    for run in runs:
        d = run.describe()
        lines.append(f"- `{d['label']}`: {d['model']}{' + ' + d['adapter'] if d['adapter'] else ''}, "
                     f"{d['backend'] or '?'}, {d['status']}, {d['created_at']} (`{d['path']}`)")
    warnings = comparison_warnings(runs)
    if warnings:
        lines += ["", "> **Not measured alike:**"] + [f"> - {w}" for w in warnings]
    lines += ["", "## Scores", "", "Mean over samples [95% CI]; Δ = paired difference to the first run [95% CI].", "",
              markdown_table(runs, rows), ""]
    lines += _cost_table_md(runs)
    controls = control_lines(runs)
    if controls:
        lines += ["## No-needle control", ""]
        lines += [f"- {'**warning:** ' if warning else ''}`{label}`: {text}" for label, text, warning in controls]
        lines.append("")
    lines += ["## Pictures", ""]
    for figure in figures:
        (folder / f"{figure.name}.png").write_bytes(figure.png)
        lines += [f"### {figure.caption}", "", f"![{figure.caption}]({link}/{figure.name}.png)", ""]
    return "\n".join(lines)


def summary_png(path: Path, runs: list[Run], rows: list[Row], figures: list[Figure]) -> Path:
    """One picture for a README or a PR: the overall rows of the compare table above the first heatmaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    overall = [r for r in rows if r.axis is None]
    pictures = [mpimg.imread(io.BytesIO(f.png), format="png") for f in figures[:2]]
    header = table_header(runs)
    table_height = 0.27 * (len(overall) + 2)
    heights = [table_height] + [8.5 * p.shape[0] / p.shape[1] for p in pictures]
    fig = plt.figure(figsize=(8.5 + 1.3 * max(0, len(header) - 6), sum(heights) + 0.4), dpi=130)
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    ax = fig.add_subplot(grid[0])
    ax.axis("off")
    ax.set_title("lceval compare: score [95% CI]; Δ vs the first run [paired 95% CI]", fontsize=10)
    table = ax.table(cellText=[table_cells(r) for r in overall], colLabels=header, loc="upper center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.auto_set_column_width(list(range(len(header))))
    for (row, col), cell in table.get_celld().items():
        if row == 0:
            cell.set_facecolor("#f0f0f0")
        elif col >= 5 and (col - 4) % 2 == 0:
            sign = _significance(overall[row - 1].diffs[(col - 4) // 2])
            cell.set_facecolor({"up": "#dcefff", "down": "#fde0e6"}.get(sign, "white"))
    for i, picture in enumerate(pictures, start=1):
        sub = fig.add_subplot(grid[i])
        sub.imshow(picture)
        sub.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_paths: list[Path], output: Path) -> list[Path]:
    """Write the report the suffix of `output` asks for (.html, .md or .png); returns the files written."""
    from lceval.analysis.compare import load_runs

    suffix = output.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".png"):
        raise UserError(f"report {output} must end in .html, .md or .png.")
    runs = load_runs(run_paths)
    rows = compare_rows(runs)
    figures = all_figures(runs, rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        return [summary_png(output, runs, rows, figures)]
    if suffix == ".md":
        folder = output.with_name(f"{output.stem}_files")
        output.write_text(markdown_report(runs, rows, figures, folder, folder.name), encoding="utf-8")
        return [output, folder]
    output.write_text(html_report(runs, rows, figures), encoding="utf-8")
    return [output]
