"""The cost line of every run (lceval.running.cost) and `lceval run --dry-run`, on the demo model with hf."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lceval.cli import run_cli
from lceval.running import cost, runner

# Two prompt-length buckets (<1K and 1K-2K), three samples in each (two cells and the length's no-needle control),
# short answers.
GRID = ["-o", "needle.lengths=[256,1100]", "-o", "needle.depths=[0,100]", "-o", "needle.max_new_tokens=4"]
RUN = ["run", "--model", "lceval-demo", "--backend", "hf"]  # the demo named, whatever the default model is




@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, offline) -> Path:
    """A run of 6 samples in two sessions: --limit 1, then the rest."""
    out = tmp_path_factory.mktemp("cost")
    common = [*RUN, "--out", str(out), "--run-id", "c", *GRID]
    assert run_cli([*common, "--limit", "1"]) == 0
    assert run_cli(common) == 0
    return out / "c"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ the cost line


def test_cost_is_recorded_per_session_and_summed_over_a_resumed_run(resumed_run):
    total = json.loads((resumed_run / "results.json").read_text())["cost"]
    records = lines(resumed_run / "samples.jsonl")
    assert total["sessions"] == 2 and total["untimed_samples"] == 0
    assert total["samples"] == len(records) == 6
    assert total["prompt_tokens"] == sum(r["prompt_tokens"] for r in records)
    assert total["generated_tokens"] == sum(r["output_tokens"] for r in records) > 0
    assert total["engine_start_s"] > 0 and total["generation_s"] > 0 and total["tokens_per_s"] > 0
    assert list(total["by_length_bucket"]) == ["<1K", "1K-2K"]
    for label, part in total["by_length_bucket"].items():
        mine = [r for r in records if cost.length_bucket(r["prompt_tokens"]) == label]
        assert part["samples"] == len(mine) == 3
        assert part["prompt_tokens"] == sum(r["prompt_tokens"] for r in mine)
        assert part["generated_tokens"] == sum(r["output_tokens"] for r in mine)
        assert part["seconds"] > 0 and part["tokens_per_s"] > 0
    assert sum(p["seconds"] for p in total["by_length_bucket"].values()) == pytest.approx(total["generation_s"],
                                                                                          abs=0.01)
    needle = total["tasks"]["needle"]
    assert {k: needle[k] for k in ("samples", "prompt_tokens", "generated_tokens")} == \
        {k: total[k] for k in ("samples", "prompt_tokens", "generated_tokens")}

    sessions = json.loads((resumed_run / "manifest.json").read_text())["sessions"]
    assert [s["cost"]["samples"] for s in sessions] == [1, 5]
    assert all(s["cost"]["engine_start_s"] > 0 and s["cost"]["tasks"]["needle"]["generation_s"] > 0 for s in sessions)
    assert sum(s["cost"]["prompt_tokens"] for s in sessions) == total["prompt_tokens"]
    assert sum(s["cost"]["engine_start_s"] for s in sessions) == pytest.approx(total["engine_start_s"], abs=0.002)


def test_show_prints_the_cost_after_the_results(resumed_run, capsys):
    assert run_cli(["show", str(resumed_run)]) == 0
    out = capsys.readouterr().out
    assert out.index("rouge_l_f1") < out.index("cost: engine start")
    assert "(2 sessions)" in out and "tokens/s" in out and "1K-2K" in out


def test_the_html_report_has_a_cost_table_per_run(resumed_run, tmp_path, capsys):
    assert run_cli(["report", str(resumed_run), "--output", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    table = page[page.index("<h2>Cost</h2>"):page.index("<h2>Scores</h2>")]
    assert "tokens/s &lt;1K" in table and "tokens/s 1K-2K" in table and "<td class='l'>c</td>" in table


def test_the_markdown_report_has_the_same_cost_table(resumed_run, tmp_path, capsys):
    assert run_cli(["report", str(resumed_run), "--output", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    table = text[text.index("## Cost"):text.index("## Pictures")].splitlines()
    total = json.loads((resumed_run / "results.json").read_text())["cost"]
    assert table[4].startswith("| run | engine start | samples | prompt tokens | generated tokens | generation | "
                               "tokens/s | tokens/s <1K")
    row = next(line for line in table if line.startswith("| c |"))
    assert f"| {total['samples']} | {total['prompt_tokens']:,} | {total['generated_tokens']:,} |" in row


def test_buckets_are_powers_of_two_kilotokens():
    assert [cost.length_bucket(n) for n in (0, 1023, 1024, 2047, 2048, 131071, 131072, 2**20)] == \
        ["<1K", "<1K", "1K-2K", "1K-2K", "2K-4K", "64K-128K", "128K-256K", "1M-2M"]
    assert cost.sorted_buckets(["1M-2M", "2K-4K", "<1K", "512K-1M"]) == ["<1K", "2K-4K", "512K-1M", "1M-2M"]


def test_a_batch_shares_its_time_by_tokens_and_the_buckets_add_up():
    finished = [cost.Finished(2.0, 3000, 0), cost.Finished(2.001, 1000, 0),  # one batch, two buckets
                cost.Finished(3.0, 500, 0)]  # alone, a second later
    task = cost.task_cost(finished, 3.5)
    buckets = task["by_length_bucket"]
    assert buckets["2K-4K"]["seconds"] == pytest.approx(2.001 * 0.75, abs=1e-3)
    assert buckets["<1K"]["seconds"] == pytest.approx(2.001 * 0.25 + 1.499, abs=1e-3)
    assert sum(b["seconds"] for b in buckets.values()) == pytest.approx(3.5)
    assert task["tokens_per_s"] == pytest.approx(4500 / 3.5, abs=0.1)

    run = cost.run_cost([{"cost": cost.session_cost(1.0, {"t": task})}, {"samples_run": 0},
                         {"cost": cost.session_cost(None, {"t": task})}], samples_in_run=8)
    assert run["sessions"] == 2 and run["engine_start_s"] == 1.0 and run["samples"] == 6
    assert run["untimed_samples"] == 2 and run["tokens_per_s"] == task["tokens_per_s"]


def test_the_estimate_takes_the_nearest_measured_bucket_and_says_so():
    measured = cost.task_cost([cost.Finished(1.0, 1500, 0)], 1.0)  # 1K-2K: 1,500 prompt tokens a second
    basis = cost.session_cost(0.5, {"needle": measured})
    guess = cost.estimate({"needle": [(1200, 8), (3000, 8)], "other": [(500, 8)]}, basis)
    needle = guess["tasks"]["needle"]["by_length_bucket"]
    assert needle["1K-2K"] == {"seconds": pytest.approx(0.8), "from": "measured"}
    assert needle["2K-4K"] == {"seconds": pytest.approx(2.0), "from": "~1K-2K"}
    assert guess["tasks"]["other"]["by_length_bucket"]["<1K"]["from"] == "~1K-2K (all tasks)"
    assert guess["generation_s"] == pytest.approx(0.8 + 2.0 + 500 / 1500)
    assert cost.estimate({"needle": [(100, 8)]}, {})["generation_s"] is None


# --------------------------------------------------------------------------------------------------- --dry-run


def test_dry_run_writes_nothing_and_prints_the_plan(resumed_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli([*RUN, "--out", str(out), "--run-id", "d", *GRID, "--dry-run"])
    assert code == 0 and not out.exists()
    captured = capsys.readouterr()
    recorded = json.loads((resumed_run / "results.json").read_text())["cost"]
    plan = captured.out
    assert "6 samples to run" in plan and "<1K" in plan and "1K-2K" in plan
    assert f"{recorded['prompt_tokens']:,}" in plan  # the same prompts a run builds
    for label, part in recorded["by_length_bucket"].items():
        assert f"{part['prompt_tokens']:,}" in plan, label
    assert "estimated time:" in plan and "a calibration on hf" in plan
    assert "nothing was written" in captured.err


def test_dry_run_of_a_started_run_reads_but_never_repairs_it(resumed_run, tmp_path, capsys):
    started = tmp_path / "out" / "c"
    shutil.copytree(resumed_run, started)
    kept = (started / "samples.jsonl").read_text().splitlines(keepends=True)[:2]
    (started / "samples.jsonl").write_text("".join(kept) + '{"task": "needle", "id": "L11')  # a torn last line
    before = files_of(started)
    code = run_cli([*RUN, "--out", str(started.parent), "--run-id", "c", *GRID, "--dry-run",
                    "--calibrate-from", str(resumed_run)])
    assert code == 0 and files_of(started) == before
    captured = capsys.readouterr()
    assert "2 of 6 samples done" in captured.err and "4 samples to run" in captured.out
    assert f"tokens/s recorded in {resumed_run}" in captured.out and "estimated time:" in captured.out

    code = run_cli([*RUN, "--out", str(resumed_run.parent), "--run-id", "c", *GRID, "--dry-run"])
    assert code == 0 and "nothing to run" in capsys.readouterr().out


def test_dry_run_without_a_basis_prints_counts_only(tmp_path, offline, capsys, monkeypatch):
    monkeypatch.setattr(runner, "CALIBRATION_MODEL_BYTES", 0)  # too big a model to start for a calibration
    code = run_cli([*RUN, "--out", str(tmp_path / "out"), *GRID, "--dry-run"])
    assert code == 0 and not (tmp_path / "out").exists()
    plan = capsys.readouterr().out
    assert "6 samples to run" in plan and "no estimate: the model's weights are" in plan
    assert "--calibrate-from" in plan and "estimated time" not in plan
