"""`lceval compare`, `lceval report` and `lceval heatmap A B --diff` on real runs of the demo model."""

from __future__ import annotations

import csv
import html
import io
import json
import subprocess

import pytest
from test_gate import make_degraded, make_oracle, real_run  # the session's one real run, and its variations

from lceval.analysis.stats import score_interval_paired

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lceval_cmd, cli_env):
    real = real_run(tmp_path_factory, lceval_cmd, cli_env)
    base = tmp_path_factory.mktemp("compare")
    oracle = make_oracle(real, base / "oracle")
    return {"real": real, "oracle": oracle, "degraded": make_degraded(oracle, base / "degraded")}


def lceval(cmd, env, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_compare_table_folds_breakdowns_under_each_metric(runs, lceval_cmd, cli_env):
    out = lceval(lceval_cmd, cli_env, "compare", runs["oracle"], runs["degraded"]).stdout
    assert "Δ degraded" in out and "length 1024" in out and "topics 2" in out and "category stem" in out
    assert "1.000 [0.701, 1.000]" in out  # passkey 9/9 with its Wilson interval


def test_compare_json_has_scores_intervals_and_paired_differences(runs, lceval_cmd, cli_env):
    data = json.loads(lceval(lceval_cmd, cli_env, "compare", runs["oracle"], runs["degraded"], runs["real"],
                             "--format", "json").stdout)
    assert [r["label"] for r in data["runs"]] == ["oracle", "degraded", "real"]
    rows = {(r["task"], r["metric"], r["breakdown"], r["group"]): r for r in data["rows"]}
    passkey = rows[("passkey", "passkey_match", "all", None)]
    assert passkey["kind"] == "binary" and passkey["diffs"][0] is None
    assert passkey["runs"][0]["score"] == 1.0 and passkey["runs"][1]["score"] == 0.0
    diff = passkey["diffs"][1]
    # 9 losses of 9: Tango's 95% score interval, as lceval.analysis.stats computes it (checked against the likelihood
    # there)
    assert diff["difference"] == -1.0 and diff["n"] == 9
    assert diff["ci"] == pytest.approx(list(score_interval_paired(9, 0, 9, 0.95)))
    assert -1.0 <= diff["ci"][0] < diff["ci"][1] < -0.3
    mmlu = rows[("mmlu", "acc", "all", None)]
    real_results = json.loads((runs["real"] / "results.json").read_text())["tasks"]["mmlu"]
    assert mmlu["runs"][2]["score"] == pytest.approx(real_results["metrics"]["acc"])  # lm-eval's pooled acc
    stem = rows[("mmlu", "acc", "category", "stem")]
    assert stem["runs"][2]["score"] == pytest.approx(real_results["by_category"]["stem"]["acc"])
    assert rows[("needle", "rouge_l_f1", "all", None)]["kind"] in ("binary", "continuous")


def test_compare_markdown_and_csv(runs, lceval_cmd, cli_env, tmp_path):
    md = lceval(lceval_cmd, cli_env, "compare", runs["oracle"], runs["degraded"], "--format", "md").stdout
    assert md.startswith("| task | metric | breakdown | n | oracle | degraded | Δ degraded |")
    assert "| ↳ length 256 |" in md
    target = tmp_path / "table.csv"
    lceval(lceval_cmd, cli_env, "compare", runs["oracle"], runs["degraded"], "--format", "csv", "-o", target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    topic = [r for r in rows if r["task"] == "topic" and r["metric"] == "accuracy" and r["breakdown"] == "all"]
    assert [r["run"] for r in topic] == ["oracle", "degraded"] and float(topic[1]["diff"]) == -1.0


def test_compare_warns_when_runs_are_not_alike(runs, lceval_cmd, cli_env, tmp_path):
    from test_gate import copy_run, read_records, write_records

    changed = copy_run(runs["oracle"], tmp_path / "changed", "changed")
    records = read_records(changed)
    records[0]["prompt_hash"] = "f" * 16
    write_records(changed, records)
    proc = lceval(lceval_cmd, cli_env, "compare", runs["oracle"], changed)
    assert "different prompts" in proc.stderr


def test_html_report_is_self_contained(runs, lceval_cmd, cli_env, tmp_path):
    target = tmp_path / "report.html"
    lceval(lceval_cmd, cli_env, "report", runs["oracle"], runs["degraded"], "-o", target)
    text = target.read_text()
    assert text.count("data:image/png;base64,") == 6  # 4 heatmap comparisons, the topic curve, mmlu by category
    assert "src='http" not in text and "<link" not in text
    for caption in ("needle: Needle's key facts found", "needle: Whole answer phrase found (strict)",
                    "passkey: Pass key retrieved", "topic: first topic",
                    "mmlu acc by category"):
        assert html.escape(caption) in text


def test_markdown_and_png_reports(runs, lceval_cmd, cli_env, tmp_path):
    md = tmp_path / "report.md"
    lceval(lceval_cmd, cli_env, "report", runs["real"], runs["oracle"], "-o", md)
    text = md.read_text()
    assert "](report_files/needle_heatmap_exact_phrase.png)" in text
    assert (tmp_path / "report_files" / "topic_curve.png").read_bytes()[:4] == b"\x89PNG"
    png = tmp_path / "summary.png"
    lceval(lceval_cmd, cli_env, "report", runs["real"], runs["oracle"], "-o", png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_heatmap_diff_of_two_runs(runs, lceval_cmd, cli_env, tmp_path):
    proc = lceval(lceval_cmd, cli_env, "heatmap", runs["real"], runs["oracle"], "--diff", "--out", tmp_path)
    assert "needle_heatmap_diff_exact_phrase.png" in proc.stderr
    grid = (tmp_path / "needle_heatmap_diff_exact_phrase.csv").read_text().splitlines()
    assert grid[0] == "depth_percent,256,512,1024" and grid[1] == "0,1.0000,1.0000,1.0000"
    assert (tmp_path / "needle_heatmap_diff_rouge_l_f1.png").read_bytes()[:4] == b"\x89PNG"
    three = subprocess.run([*lceval_cmd, "heatmap", runs["real"], runs["oracle"], runs["oracle"], "--diff"],
                           env=cli_env, capture_output=True, text=True)
    assert three.returncode == 2 and "one run folder, or two to compare; got 3" in three.stderr
