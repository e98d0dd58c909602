"""Reading samples as a person does: `lceval show --samples` with filters, and the HTML report's samples, where
each heatmap cell links to what the model said and every model output is escaped."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from lceval.api.errors import UserError
from lceval.cli import app
from lceval.tasks.needle import aggregate_grid

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


def record(length: int, depth: float, output: str, found: float) -> dict:
    needle = "\n\nThe best thing to do in San Francisco is eating a hamburg.\n\n"
    excerpt = "[...] The sky is blue." + needle + "The grass is green. [...]\n\nWhat is the best thing?"
    start = excerpt.index(needle)
    return {"task": "needle", "task_version": "2", "id": f"L{length}-D{depth:g}", "prompt_hash": "0" * 16,
            "prompt_tokens": length - 3,
            "meta": {"length": length, "depth": depth, "realized_depth": depth, "prompt_tokens": length - 3},
            "target": {"needle": needle, "answer": "eating a hamburg", "facts": ["hamburg"]},
            "excerpt": {"text": excerpt, "highlight": [start, start + len(needle)]},
            "output": output, "output_tokens": 9, "finish_reason": "stop",
            "scores": {"key_facts": found, "rouge_l_f1": found / 2, "exact_phrase": found}}


@pytest.fixture()
def run_dir(tmp_path):
    records = [record(1000, 0.0, "Eating a hamburger.", 1.0), record(1000, 50.0, HOSTILE, 0.0),
               record(2000, 0.0, "A hamburg, in the park.", 1.0), record(2000, 50.0, "Soup.", 0.0)]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "run_id": "run", "status": "complete",
                                                      "model": {"spec": "m"}, "tasks": {"needle": {}}}))
    results = {"schema_version": 1, "run_id": "run", "tasks": {"needle": {"version": "2", "n_expected": 4,
                                                                         **aggregate_grid(records)}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def show(*args: str):
    result = CliRunner().invoke(app, ["show", *args])
    return result.exit_code, result.output


def test_show_samples_prints_excerpt_output_target_and_scores(run_dir):
    code, out = show(str(run_dir), "--samples")
    assert code == 0, out
    assert out.count("needle L") == 4 and "4 samples" in out
    assert "Eating a hamburger." in out and "key_facts=1" in out
    assert "The best thing to do in San Francisco is eating a hamburg." in out  # the prompt around the needle
    assert 'facts: ["hamburg"]' in out
    assert HOSTILE in out  # printed verbatim, not read as markup


def test_show_samples_filters_by_meta_and_failure(run_dir):
    code, out = show(str(run_dir), "--samples", "--where", "length=2000", "--where", "depth=50")
    assert code == 0 and "L2000-D50" in out and "L1000" not in out and "1 samples" in out
    code, out = show(str(run_dir), "--samples", "--failed")
    assert code == 0 and "L1000-D50" in out and "L2000-D50" in out and "D0 " not in out


@pytest.mark.parametrize(("args", "words"), [
    (["--where", "length"], "KEY=VALUE"),
    (["--where", "length=3000"], "no sample matches"),
    (["--task", "passkey"], "no samples of task 'passkey'"),
])
def test_bad_sample_filters_get_one_sentence(run_dir, args, words):
    result = CliRunner().invoke(app, ["show", str(run_dir), "--samples", *args])
    assert isinstance(result.exception, UserError) and words in str(result.exception)  # main() prints it, exit 2


def test_report_links_each_heatmap_cell_to_its_escaped_sample(run_dir, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    links = re.findall(r"<a href='#(s0-needle-[^']+)'>", page)
    assert sorted(links) == ["s0-needle-L1000-D0", "s0-needle-L1000-D50", "s0-needle-L2000-D0", "s0-needle-L2000-D50"]
    for anchor in links:
        assert f"<details id='{anchor}'" in page
    assert "<mark>" in page  # the needle is highlighted in its excerpt
    assert re.search(r"<details id='s0-needle-L2000-D50' class='fail' open>", page)
