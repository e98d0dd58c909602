"""lm-eval's tasks on lceval backends: MMLU equals lm-eval's own run digit for digit, offline data, any lm-eval task.

The model is the random demo Llama, so the scores themselves mean nothing; what is checked is that every number
lceval reports is the one lm-eval computes for the same model and data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from lceval.api.errors import UserError
from lceval.api.task import PromptContext
from lceval.running.config import RunConfig
from lceval.running.runner import execute
from lceval.tasks import mmlu_data
from lceval.tasks.lm_eval_tasks import CACHE_FILE, LmEvalTask

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115 - lives for the test session


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def mmlu_run(demo_model, tmp_path_factory) -> Path:
    """`lceval run --tasks mmlu` on the hf backend, with the bundled MMLU-format sample (57 subjects)."""
    out = tmp_path_factory.mktemp("mmlu")
    return execute(RunConfig(model="lceval-demo", tasks=["mmlu"], backend="hf", out=str(out), run_id="hf"), QUIET)


@pytest.fixture(scope="module")
def lm_eval_reference(demo_model, lceval_cache) -> dict:
    """lm-eval's own evaluation of the same model and data with its own HF model class."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lceval.running.demo import cache_dir

    folder, _ = mmlu_data.prepare(mmlu_data.bundled_dir(), cache_dir() / "lm_eval")
    return simple_evaluate(model="hf", model_args=f"pretrained={demo_model},dtype=float32", tasks=["mmlu"],
                           task_manager=TaskManager(include_path=str(folder)), num_fewshot=0,
                           apply_chat_template=True, batch_size=8, device="cpu", log_samples=True)


def test_mmlu_scores_equal_lm_evals_own_run(mmlu_run, lm_eval_reference):
    task = json.loads((mmlu_run / "results.json").read_text())["tasks"]["mmlu"]
    reference = lm_eval_reference["results"]
    assert task["n_samples"] == task["n_expected"] == 57 * 2
    assert task["metrics"]["acc"] == reference["mmlu"]["acc,none"]
    assert task["metrics"]["acc_stderr"] == reference["mmlu"]["acc_stderr,none"]
    for group, alias in [("mmlu_stem", "stem"), ("mmlu_humanities", "humanities"),
                         ("mmlu_social_sciences", "social sciences"), ("mmlu_other", "other")]:
        assert task["by_category"][alias]["acc"] == reference[group]["acc,none"]
        assert task["by_category"][alias]["acc_stderr"] == reference[group]["acc_stderr,none"]
    # per document: the same answer letter scored right or wrong
    mine = {r["id"]: r["scores"]["acc"] for r in _records(mmlu_run)}
    theirs = {f"{name}/{s['doc_id']}": s["acc"] for name, logged in lm_eval_reference["samples"].items()
              for s in logged}
    assert mine == theirs


def test_mmlu_category_scores_are_subject_means_as_the_seed_paper_reports(mmlu_run):
    task = json.loads((mmlu_run / "results.json").read_text())["tasks"]["mmlu"]
    subjects = task["by_subtask"]
    assert len(subjects) == 57
    assert task["metrics"]["acc_subtask_mean"] == pytest.approx(sum(s["acc"] for s in subjects.values()) / 57)
    stem = [name for name in subjects if name in {"mmlu_anatomy", "mmlu_astronomy", "mmlu_virology"}]
    assert stem  # a sanity check that subtasks are named as lm-eval names them
    assert task["num_fewshot"] == 0


def test_mmlu_prompt_is_lm_evals_under_the_chat_template(mmlu_run, demo_tokenizer):
    manifest = json.loads((mmlu_run / "manifest.json").read_text())
    settings = manifest["tasks"]["mmlu"]["settings"]
    assert settings["lm_eval"] == "0.4.13" and settings["chat_template"] is True
    assert settings["data_sha256"]
    ctx = PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)
    sample = LmEvalTask("mmlu", {"num_fewshot": 5, "chat_template": True}).build_samples(ctx)[0]
    text = demo_tokenizer.decode(sample.prompt_ids)
    # lm-eval's chat rule: the task's description is the system turn, the question the user turn
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nThe following are "
                           "multiple choice questions (with answers) about abstract algebra.")
    assert "<|start_header_id|>user<|end_header_id|>" in text
    assert text.count("Answer:") == 6  # five dev examples, then the question
    assert text.rstrip().endswith("Answer:<|eot_id|><|start_header_id|>assistant<|end_header_id|>")


def test_a_killed_mmlu_run_resumes_from_the_run_folder(mmlu_run, tmp_path):
    """Half the documents lost from samples.jsonl: the rerun restores them from lm-eval's request cache."""
    run_dir = tmp_path / "resumed"
    shutil.copytree(mmlu_run, run_dir)
    assert (run_dir / CACHE_FILE).exists()
    lines = (run_dir / "samples.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "samples.jsonl").write_text("".join(lines[:50]))
    execute(RunConfig(model="lceval-demo", tasks=["mmlu"], backend="hf", out=str(tmp_path), run_id="resumed"), QUIET)
    again = _records(run_dir)
    assert len(again) == len({r["id"] for r in again}) == len(lines)
    assert {r["id"]: r["scores"] for r in again} == {r["id"]: r["scores"] for r in _records(mmlu_run)}


@pytest.mark.slow
def test_mmlu_on_vllm_answers_as_on_hf(mmlu_run, vllm_backend, tmp_path):
    run_dir = execute(RunConfig(model="lceval-demo", tasks=["mmlu"], backend="vllm", out=str(tmp_path), run_id="vllm"),
                      QUIET, backend=vllm_backend)
    assert {r["id"]: r["output"] for r in _records(run_dir)} == {r["id"]: r["output"] for r in _records(mmlu_run)}


def test_hub_parquet_and_original_csv_layouts_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = mmlu_data.read_local(mmlu_data.bundled_dir())
    for subject, splits in data.items():
        (tmp_path / subject).mkdir()
        for split, rows in splits.items():
            pq.write_table(pa.Table.from_pylist(rows), tmp_path / subject / f"{split}-00000-of-00001.parquet")
    assert mmlu_data.read_local(tmp_path) == data
    _, from_parquet = mmlu_data.prepare(tmp_path, tmp_path / "cache")
    _, from_csv = mmlu_data.prepare(mmlu_data.bundled_dir(), tmp_path / "cache")
    assert from_parquet == from_csv


def test_bad_mmlu_copies_are_named_by_file_and_line(tmp_path):
    shutil.copytree(mmlu_data.bundled_dir(), tmp_path / "mmlu")
    bad = tmp_path / "mmlu" / "data" / "test" / "anatomy_test.csv"
    bad.write_text(bad.read_text() + "a question with, too few cells\n")
    with pytest.raises(UserError, match=rf"{bad} line 3 is not an MMLU row"):
        mmlu_data.read_local(tmp_path / "mmlu")
    (tmp_path / "mmlu" / "data" / "dev" / "virology_dev.csv").unlink()
    bad.unlink()
    with pytest.raises(UserError, match="has no MMLU test file for anatomy"):
        mmlu_data.read_local(tmp_path / "mmlu")
    with pytest.raises(UserError, match="does not exist"):
        mmlu_data.read_local(tmp_path / "nowhere")


TOY_TASKS = """\
task: lceval_toy_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

TOY_ROLLING = """\
task: lceval_toy_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/text.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory) -> Path:
    """Two lm-eval task definitions of this project's own: one generates, one scores whole texts."""
    folder = tmp_path_factory.mktemp("toy-tasks")
    with (folder / "gen.jsonl").open("w") as handle:
        for a, b in [(2, 3), (10, 7), (4, 4)]:
            handle.write(json.dumps({"question": f"what is {a} plus {b}?", "answer": str(a + b)}) + "\n")
    with (folder / "text.jsonl").open("w") as handle:
        for words in range(3):
            text = " ".join(["the quiet river runs past the old mill"] * (words * 40 + 5))
            handle.write(json.dumps({"text": text}) + "\n")
    (folder / "toy_gen.yaml").write_text(TOY_TASKS.format(data=folder))
    (folder / "toy_ppl.yaml").write_text(TOY_ROLLING.format(data=folder))
    return folder


def test_any_lm_eval_task_runs_through_the_bridge_as_lm_eval_runs_it(demo_model, toy_tasks, tmp_path):
    """Generation and rolling log-likelihood (windows past the model's length) give lm-eval's own numbers.

    lm-eval's HF model scores windows of max_length tokens, its vLLM and API models of max_length - 1, as lceval
    does on every backend; the reference therefore runs lm-eval's HF model at 255 against lceval at 256.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    options = {name: {"include_path": str(toy_tasks)} for name in ("lm-eval:lceval_toy_gen", "lm-eval:lceval_toy_ppl")}
    run_dir = execute(RunConfig(model="lceval-demo", tasks=list(options), backend="hf", out=str(tmp_path),
                                run_id="toy", max_length=256, task_options=options), QUIET)
    results = json.loads((run_dir / "results.json").read_text())["tasks"]
    reference = simple_evaluate(model="hf", model_args=f"pretrained={demo_model},dtype=float32,max_length=255",
                                tasks=["lceval_toy_gen", "lceval_toy_ppl"],
                                task_manager=TaskManager(include_path=str(toy_tasks)), batch_size=1, device="cpu",
                                log_samples=True)
    gen, ppl = results["lm-eval:lceval_toy_gen"], results["lm-eval:lceval_toy_ppl"]
    assert gen["n_samples"] == 3 and ppl["n_samples"] == 3
    assert gen["metrics"]["exact_match"] == reference["results"]["lceval_toy_gen"]["exact_match,none"]
    assert ppl["metrics"]["word_perplexity"] == pytest.approx(
        reference["results"]["lceval_toy_ppl"]["word_perplexity,none"], rel=1e-4)
    assert ppl["metrics"]["bits_per_byte"] == pytest.approx(
        reference["results"]["lceval_toy_ppl"]["bits_per_byte,none"], rel=1e-4)
    outputs = {r["id"]: r["output"] for r in _records(run_dir) if r["task"] == "lm-eval:lceval_toy_gen"}
    expected = {f"lceval_toy_gen/{s['doc_id']}": s["filtered_resps"][0]
                for s in reference["samples"]["lceval_toy_gen"]}
    assert outputs == expected
    assert all("\n" not in text for text in outputs.values())  # cut at the task's `until`


def test_unknown_lm_eval_task_is_one_sentence(lceval_cmd, cli_env, tmp_path):
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "hf", "--tasks",
                           "lm-eval:no_such_task_here", "--out", str(tmp_path)], env=cli_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: lm-eval has no task, group or tag 'no_such_task_here'; `python -m lm_eval ls tasks` lists them."]
    assert not any(tmp_path.iterdir())


def test_num_fewshot_flag_reaches_lm_eval_tasks(demo_model, tmp_path):
    run_dir = execute(RunConfig(model="lceval-demo", tasks=["mmlu"], backend="hf", out=str(tmp_path), run_id="five",
                                num_fewshot=5, limit=3), QUIET)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    assert set(manifest["tasks"]["mmlu"]["settings"]["num_fewshot"].values()) == {5}
    task = json.loads((run_dir / "results.json").read_text())["tasks"]["mmlu"]
    assert task["n_samples"] == 3 and task["num_fewshot"] == 5
    assert "by_category" not in task  # a category score needs every subject
