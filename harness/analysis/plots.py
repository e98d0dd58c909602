"""Needle heatmaps: depth down the side (0% at the top), context length across, fixed 0..1 red-amber-green."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from lceval.api.schema import Manifest, Results
from lceval.api.task import declaration_of

# gkamradt's colours, kept by the seed paper and NeedleBench: red (0) -> amber -> green (1).
HEATMAP_COLOURS = ["#F0496E", "#EBB839", "#0CD79F"]


def grid_from_cells(cells: list[dict[str, Any]], metric: str) -> tuple[list[int], list[float], np.ndarray]:
    """Lengths, depths and a depth x length matrix of the metric's cell means (NaN where a cell is missing)."""
    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in cells:
        grid[depths.index(c["depth"]), lengths.index(c["length"])] = c[metric]
    return lengths, depths, grid


def write_grid_csv(path: Path, lengths: list[int], depths: list[float], grid: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["depth_percent", *lengths])
        for depth, row in zip(depths, grid, strict=True):
            writer.writerow([f"{depth:g}", *("" if np.isnan(v) else f"{v:.4f}" for v in row)])


def length_labels(lengths: list[int]) -> list[str]:
    """One format for every column: 8K, 16K ... where all are whole thousands, 14.3K where all are above 1000."""
    if all(n % 1000 == 0 for n in lengths):
        return [f"{n // 1000}K" for n in lengths]
    if all(n >= 1000 for n in lengths):
        return [f"{n / 1000:.1f}K" for n in lengths]
    return [str(n) for n in lengths]


def _column_position(lengths: list[int], value: float) -> float:
    """Where `value` falls on the column axis, interpolating between column centres."""
    if len(lengths) == 1:
        return 0.0
    return float(np.interp(value, lengths, np.arange(len(lengths))))


def plot_heatmap(path: Path, lengths: list[int], depths: list[float], grid: np.ndarray, *, title: str,
                 metric: str, training_length: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("needle", HEATMAP_COLOURS)
    width = max(6.0, 0.55 * len(lengths) + 3)
    height = max(3.5, 0.38 * len(depths) + 2)
    fig, ax = plt.subplots(figsize=(width, height), dpi=120)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(len(lengths)), length_labels(lengths), rotation=45 if len(lengths) > 8 else 0)
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("Context length (tokens)")
    ax.set_ylabel("Needle depth (%)")
    ax.set_title(title, fontsize=10)
    if len(lengths) * len(depths) <= 400:
        for (row, col), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="#1a1a1a")
    if training_length and lengths[0] <= training_length <= lengths[-1]:
        x = _column_position(lengths, training_length)
        ax.axvline(x, color="#1f3b8f", linestyle="--", linewidth=1.5)
        # Said in the axis label, where no tick label or cell can cover it (a legend below the axes did).
        ax.set_xlabel(f"Context length (tokens); dashed line: training length {training_length:,}")
    colourbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colourbar.set_label(metric)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_title(manifest: Manifest, task: str, metric: str, mean: float | None) -> str:
    """The run's model (and adapter), and the metric's label (as the task declares it) with its mean."""
    model = manifest.model.get("spec", "?")
    adapter = (manifest.adapter or {}).get("spec")
    name = f"{model} + {adapter}" if adapter else model
    score = f"  mean {mean:.3f}" if mean is not None else ""
    return f"{task}: {name}\n{declaration_of(manifest, task).label(metric)}{score}"


def write_grid_heatmaps(run_dir: Path, results: Results, manifest: Manifest, *, task: str,
                        training_length: int | None = None) -> list[Path]:
    """A PNG and a CSV per metric of a grid task's cells (results' `cells`: length x depth); returns the files
    written."""
    task_results = results.tasks[task]
    written: list[Path] = []
    if not task_results.cells:  # no sample has finished (or the task has no grid): nothing to draw
        return written
    for metric in task_results.metrics:
        lengths, depths, grid = grid_from_cells(task_results.cells, metric)
        stem = f"{task.replace('/', '_')}_heatmap_{metric}"
        csv_path = run_dir / f"{stem}.csv"
        write_grid_csv(csv_path, lengths, depths, grid)
        title = heatmap_title(manifest, task, metric, task_results.metrics.get(metric))
        label = declaration_of(manifest, task).label(metric)
        written += [plot_heatmap(run_dir / f"{stem}.png", lengths, depths, grid, title=title, metric=label,
                                 training_length=training_length), csv_path]
    return written


def plot_curve(path: Path, series: dict[str, tuple[list[float], list[float]]], *, title: str, xlabel: str,
               ylabel: str = "Score", ylim: tuple[float, float] = (0.0, 1.0),
               top_ticks: tuple[list[float], list[str]] | None = None, top_label: str | None = None) -> Path:
    """Scores against a length axis, one line per series, on a fixed y range so that pictures compare by eye.

    `top_ticks` labels points on a second x axis along the top (the topic count of each point, say), so the
    plot can show both what was varied and what it cost in tokens.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    markers = ["o", "s", "^", "D", "v", "P"]
    colours = [HEATMAP_COLOURS[2], "#1f3b8f", HEATMAP_COLOURS[0], HEATMAP_COLOURS[1], "#6b6b6b", "#9b59b6"]
    for i, (label, (xs, ys)) in enumerate(series.items()):
        # Later series are drawn thinner, dashed and smaller on top, so that equal values stay visible.
        ax.plot(xs, ys, marker=markers[i % len(markers)], color=colours[i % len(colours)], linewidth=2.2 - 0.5 * i,
                linestyle="-" if i == 0 else "--", markersize=max(8 - 2 * i, 4), label=label, clip_on=False,
                zorder=3 + i)
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.grid(True, color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    if top_ticks is not None:
        top = ax.twiny()
        top.set_xlim(ax.get_xlim())
        top.set_xticks(top_ticks[0], top_ticks[1], fontsize=8)
        if top_label:
            top.set_xlabel(top_label, fontsize=9)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- comparisons: panels, differences, bars

DIFF_CMAP = "RdBu"  # diverging: red where the candidate is worse, white at no change, blue where it is better


def grid_on_axes(cells: list[dict[str, Any]], metric: str, lengths: list[int], depths: list[float]) -> np.ndarray:
    """A depth x length matrix of the metric on given axes (NaN where the run has no such cell)."""
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in cells:
        if c["length"] in lengths and c["depth"] in depths and c.get(metric) is not None:
            grid[depths.index(c["depth"]), lengths.index(c["length"])] = c[metric]
    return grid


def _annotate(ax, grid: np.ndarray, signed: bool) -> None:
    if grid.size > 400:
        return
    for (row, col), value in np.ndenumerate(grid):
        text = "n/a" if np.isnan(value) else (f"{value:+.2f}" if signed else f"{value:.2f}")
        dark = signed and not np.isnan(value) and abs(value) > 0.6  # the diverging map's deep ends
        ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if dark else "#1a1a1a")


def plot_heatmap_panels(path: Path | Any, lengths: list[int], depths: list[float],
                        panels: list[tuple[str, np.ndarray, str]], *, title: str, metric: str) -> Path | Any:
    """Heatmaps side by side on shared axes; each panel is (title, grid, 'score' or 'diff').

    Score panels use the needle colours on 0..1; difference panels a diverging map fixed on -1..+1 and centred on 0,
    so that equal colours mean equal changes in every picture. Missing cells are grey and marked n/a.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    score_cmap = LinearSegmentedColormap.from_list("needle", HEATMAP_COLOURS)
    width = max(3.6, 0.5 * len(lengths) + 2.2)
    height = max(3.4, 0.36 * len(depths) + 2.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), dpi=120, squeeze=False)
    for ax, (label, grid, kind) in zip(axes[0], panels, strict=True):
        diff = kind == "diff"
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=DIFF_CMAP if diff else score_cmap,
                          vmin=-1.0 if diff else 0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_facecolor("#d9d9d9")
        ax.set_xticks(range(len(lengths)), length_labels(lengths), rotation=45 if len(lengths) > 8 else 0)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_xlabel("Context length (tokens)")
        ax.set_ylabel("Needle depth (%)")
        ax.set_title(label, fontsize=9)
        _annotate(ax, grid, signed=diff)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
        bar.set_label("Change (red worse, blue better)" if diff else metric, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_category_bars(path: Path | Any, categories: list[str],
                       series: dict[str, tuple[list[float], list[tuple[float, float]]]], *, title: str,
                       ylabel: str = "Score") -> Path | Any:
    """Grouped bars, one group per category and one bar per run, with each score's 95% interval; fixed 0..1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = [HEATMAP_COLOURS[2], "#1f3b8f", HEATMAP_COLOURS[0], HEATMAP_COLOURS[1], "#6b6b6b", "#9b59b6"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) * max(1, len(series)) ** 0.5 + 2), 4.2), dpi=120)
    width = 0.8 / max(1, len(series))
    for i, (label, (values, intervals)) in enumerate(series.items()):
        xs = np.arange(len(categories)) + (i - (len(series) - 1) / 2) * width
        ys = np.array(values, dtype=float)
        errors = np.array([[max(0.0, y - lo), max(0.0, hi - y)] for y, (lo, hi) in zip(ys, intervals, strict=True)]).T
        ax.bar(xs, ys, width * 0.95, yerr=errors, capsize=3, color=colours[i % len(colours)], label=label,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
    ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0, ha="right"
                  if len(categories) > 4 else "center")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("Category")
    ax.grid(True, axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16 if len(categories) <= 4 else -0.3), fontsize=8,
              frameon=False, ncol=min(len(series), 4))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
