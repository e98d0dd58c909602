"""The CLI as a user drives it: YAML config and flags, --limit then the rest, show, heatmap, tasks."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.slow


def lceval(cmd, env, *args):
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cli_env, lceval_cmd):
    """A run configured by YAML, first limited to 2 samples by a flag, then completed without the limit."""
    base = tmp_path_factory.mktemp("cli")
    config = base / "run.yaml"
    config.write_text(
        "model: lceval-demo\n"
        "backend: hf\n"
        "tasks: needle\n"
        f"out: {base / 'results'}\n"
        "run_id: small\n"
        "limit: 100\n"
        "task_options:\n"
        "  needle:\n"
        "    lengths: [256, 512]\n"
        "    depths: [0, 50, 100]\n"
        "    training_length: 400\n"
    )
    first = lceval(lceval_cmd, cli_env, "run", "--config", str(config), "--limit", "2")
    run_dir = base / "results" / "small"
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2  # the flag beat the file's limit
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "partial"
    second = lceval(lceval_cmd, cli_env, "run", "--config", str(config))
    return run_dir, first, second


def test_limited_run_then_full_run_completes_the_same_folder(small_run):
    run_dir, _, second = small_run
    assert "2 samples already done, 6 to run" in second.stderr  # 6 cells and a no-needle control per length
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 8 and len({r["id"] for r in records}) == 8
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["backend"] == "hf"
    assert manifest["model"]["spec"] == "lceval-demo" and len(manifest["model"]["sha256"]) == 64
    assert manifest["tasks"]["needle"]["settings"]["lengths"] == [256, 512]
    assert manifest["software"]["packages"]["rouge"] == "1.0.1"
    assert manifest["tokenizer"]["stop_token_ids"] and manifest["tokenizer"]["chat_template_sha256"]
    assert "6/6" in second.stderr and "samples/s" in second.stderr and "eta" in second.stderr  # the progress bar


def test_show_prints_the_results_table(small_run, cli_env, lceval_cmd):
    run_dir, _, _ = small_run
    out = lceval(lceval_cmd, cli_env, "show", str(run_dir)).stdout
    assert "rouge_l_f1" in out and "exact_phrase" in out and "8/8" in out and "length 512" in out
    assert "needle no-needle control: " in out and " of 2 lengths answered without the needle" in out


def test_heatmap_command_redraws_png_and_csv(small_run, cli_env, lceval_cmd):
    run_dir, _, _ = small_run
    png = run_dir / "needle_heatmap_rouge_l_f1.png"
    png.unlink()
    proc = lceval(lceval_cmd, cli_env, "heatmap", str(run_dir))
    assert "needle_heatmap_rouge_l_f1.png" in proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    grid = (run_dir / "needle_heatmap_exact_phrase.csv").read_text().splitlines()
    assert grid[0] == "depth_percent,256,512" and [row.split(",")[0] for row in grid[1:]] == ["0", "50", "100"]


def test_tasks_lists_tasks_and_backends(cli_env, lceval_cmd):
    out = lceval(lceval_cmd, cli_env, "tasks").stdout
    for name in ("needle", "hf", "vllm"):
        assert name in out
