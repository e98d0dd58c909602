"""The run folder: torn-line repair, strict reading, results aggregation and heatmap files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lceval.analysis.plots import grid_from_cells, plot_heatmap, write_grid_heatmaps
from lceval.api.errors import UserError
from lceval.api.run_folder import RunFolder
from lceval.api.schema import Manifest, Results
from lceval.tasks.needle import aggregate_grid


def record(length, depth, rouge, found):
    return {"task": "needle", "id": f"L{length}-D{depth}", "meta": {"length": length, "depth": depth,
            "realized_depth": depth, "prompt_tokens": length}, "scores": {"key_facts": found,
            "rouge_l_f1": rouge, "exact_phrase": found}}


def test_torn_last_line_is_cut_and_whole_lines_kept(tmp_path):
    run = RunFolder(tmp_path)
    run.samples_path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')
    assert run.repair_samples() == len('{"c": ')
    assert run.records() == [{"a": 1}, {"b": 2}]
    assert run.repair_samples() == 0


def test_a_malformed_line_in_the_middle_is_an_error_not_a_silent_drop(tmp_path):
    run = RunFolder(tmp_path)
    run.samples_path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(UserError, match="line 2"):
        run.records()


def test_aggregate_grid_means_per_cell_length_and_depth():
    records = [record(1000, 0, 1.0, 1.0), record(1000, 50, 0.5, 0.0), record(2000, 0, 0.0, 0.0),
               record(2000, 50, 0.25, 1.0)]
    agg = aggregate_grid(records)
    assert agg["metrics"] == {"key_facts": 0.5, "rouge_l_f1": pytest.approx(0.4375), "exact_phrase": 0.5}
    assert agg["by_length"]["1000"]["rouge_l_f1"] == 0.75
    assert agg["by_depth"]["50"]["key_facts"] == 0.5
    assert [(c["length"], c["depth"]) for c in agg["cells"]] == [(1000, 0), (1000, 50), (2000, 0), (2000, 50)]


def test_heatmap_grid_puts_depth_down_and_length_across(tmp_path):
    agg = aggregate_grid([record(1000, 0, 1.0, 1.0), record(2000, 50, 0.25, 0.0)])
    lengths, depths, grid = grid_from_cells(agg["cells"], "rouge_l_f1")
    assert lengths == [1000, 2000] and depths == [0, 50]
    assert grid[0, 0] == 1.0 and grid[1, 1] == 0.25 and np.isnan(grid[0, 1])
    manifest = Manifest.from_dict({"model": {"spec": "m"}, "adapter": {"spec": "a"}})
    results = Results.from_dict({"tasks": {"needle": agg}})
    files = write_grid_heatmaps(tmp_path, results, manifest, task="needle", training_length=1500)
    names = sorted(f.name for f in files)
    assert names == ["needle_heatmap_exact_phrase.csv", "needle_heatmap_exact_phrase.png",
                     "needle_heatmap_key_facts.csv", "needle_heatmap_key_facts.png",
                     "needle_heatmap_rouge_l_f1.csv", "needle_heatmap_rouge_l_f1.png"]
    assert (tmp_path / "needle_heatmap_rouge_l_f1.csv").read_text().splitlines() == [
        "depth_percent,1000,2000", "0,1.0000,", "50,,0.2500"]


def test_heatmap_png_is_an_image_of_sensible_size(tmp_path):
    from PIL import Image

    grid = np.linspace(0, 1, 100).reshape(10, 10)
    path = plot_heatmap(tmp_path / "h.png", list(range(8000, 88000, 8000)), list(range(0, 100, 10)), grid,
                        title="t", metric="rouge_l_f1", training_length=80000)
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 600 and height >= 400
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    # The fixed scale: both ends of red -> green appear for a 0..1 grid.
    assert any(abs(pixels - np.array([0xF0, 0x49, 0x6E])).sum(axis=1) < 20)
    assert any(abs(pixels - np.array([0x0C, 0xD7, 0x9F])).sum(axis=1) < 20)


def test_results_json_round_trip(tmp_path):
    """What a task's aggregate returns is written as it is (breakdowns and the task's own keys beside the schema's)
    and read back typed, equal."""
    entry = {"version": "2", "n_expected": 4, "n_samples": 4, "metrics": {"m": 1.0}, "by_length": {"1000": {"m": 1.0}},
             "cells": [{"length": 1000, "depth": 0, "n": 1, "m": 1.0}], "average": 100.0}
    run = RunFolder(tmp_path)
    run.write_results(Results.from_dict({"schema_version": 1, "run_id": "r", "tasks": {"x": entry}}))
    assert json.loads(run.results_path.read_text())["tasks"]["x"] == entry
    read = run.results().tasks["x"]
    assert read.metrics == {"m": 1.0} and read.breakdowns() == {"length": {"1000": {"m": 1.0}}}
    assert read.cells == entry["cells"] and read.curve is None and read.extra == {"average": 100.0}
    assert run.results().to_dict() == json.loads(run.results_path.read_text())


def test_a_manifest_from_an_older_lceval_reads_with_empty_fields(tmp_path):
    """A manifest without fields this schema added (declarations, backend) still reads: readers get empty values."""
    run = RunFolder(tmp_path)
    run.write_manifest({"run_id": "old", "status": "complete", "model": {"spec": "m"}, "tasks": {"needle": {}},
                        "unknown_key": 1})
    manifest = run.manifest()
    assert manifest.run_id == "old" and manifest.declarations == {} and manifest.backend is None
    assert manifest.software == {} and manifest.sessions == []


def test_hub_id_resolves_through_a_local_hub_cache(tmp_path, demo_model, monkeypatch):
    """The real hub-loading path (snapshot_download), served offline from a hub cache laid out on disk."""
    import shutil

    from lceval.running.model_files import resolve_model

    repo = tmp_path / "hub" / "models--lceval--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(demo_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    ref = resolve_model("lceval/tiny-llama")
    assert ref.path == repo / "snapshots" / commit and (ref.path / "config.json").exists()
    assert ref.revision == commit  # recorded in the manifest
    with pytest.raises(UserError, match="could not be fetched from the hub"):
        resolve_model("lceval/not-there")
