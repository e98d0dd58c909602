"""The needle tasks' no-needle control: one prompt per length without the needle, scored as the cells are, kept out
of the grid's scores, and reported by `lceval show`, the reports and `lceval compare`; gates leave it out unless a
check names it."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from lceval.analysis.compare import load_run
from lceval.analysis.gate import CheckSpec, Policy, default_policy, run_gate
from lceval.api.prompting import encode
from lceval.api.task import PromptContext
from lceval.cli import app
from lceval.tasks.needle import NeedleTask, PasskeyTask, aggregate_grid

LENGTHS = [300, 700]
DEPTHS = [0, 50, 100]


@pytest.fixture(scope="module")
def ctx(demo_tokenizer):
    return PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)


def build(ctx, factory=NeedleTask, **options):
    """The task, its cells and its controls."""
    task = factory({"lengths": LENGTHS, "depths": DEPTHS, **options})
    samples = task.build_samples(ctx)
    return task, [s for s in samples if not s.meta.get("control")], [s for s in samples if s.meta.get("control")]


def holds(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


# ------------------------------------------------------------------------------------------------- the prompts


@pytest.mark.parametrize("factory", [NeedleTask, PasskeyTask])
def test_one_control_per_length_is_a_cell_without_its_needle(ctx, demo_tokenizer, factory):
    task, cells, controls = build(ctx, factory)
    assert len(cells) == len(LENGTHS) * len(DEPTHS)
    assert [c.id for c in controls] == [f"control-{n}" for n in LENGTHS]
    for control in controls:
        length = control.meta["length"]
        assert control.meta == {"length": length, "control": True, "prompt_tokens": len(control.prompt_ids)}
        mine = [c for c in cells if c.meta["length"] == length]
        for cell in mine:  # no needle of the length (a passkey's key differs per cell) is in the control's prompt
            assert not holds(control.prompt_ids, encode(demo_tokenizer, cell.target["needle"])), cell.id
        first = mine[0]
        assert first.meta["depth"] == DEPTHS[0]
        # Its target (a passkey: the depth-0 cell's key, drawn as every cell's is), answer budget and scores.
        assert control.target == first.target and control.max_new_tokens == first.max_new_tokens
        assert set(task.score(control, "anything")) == set(task.scored)
        # The depth-0 cell with its needle taken out: the same template, description, haystack cut and question.
        needle = encode(demo_tokenizer, first.target["needle"])
        at = first.meta["needle_token_index"]
        assert control.prompt_ids == first.prompt_ids[:at] + first.prompt_ids[at + len(needle) :]
        assert len(control.prompt_ids) == first.meta["prompt_tokens"] - len(needle)
        assert control.excerpt["text"].endswith(demo_tokenizer.decode(encode(demo_tokenizer, task.opts.question)))


def test_control_false_removes_the_controls_and_keeps_the_cells(ctx):
    task, cells, _ = build(ctx)
    quiet, cells_only, controls = build(ctx, control=False)
    assert controls == [] and [(s.id, s.prompt_ids) for s in cells_only] == [(s.id, s.prompt_ids) for s in cells]
    assert task.settings()["control"] is True and quiet.settings()["control"] is False  # a run records it
    assert NeedleTask.version == PasskeyTask.version == "3"


# ------------------------------------------------------------------------------------------------- aggregation


def cell(length: int, depth: float, found: float, rouge: float) -> dict:
    return {"task": "needle", "task_version": "3", "id": f"L{length}-D{depth:g}", "prompt_hash": f"{length}-{depth}",
            "meta": {"length": length, "depth": depth, "realized_depth": depth, "prompt_tokens": length - 3},
            "target": {"needle": "The needle.", "answer": "hamburg", "facts": ["hamburg"]},
            "excerpt": {"text": "[...] The sky. The needle. The question?", "highlight": [14, 25]},
            "output": "Soup.", "scores": {"key_facts": found, "rouge_l_f1": rouge, "exact_phrase": found}}


def control(length: int, found: float, rouge: float, output: str = "Soup.") -> dict:
    return {"task": "needle", "task_version": "3", "id": f"control-{length}", "prompt_hash": f"{length}-c",
            "meta": {"length": length, "control": True, "prompt_tokens": length - 20},
            "target": {"needle": "The needle.", "answer": "hamburg", "facts": ["hamburg"]},
            "excerpt": {"text": "[...] The sky. The question?", "highlight": [14, 14]},
            "output": output, "scores": {"key_facts": found, "rouge_l_f1": rouge, "exact_phrase": found}}


CELLS = [cell(1000, 0.0, 1.0, 1.0), cell(1000, 50.0, 0.0, 0.5), cell(2000, 0.0, 0.0, 0.0), cell(2000, 50.0, 1.0, 0.25)]


def test_controls_leave_every_grid_score_as_it_was():
    controls = [control(1000, 1.0, 0.9), control(2000, 0.0, 0.1)]
    alone = aggregate_grid(CELLS)
    mixed = aggregate_grid([controls[0], *CELLS[:2], controls[1], *CELLS[2:]])
    for key in ("metrics", "real_lengths", "by_length", "by_depth", "cells"):
        assert mixed[key] == alone[key], key
    assert "control" not in alone and alone["n_samples"] == 4 and mixed["n_samples"] == 6


def test_found_without_needle_counts_the_controls_that_pass_the_first_metric():
    controls = [control(1000, 1.0, 0.9), control(2000, 0.0, 0.8), control(3000, 1.0, 0.2)]
    result = aggregate_grid(CELLS + controls)["control"]
    assert result["n"] == 3 and result["metric"] == "key_facts"
    assert result["found_without_needle"] == 2 and result["found_lengths"] == [1000, 3000]  # not 2000's high ROUGE
    assert result["by_length"]["2000"] == {"key_facts": 0.0, "rouge_l_f1": 0.8, "exact_phrase": 0.0}
    assert result["metrics"]["key_facts"] == pytest.approx(2 / 3)
    assert result["metrics"]["rouge_l_f1"] == pytest.approx((0.9 + 0.8 + 0.2) / 3)
    none = aggregate_grid(CELLS + [control(1000, 0.0, 0.9)])["control"]
    assert none["found_without_needle"] == 0 and none["found_lengths"] == []
    passkey = aggregate_grid([{**control(1000, 0, 0), "scores": {"passkey_match": 1.0}}], ("passkey_match",))
    assert passkey["control"]["found_without_needle"] == 1 and passkey["cells"] == []


# ---------------------------------------------------------------------------------------- show, report, compare

HOSTILE = "<script>alert('x')</script> hamburg"


def write_run(folder, records: list[dict], run_id: str):
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "run_id": run_id, "status": "complete", "model": {"spec": "m"},
        "tasks": {"needle": {"version": "3", "settings": {"lengths": [1000, 2000], "control": True}}}}))
    results = {"schema_version": 1, "run_id": run_id,
               "tasks": {"needle": {"version": "3", "n_expected": len(records), **aggregate_grid(records)}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture()
def runs(tmp_path):
    """A run whose controls are not answered, and one whose 2000-token control is (the same cells)."""
    clean = write_run(tmp_path / "clean", CELLS + [control(1000, 0.0, 0.1), control(2000, 0.0, 0.1)], "clean")
    memory = write_run(tmp_path / "memory", CELLS + [control(1000, 0.0, 0.1), control(2000, 1.0, 0.6, HOSTILE)],
                       "memory")
    return clean, memory


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_show_prints_a_control_line_and_warns_with_the_lengths(runs):
    clean, memory = runs
    assert "needle no-needle control: 0 of 2 lengths answered without the needle" in invoke("show", str(clean))
    out = invoke("show", str(memory))
    assert "warning: needle no-needle control: 1 of 2 lengths answered without the needle: length 2000" in out
    assert "memory there, not retrieval" in out
    # A control that was answered is the failure to look at.
    failed = invoke("show", str(memory), "--samples", "--failed")
    assert "needle control-2000" in failed and "needle control-1000" not in failed
    assert "control-1000" in invoke("show", str(memory), "--samples", "--where", "control=true")


def test_reports_have_the_control_line_and_list_the_controls_outside_the_grid(runs, tmp_path):
    clean, memory = runs
    page_path = tmp_path / "report.html"
    invoke("report", str(clean), str(memory), "-o", str(page_path))
    page = page_path.read_text()
    assert "<h2>No-needle control</h2>" in page
    assert "clean: needle no-needle control: 0 of 2 lengths answered without the needle" in page
    assert re.search(r"<li class='warn'>memory: needle no-needle control: 1 of 2 lengths answered without the "
                     r"needle: length 2000", page)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page  # the control's output, escaped
    links = re.findall(r"<a href='#(s1-needle-[^']+)'>", page)
    assert sorted(links) == ["s1-needle-L1000-D0", "s1-needle-L1000-D50", "s1-needle-L2000-D0", "s1-needle-L2000-D50"]
    assert "<details id='s1-needle-control-2000' class='fail' open>" in page
    assert "<details id='s1-needle-control-1000' class='pass'>" in page
    md = tmp_path / "report.md"
    invoke("report", str(clean), str(memory), "-o", str(md))
    text = md.read_text()
    assert "## No-needle control" in text
    assert "- **warning:** `memory`: needle no-needle control: 1 of 2 lengths answered without the needle" in text
    assert "| ↳ control no needle |" in text


def test_compare_has_a_control_row_and_its_other_rows_leave_the_controls_out(runs):
    from lceval.analysis.compare import compare_rows

    rows = {(r.metric, r.breakdown): r for r in compare_rows([load_run(p) for p in runs])}
    overall = rows[("key_facts", "all")]
    assert [c.n for c in overall.cells] == [4, 4] and overall.cells[0].score == 0.5 and overall.diffs[1].n == 4
    assert [c.n for c in rows[("key_facts", "length 2000")].cells] == [2, 2]
    controls = rows[("key_facts", "control no needle")]
    assert controls.kind == "binary" and [c.score for c in controls.cells] == [0.0, 0.5]
    assert controls.diffs[1].n == 2 and controls.diffs[1].difference == 0.5


def test_gates_leave_the_controls_out_unless_a_check_names_them(runs):
    clean, memory = runs
    baseline, candidate = load_run(clean), load_run(memory)
    verdict = run_gate(baseline, candidate, default_policy(baseline))
    assert [(c.name, c.n, c.difference) for c in verdict.checks] == [
        ("needle key_facts", 4, 0.0), ("needle rouge_l_f1", 4, 0.0), ("needle exact_phrase", 4, 0.0)]
    asked = Policy([CheckSpec("needle", "key_facts", margin=None, no_margin=True, max_score=0.0,
                              where={"control": "no needle"})])
    check = run_gate(baseline, candidate, asked).checks[0]
    assert check.n == 2 and check.candidate == 0.5 and check.status == "above maximum"
