"""LongBench and InfiniteBench prompt paths on the bundled samples: truncation, templates, stops, round trips."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from lceval.api.errors import UserError
from lceval.api.prompting import bos_ids, encode, middle_truncate, prompt_format
from lceval.api.task import PromptContext
from lceval.metrics import longbench as longbench_metrics
from lceval.running.config import RunConfig
from lceval.running.runner import execute
from lceval.tasks import infinitebench, longbench
from lceval.tasks.benchmark_data import spec


def test_middle_truncation_keeps_the_official_halves():
    content = list(range(100, 200))
    # Official: ids = [BOS] + content; ids[:20] + ids[-20:] -> BOS + 19 head tokens + 20 tail tokens.
    kept = middle_truncate(content, 41, n_leading_special=1)
    assert kept == content[:19] + content[-20:]
    assert middle_truncate(content, 40, n_leading_special=0) == content[:20] + content[-20:]
    assert middle_truncate(content, 101, n_leading_special=1) == content  # fits: untouched


@pytest.fixture(scope="module")
def ctx(demo_tokenizer):
    return PromptContext(demo_tokenizer, window=2048, stop_token_ids=[1, 4], chat_template=True)


@pytest.fixture(scope="module")
def longbench_samples(ctx):
    return longbench.LongBenchTask({"max_length": 700}).build_samples(ctx)


def test_longbench_covers_every_dataset_with_its_length_and_template(longbench_samples, demo_tokenizer):
    meta = spec("longbench_meta")
    specs = longbench.datasets_spec()
    assert {s.meta["dataset"] for s in longbench_samples} == set(specs)
    chat = prompt_format(demo_tokenizer, True)
    bos = bos_ids(demo_tokenizer)
    for sample in longbench_samples:
        dataset = sample.meta["dataset"]
        assert sample.max_new_tokens == specs[dataset]["maxlen"]
        if dataset in meta["no_chat_template_datasets"]:
            assert sample.prompt_ids[: len(bos) + 1] != list(chat.prefix_ids)[: len(bos) + 1]
            assert sample.prompt_ids[: len(bos)] == bos
        else:
            assert sample.prompt_ids[: len(chat.prefix_ids)] == list(chat.prefix_ids)
            assert sample.prompt_ids[-len(chat.suffix_ids):] == list(chat.suffix_ids)


def test_longbench_truncation_is_exact(longbench_samples, demo_tokenizer):
    rows = {}
    for dataset in longbench.datasets_spec():
        for index, row in enumerate(longbench.LongBenchTask({"datasets": [dataset]})._rows(dataset)):
            rows[f"{dataset}/{row.get('_id', index)}"] = row
    truncated = [s for s in longbench_samples if s.meta["truncated"]]
    assert truncated, "the bundled samples should include prompts longer than 700 tokens"
    n_bos = len(bos_ids(demo_tokenizer))
    for sample in truncated:
        dataset = sample.meta["dataset"]
        full = encode(demo_tokenizer, longbench.datasets_spec()[dataset]["prompt"].format(**rows[sample.id]))
        turn = prompt_format(demo_tokenizer, dataset not in spec("longbench_meta")["no_chat_template_datasets"])
        content = sample.prompt_ids[len(turn.prefix_ids): len(sample.prompt_ids) - len(turn.suffix_ids)]
        assert len(content) + n_bos == 700
        assert content[: 350 - n_bos] == full[: 350 - n_bos] and content[-350:] == full[-350:]


def test_samsum_stops_at_a_newline_after_one_token(longbench_samples, demo_tokenizer):
    newline = encode(demo_tokenizer, "\n")[-1]
    for sample in longbench_samples:
        if sample.meta["dataset"] == "samsum":
            assert newline in sample.stop_token_ids and sample.min_new_tokens == 1
            assert set(sample.stop_token_ids) >= {1, 4}
        else:
            assert newline not in sample.stop_token_ids and sample.min_new_tokens == 0


def test_infinitebench_templates_and_labels(ctx, demo_tokenizer):
    chat = infinitebench.InfiniteBenchTask({}).build_samples(ctx)
    base = infinitebench.InfiniteBenchTask({"template": "base"}).build_samples(ctx)
    assert {s.meta["task"] for s in chat} == set(infinitebench.tasks_spec())
    prefix = list(prompt_format(demo_tokenizer, True).prefix_ids)
    # Every chat prompt opens a user turn, but math_calc, which the official GPT-4 run sent with a system prompt.
    assert all(s.prompt_ids[: len(prefix)] == prefix for s in chat if s.meta["task"] != "math_calc")
    calc = next(s for s in chat if s.meta["task"] == "math_calc")
    assert "You are a calculator" in demo_tokenizer.decode(calc.prompt_ids)
    assert not any(s.prompt_ids[: len(prefix)] == prefix for s in base)
    passkey = next(s for s in base if s.meta["task"] == "passkey")
    assert demo_tokenizer.decode(passkey.prompt_ids).rstrip().endswith("The pass key is")
    choice = next(s for s in chat if s.meta["task"] == "longbook_choice_eng")
    text, letter = choice.target["ground_truth"]
    assert letter in "ABCD" and isinstance(text, str)
    run = next(s for s in chat if s.meta["task"] == "code_run")
    assert isinstance(run.target["ground_truth"][0], int)  # numeric answers keep their type


def run_task(tmp_path, task, backend=None, backend_name="hf", options=None):
    cfg = RunConfig(model="lceval-demo", tasks=[task], out=str(tmp_path), run_id=task.replace("/", "_"),
                    backend=backend_name, task_options={task: options or {}})
    run_dir = execute(cfg, Console(stderr=True), backend=backend)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return run_dir, records, json.loads((run_dir / "results.json").read_text())["tasks"][task]


@pytest.mark.slow
def test_longbench_runs_every_dataset_on_hf_and_rescoring_gives_the_same_numbers(tmp_path, demo_model):
    run_dir, records, results = run_task(tmp_path, "longbench")
    assert len(records) == results["n_samples"] == results["n_expected"]
    assert set(results["by_dataset"]) == set(longbench.datasets_spec())
    preds = tmp_path / "preds"
    longbench.write_prediction_files(records, preds)
    rescored, _ = longbench_metrics.score_pred_dir(preds)
    assert rescored == results["by_dataset"]


@pytest.mark.slow
def test_longbench_e_buckets_on_vllm(tmp_path, vllm_backend):
    _, records, results = run_task(tmp_path, "longbench-e", backend=vllm_backend, backend_name="vllm")
    e_datasets = {d for d, s in longbench.datasets_spec().items() if s.get("in_longbench_e")}
    assert set(results["by_dataset_bucket"]) == e_datasets
    assert all(set(b) == {"0-4k", "4-8k", "8k+"} for b in results["by_dataset_bucket"].values())
    preds = tmp_path / "preds"
    longbench.write_prediction_files(records, preds)
    rescored, _ = longbench_metrics.score_pred_dir(preds, e=True)
    assert json.dumps(rescored, sort_keys=True) == json.dumps(results["by_dataset_bucket"], sort_keys=True)  # NaN too


@pytest.mark.slow
@pytest.mark.parametrize("scorer", ["v-a", "v-b"])
def test_infinitebench_runs_every_task_on_vllm_and_rescores(tmp_path, vllm_backend, scorer):
    from lceval.metrics import infinitebench as infinitebench_metrics

    _, records, results = run_task(tmp_path, "infinitebench", backend=vllm_backend, backend_name="vllm",
                                   options={"scorer": scorer})
    assert results["scorer"] == scorer and set(results["by_task"]) == set(infinitebench.tasks_spec())
    preds = tmp_path / "preds"
    infinitebench.write_prediction_files(records, preds)
    rescored, _ = infinitebench_metrics.score_pred_dir(preds, scorer=scorer)
    assert rescored["scores_x100"] == results["by_task"]


@pytest.mark.slow
def test_infinitebench_runs_every_task_on_hf(tmp_path, demo_model):
    _, records, results = run_task(tmp_path, "infinitebench", options={"template": "base"})
    assert len(records) == results["n_expected"] == 3 * len(infinitebench.tasks_spec())
    assert all(0 <= v <= 100 for v in results["by_task"].values())
    assert any(r["meta"]["answer_budget_cut"] for r in records)  # math_calc's 30,000 tokens do not fit 2048


def official_layout(tmp_path, dataset="trec"):
    """A copy of a bundled file in the official data.zip layout, with its ids changed so a test can tell."""
    rows = longbench.LongBenchTask({"datasets": [dataset]})._rows(dataset)
    (tmp_path / "data").mkdir(parents=True)
    for i, row in enumerate(rows):
        row["_id"] = f"local-{i}"
    (tmp_path / "data" / f"{dataset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_data_dir_flag_reads_the_official_layout(tmp_path, cli_env, lceval_cmd):
    import subprocess

    official_layout(tmp_path / "lb")
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "hf", "--tasks",
                           "longbench/trec", "--data-dir", str(tmp_path / "lb"), "--out", str(tmp_path / "out"),
                           "--run-id", "d", "--limit", "1"],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "d" / "samples.jsonl").read_text().splitlines()[0])
    assert record["id"] == "trec/local-0"
    missing = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "hf", "--tasks",
                              "longbench/lcc", "--data-dir", str(tmp_path / "lb"), "--out", str(tmp_path / "out"),
                              "--run-id", "m"],
                             env=cli_env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert f"lcc.jsonl is not in {tmp_path / 'lb'}" in missing.stderr and "Traceback" not in missing.stderr


def test_longbench_hub_path_reads_data_zip_from_the_hub_cache(tmp_path, ctx, monkeypatch):
    """The real hub-loading code (hf_hub_download of data.zip), served offline from a hub cache on disk."""
    import zipfile

    import huggingface_hub.constants as hub_constants

    rows = official_layout(tmp_path / "src")
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "datasets--THUDM--LongBench"
    (repo / "snapshots" / commit).mkdir(parents=True)
    with zipfile.ZipFile(repo / "snapshots" / commit / "data.zip", "w") as archive:
        archive.write(tmp_path / "src" / "data" / "trec.jsonl", "data/trec.jsonl")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    task = longbench.LongBenchTask({"datasets": ["trec"], "hub": True})
    samples = task.build_samples(ctx)
    assert [s.id for s in samples] == [f"trec/local-{i}" for i in range(len(rows))]
    assert task.revision == commit
    with zipfile.ZipFile(repo / "snapshots" / commit / "data.zip", "w") as archive:
        archive.writestr("data/trec.jsonl", '{"input": "q", "context": "c", "length": 1, "all_classes": null}\n')
    with pytest.raises(UserError, match=r"data\.zip/data/trec\.jsonl line 1 lacks the field 'answers'"):
        longbench.LongBenchTask({"datasets": ["trec"], "hub": True}).build_samples(ctx)
