"""A run killed with SIGKILL and started again with the same run id loses nothing and repeats nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

GRID = ["-o", "needle.lengths=[256,512,1024,1536,1984]", "-o", "needle.depths=[0,20,40,60,80,100]",
        "-o", "needle.max_new_tokens=24"]
# Batch size 1: every sample is computed alone, so its output cannot depend on which samples shared its batch.
COMMON = ["run", "--model", "lceval-demo", "--backend", "hf", "--batch-size", "1", *GRID]
TOTAL = 35  # 5 x 6 cells and a no-needle control per length


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_kill_minus_nine_then_resume_equals_an_uninterrupted_run(tmp_path, cli_env, lceval_cmd):
    out = tmp_path / "results"
    reference = subprocess.run([*lceval_cmd, *COMMON, "--out", str(out), "--run-id", "whole"], env=cli_env,
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr

    killed_dir = out / "killed"
    samples = killed_dir / "samples.jsonl"
    proc = subprocess.Popen([*lceval_cmd, *COMMON, "--out", str(out), "--run-id", "killed"], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_text().splitlines()) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; enlarge the grid"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(lines(samples))
    assert 8 <= done_before < TOTAL
    with samples.open("a") as handle:  # what a kill in the middle of a write leaves behind
        handle.write('{"task": "needle", "id": "L1984-D100", "prompt_ha')

    resumed = subprocess.run([*lceval_cmd, *COMMON, "--out", str(out), "--run-id", "killed"], env=cli_env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "repaired" in resumed.stderr and f"{done_before} samples already done" in resumed.stderr

    records = lines(samples)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == TOTAL
    whole = {r["id"]: r for r in lines(out / "whole" / "samples.jsonl")}
    for record in records:
        assert record["output"] == whole[record["id"]]["output"]
        assert record["scores"] == whole[record["id"]]["scores"]
    assert json.loads((killed_dir / "results.json").read_text())["tasks"] == \
        json.loads((out / "whole" / "results.json").read_text())["tasks"]
    manifest = json.loads((killed_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][-1]["samples_run"] == TOTAL - done_before
    assert (killed_dir / "needle_heatmap_rouge_l_f1.png").stat().st_size > 10_000

    again = subprocess.run([*lceval_cmd, *COMMON, "--out", str(out), "--run-id", "killed"], env=cli_env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and len(lines(samples)) == TOTAL  # a finished run reruns nothing


def test_the_default_run_id_names_the_settings_and_the_same_command_finds_the_same_folder(demo_model, tmp_path):
    """Without --run-id, the same settings give the same folder (so the same command resumes); a setting that
    changes a prompt gives another."""
    from rich.console import Console

    from lceval.running.config import RunConfig
    from lceval.running.runner import plan

    def folder(**changes):
        settings = {"task_options": {"passkey": {"lengths": [200], "depths": [50]}}, **changes}
        cfg = RunConfig(model=str(demo_model), tasks=["passkey"], backend="hf", out=str(tmp_path), **settings)
        return plan(cfg, Console(quiet=True), write=False).run.path

    first = folder()
    assert first == folder()
    assert first.name.startswith(f"{demo_model.name}-passkey-") and "tok-" in first.name
    assert folder(max_length=1024).name != first.name and "1024tok" in folder(max_length=1024).name
    assert folder(seed=1) != first
    assert folder(task_options={"passkey": {"lengths": [300], "depths": [50]}}) != first
