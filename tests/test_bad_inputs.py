"""The boundary: every bad input to every command stops with one sentence, exit 2, and nothing written.

A table of bad inputs (command line, expected exit code, the key words of the one `error:` line) across `run`,
`score`, `compare`, `gate`, `report`, `heatmap`, `show`, `tasks`, `train`, `export` and `data synth`. Each case
runs the CLI in-process (lceval.cli.run_cli, the console script's own code), and checks: the exit code, no
traceback, exactly one `error:` line on stderr and it is the last line, the key words in it, and that nothing under
the test's folder changed: the finished run folder byte for byte, every other file and folder by name, size and
modification time (so a refused command wrote, created or removed nothing, inside --out or outside it).

The one real run (hf backend, demo model, two needle samples) is made once per module; no case starts an engine.
At the end, the kill -9 trials (slow): `lceval run` killed at seeded random moments and resumed loses and
duplicates no sample, and ends with the results of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from lceval.cli import run_cli

REPO = Path(__file__).resolve().parent.parent
TINY_RECIPE = REPO / "recipes" / "tiny-qlora-cpu.yaml"
RUN_ID = "X"
GRID = ["-o", "needle.lengths=[256]", "-o", "needle.depths=[0,50]"]
DEMO = ["--model", "lceval-demo"]  # named, so that another default model cannot change what these cases test
LATIN1 = "caf\xe9 cr\xe8me\n".encode("latin-1")  # not UTF-8: the byte 0xe9


# ------------------------------------------------------------------------------------------------- fixtures




@pytest.fixture(scope="module")
def root(tmp_path_factory, offline) -> Path:
    return tmp_path_factory.mktemp("boundary")


@pytest.fixture(scope="module")
def finished_run(root) -> Path:
    """A real, complete small run: ROOT/out/X."""
    code = run_cli(["run", *DEMO, "--backend", "hf", "--out", str(root / "out"), "--run-id", RUN_ID, *GRID])
    assert code == 0
    run = root / "out" / RUN_ID
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    assert len((run / "samples.jsonl").read_text().splitlines()) == 3  # 2 cells and the no-needle control
    return run


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _json(path: Path, data) -> Path:
    return _write(path, json.dumps(data))


def _copy_model(demo: Path, target: Path) -> Path:
    shutil.copytree(demo, target)
    return target


def _build_models(w: Path, demo: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    bert = w / "bert"
    BertForMaskedLM(BertConfig(vocab_size=1030, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512)).save_pretrained(bert)
    for file in demo.glob("tokenizer*"):
        shutil.copy(file, bert)
    weights = (demo / "model.safetensors").read_bytes()
    _write(_copy_model(demo, w / "corrupt") / "model.safetensors", weights[: len(weights) // 2])
    _write(_copy_model(demo, w / "empty-weights") / "model.safetensors", b"")
    (_copy_model(demo, w / "no-weights") / "model.safetensors").unlink()
    tok = _copy_model(demo, w / "tokenizer-auto-map")
    config = json.loads((tok / "tokenizer_config.json").read_text())
    _json(tok / "tokenizer_config.json", {**config, "auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}})
    _write(tok / "tokenization_x.py", "raise SystemExit('remote code ran')\n")
    model = _copy_model(demo, w / "model-auto-map")
    config = json.loads((model / "config.json").read_text())
    _json(model / "config.json", {**config, "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}})
    _write(_copy_model(demo, w / "bad-config-json") / "config.json", "{not json")
    shard = _copy_model(demo, w / "missing-shard")
    _json(shard / "model.safetensors.index.json", {"metadata": {}, "weight_map": {"lm_head.weight":
                                                                                 "model-00002-of-00002.safetensors"}})
    window = _copy_model(demo, w / "bad-window")
    config = json.loads((window / "config.json").read_text())
    _json(window / "config.json", {**config, "max_position_embeddings": "long"})


def _run_copy(run: Path, target: Path, **files: str | bytes | None) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("*.png", "*.csv"))
    for name, content in files.items():
        name = name.replace("_", ".")
        if content is None:
            (target / name).unlink()
        else:
            _write(target / name, content)
    return target


@pytest.fixture(scope="module")
def workspace(root, finished_run, demo_model) -> Path:
    """ROOT/w: the bad files the cases name (models, configs, prediction folders, runs, policies, recipes)."""
    w = root / "w"
    w.mkdir()
    _write(w / "afile", "a file where a folder is expected\n")
    (w / "empty-dir").mkdir()
    _write(w / "docs" / "a.txt", "A long document.\n\nIt has two paragraphs.\n")
    _build_models(w, demo_model)

    # run configs
    _write(w / "bad.yaml", "tasks: [needle\n  backend: : hf\n")
    _write(w / "list.yaml", "- needle\n- hf\n")
    _write(w / "unknown.yaml", "tasks: needle\nbogus_key: 1\n")
    _write(w / "batch.yaml", "batch_size: -3\n")
    _write(w / "taskopts.yaml", "task_options: [1, 2]\n")
    _write(w / "latin1.yaml", b"tasks: needle\n# " + LATIN1)
    _write(w / "runid.yaml", "run_id: ../escaped\n")
    _write(w / "dtype.yaml", "dtype: 5\n")
    _write(w / "limit.yaml", "limit: many\n")
    _write(w / "needleopts.yaml", "task_options:\n  needle:\n    lengths: [256]\n    depths: [0, 101]\n")

    # LongBench and InfiniteBench prediction folders
    row = {"pred": "3", "answers": ["3"], "all_classes": None}
    _write(w / "lb-latin1" / "trec.jsonl", json.dumps(row).encode() + b"\n" + b'{"pred": "' + LATIN1.strip() + b'"}\n')
    _write(w / "lb-badjson" / "trec.jsonl", json.dumps(row) + "\n{oops\n")
    _write(w / "lb-notobject" / "trec.jsonl", "[1, 2]\n")
    _write(w / "lb-missing-field" / "trec.jsonl", json.dumps({"pred": "x", "all_classes": None}) + "\n")
    _write(w / "lb-int-qasper" / "qasper.jsonl", json.dumps({"pred": "x", "answers": [3], "all_classes": None}) + "\n")
    _write(w / "lb-unknown-name" / "nosuchset.jsonl", json.dumps(row) + "\n")
    _write(w / "lb-ok" / "trec.jsonl", json.dumps(row) + "\n")
    _write(w / "lb-resultdir" / "trec.jsonl", json.dumps(row) + "\n")
    (w / "lb-resultdir" / "result.json").mkdir()
    _write(w / "lb-e-nolength" / "trec.jsonl", json.dumps(row) + "\n")
    _write(w / "lb-pred-int" / "trec.jsonl", json.dumps({**row, "pred": 3}) + "\n")
    _write(w / "lb-empty" / "trec.jsonl", "\n")
    _write(w / "ib" / "preds_passkey.jsonl", json.dumps({"prediction": "1", "ground_truth": "1"}) + "\n")
    _write(w / "ib-latin1" / "preds_passkey.jsonl", b'{"prediction": "' + LATIN1.strip() + b'", "ground_truth": 1}\n')
    _write(w / "ib-missing-gt" / "preds_passkey.jsonl", json.dumps({"prediction": "1"}) + "\n")
    _write(w / "ib-dir-file" / "preds_passkey.jsonl" / "inner", "a folder named like a prediction file\n")

    # damaged copies of the finished run
    samples = (finished_run / "samples.jsonl").read_text()
    first = samples.splitlines()[0]
    _run_copy(finished_run, w / "run-bad-manifest", manifest_json="{broken")
    _run_copy(finished_run, w / "run-latin1-samples", samples_jsonl=LATIN1)
    _run_copy(finished_run, w / "run-dup-samples", samples_jsonl=samples + first + "\n")
    _run_copy(finished_run, w / "run-bad-line", samples_jsonl=first + "\nnot json\n" + samples)
    _run_copy(finished_run, w / "run-no-samples", samples_jsonl=None)
    _run_copy(finished_run, w / "run-not-sample", samples_jsonl="[1, 2]\n")
    _run_copy(finished_run, w / "run-no-task", samples_jsonl='{"id": "a", "scores": {}}\n')
    _run_copy(finished_run, w / "run-bad-results", results_json="[1, 2]")
    _run_copy(finished_run, w / "run-results-latin1", results_json=LATIN1)
    no_cost = {k: v for k, v in json.loads((finished_run / "results.json").read_text()).items() if k != "cost"}
    _run_copy(finished_run, w / "run-no-cost", results_json=json.dumps(no_cost))  # a run from before costs
    _run_copy(finished_run, w / "run-results-notasks", results_json='{"schema_version": 1}')
    _run_copy(finished_run, w / "run-no-results", results_json=None)
    _run_copy(finished_run, w / "run-manifest-list", manifest_json="[]")

    # gate policies
    for name, text in {
        "margn": "checks:\n  - {task: needle, metric: key_facts, margn: 0.1}\n",
        "alpha": "alpha: 2\nchecks:\n  - {task: needle, metric: key_facts}\n",
        "alpha-text": "alpha: low\nchecks:\n  - {task: needle, metric: key_facts}\n",
        "margin-neg": "checks:\n  - {task: needle, metric: key_facts, margin: -0.1}\n",
        "empty-checks": "checks: []\n",
        "no-checks": "alpha: 0.05\n",
        "direction": "checks:\n  - {task: needle, metric: key_facts, direction: up}\n",
        "kind": "checks:\n  - {task: needle, metric: key_facts, kind: ordinal}\n",
        "correction": "correction: bonferroni\nchecks:\n  - {task: needle, metric: key_facts}\n",
        "bootstrap": "bootstrap_iterations: 5\nchecks:\n  - {task: needle, metric: key_facts}\n",
        "seed": "seed: -1\nchecks:\n  - {task: needle, metric: key_facts}\n",
        "check-notmap": "checks:\n  - needle\n",
        "nothing": "checks:\n  - {task: needle, metric: key_facts, margin: null}\n",
        "minscore": "checks:\n  - {task: needle, metric: key_facts, min_score: high}\n",
        "no-task": "checks:\n  - {metric: key_facts}\n",
        "unknown-top": "checks:\n  - {task: needle, metric: key_facts}\nthreshold: 1\n",
        "task-absent": "checks:\n  - {task: topic, metric: accuracy}\n",
        "metric-absent": "checks:\n  - {task: needle, metric: accuracy}\n",
        "by-absent": "checks:\n  - {task: needle, metric: key_facts, by: category}\n",
        "badyaml": "checks: [\n",
        "list": "- a\n- b\n",
    }.items():
        _write(w / "policies" / f"{name}.yaml", text)
    _write(w / "policies" / "latin1.yaml", b"checks: []\n# " + LATIN1)

    # recipes (paths inside them are relative to their folder: the data mix of the tiny recipe is copied along)
    recipes = w / "recipes"
    shutil.copytree(REPO / "recipes" / "data", recipes / "data")
    text = TINY_RECIPE.read_text()
    _write(recipes / "badmix.yaml", text.replace("mix: data/tiny-mix.yaml", "mix: data/no-such-mix.yaml"))
    _write(recipes / "latin1.yaml", text.encode() + b"# " + LATIN1)
    _write(recipes / "list.yaml", "- model\n- rope\n")
    _write(recipes / "mixsource.yaml", text.replace("mix: data/tiny-mix.yaml", "mix: bad-mix.yaml"))
    _write(recipes / "bad-mix.yaml", "sources:\n  - {path: data/x.jsonl, count: zero}\n")
    _write(recipes / "nobase.yaml", text.replace("base: builtin:tiny-llama", "base: ''"))
    _write(recipes / "section-list.yaml", text + "export: [1]\n")

    # adapters for export
    _json(w / "adapter" / "lceval_training.json", {"base_model": str(w / "no-such-base"), "rope": {}})
    _write(w / "bad-record" / "lceval_training.json", "{broken")
    _json(w / "record-list" / "lceval_training.json", [1, 2])
    _write(w / "record-latin1" / "lceval_training.json", LATIN1)

    # synth prompts
    _write(w / "prompts-bad.yaml", "tasks: [1, 2]\n")
    _write(w / "prompts-notask.yaml", "tasks:\n  qa: {unit: page, prompt: 'no context'}\n")
    return w


def snapshot(root: Path, exact: Path) -> dict[str, object]:
    """Every file and folder under `root`: contents under `exact`, else size and modification time."""
    state: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_dir():
            state[name] = "folder"
        elif exact in path.parents:
            state[name] = path.read_bytes()
        else:
            info = path.stat()
            state[name] = (info.st_size, info.st_mtime_ns)
    return state


# ------------------------------------------------------------------------------------------------- the table


def R(*args: str) -> list[str]:  # noqa: N802 - a run case: the finished run's --out and --run-id, hf backend
    model = [] if "--model" in args else DEMO  # the demo model unless the case names another
    return ["run", *model, "--backend", "hf", "--out", "{out}", "--run-id", RUN_ID, *args]


def RG(*args: str) -> list[str]:  # noqa: N802 - a run case with the finished run's grid
    return R(*GRID, *args)


def Opt(*options: str) -> list[str]:  # -o options, each given as TASK.KEY=VALUE
    return [part for option in options for part in ("-o", option)]


def G(*args: str) -> list[str]:  # noqa: N802 - a gate case of the finished run against itself
    return ["gate", "--candidate", "{run}", "--baseline", "{run}", *args]


def T(*overrides: str, recipe: str = str(TINY_RECIPE), out: str = "{w}/train-out") -> list[str]:  # noqa: N802
    return ["train", "--recipe", recipe, "--output-dir", out, *overrides]


def S(*args: str, docs: str = "{w}/docs") -> list[str]:  # noqa: N802 - a data synth case
    return ["data", "synth", docs, "--output-dir", "{w}/synth-out", "--base-url", "http://127.0.0.1:9",
            "--max-retries", "0", *args]


def P(name: str) -> list[str]:  # noqa: N802 - a gate case with a policy file of the workspace
    return G("--policy", f"{{w}}/policies/{name}.yaml")


WHOLE = "whole number"
CASES: list[tuple[str, list[str], int, list[str]]] = [
    # --- run: flags out of range or of the wrong type
    ("run-limit-0", RG("--limit", "0"), 2, ["--limit 0", "1 or more"]),
    ("run-limit-negative", RG("--limit", "-5"), 2, ["--limit -5", "1 or more"]),
    ("run-limit-text", RG("--limit", "abc"), 2, ["--limit 'abc'", WHOLE]),
    ("run-limit-fraction", RG("--limit", "1.5"), 2, ["--limit '1.5'", WHOLE]),
    ("run-batch-size-0", RG("--batch-size", "0"), 2, ["--batch-size 0", "1 or more"]),
    ("run-batch-size-negative", RG("--batch-size", "-1"), 2, ["--batch-size -1", "1 or more"]),
    ("run-max-length-0", RG("--max-length", "0"), 2, ["--max-length 0", "1 or more"]),
    ("run-max-length-negative", RG("--max-length", "-10"), 2, ["--max-length -10", "1 or more"]),
    ("run-max-length-above-window", RG("--max-length", "4096"), 2, ["4096", "2048", "--rope-theta"]),
    ("run-rope-theta-negative", RG("--rope-theta", "-1"), 2, ["--rope-theta -1.0", "above 0"]),
    ("run-rope-theta-0", RG("--rope-theta", "0"), 2, ["--rope-theta 0.0", "above 0"]),
    ("run-rope-theta-nan", RG("--rope-theta", "nan"), 2, ["--rope-theta nan", "above 0"]),
    ("run-rope-theta-inf", RG("--rope-theta", "inf"), 2, ["--rope-theta inf", "above 0"]),
    ("run-rope-theta-text", RG("--rope-theta", "big"), 2, ["--rope-theta 'big'", "number"]),
    ("run-num-fewshot-negative", RG("--num-fewshot", "-1"), 2, ["--num-fewshot -1", "0 or more"]),
    ("run-concurrency-0", RG("--concurrency", "0"), 2, ["--concurrency 0", "1 or more"]),
    ("run-max-retries-negative", RG("--max-retries", "-1"), 2, ["--max-retries -1", "0 or more"]),
    ("run-request-timeout-0", RG("--request-timeout", "0"), 2, ["--request-timeout 0.0", "above 0"]),
    ("run-request-timeout-negative", RG("--request-timeout", "-5"), 2, ["--request-timeout -5.0", "above 0"]),
    ("run-openai-api", RG("--openai-api", "rest"), 2, ["--openai-api 'rest'", "completions, chat"]),
    ("run-gpu-memory-5", RG("--gpu-memory-utilization", "5"), 2, ["--gpu-memory-utilization 5.0", "at most 1"]),
    ("run-gpu-memory-0", RG("--gpu-memory-utilization", "0"), 2, ["--gpu-memory-utilization 0.0", "above 0"]),
    ("run-gpu-memory-negative", RG("--gpu-memory-utilization", "-0.5"), 2, ["-0.5", "above 0 and at most 1"]),
    ("run-tensor-parallel-0", RG("--tensor-parallel-size", "0"), 2, ["--tensor-parallel-size 0", "1 or more"]),
    ("run-tensor-parallel-0-vllm", RG("--backend", "vllm", "--tensor-parallel-size", "0"), 2,
     ["--tensor-parallel-size 0"]),
    ("run-seed-negative", RG("--seed", "-1"), 2, ["--seed -1", "from 0 to 4294967295"]),
    ("run-seed-huge", RG("--seed", "99999999999"), 2, ["--seed 99999999999", "from 0"]),
    ("run-dtype-bogus", RG("--dtype", "bogus"), 2, ["--dtype 'bogus'", "auto, float32, bfloat16, float16"]),
    ("run-dtype-fp16", RG("--dtype", "fp16"), 2, ["--dtype 'fp16'", "float16"]),
    ("run-unknown-flag", RG("--bogus-flag", "1"), 2, ["--bogus-flag"]),
    ("run-option-without-value", [*RG(), "-o"], 2, ["-o", "requires an argument"]),
    # --- run: run ids are names, not paths
    ("run-id-parent", RG("--run-id", "../escaped"), 2, ["--run-id '../escaped'", "a name, not a path"]),
    ("run-id-absolute", RG("--run-id", "{w}/abs"), 2, ["--run-id", "a name, not a path"]),
    ("run-id-nested", RG("--run-id", "a/b"), 2, ["--run-id 'a/b'", "not a path"]),
    ("run-id-dotdot", RG("--run-id", ".."), 2, ["--run-id '..'", "not a path"]),
    ("run-id-dot", RG("--run-id", "."), 2, ["--run-id '.'", "not a path"]),
    ("run-id-backslash", RG("--run-id", "a\\b"), 2, ["--run-id", "not a path"]),
    ("run-id-empty", RG("--run-id", ""), 2, ["--run-id ''", "a name"]),
    ("run-id-too-long", RG("--run-id", "x" * 300), 2, ["--run-id", "at most 200 bytes"]),
    # --- run: tasks and backends
    ("run-tasks-empty", RG("--tasks", ""), 2, ["--tasks ''", "comma list of task names"]),
    ("run-tasks-commas", RG("--tasks", ",,"), 2, ["--tasks ',,'", "comma list"]),
    ("run-unknown-task", RG("--tasks", "nosuchtask"), 2, ["nosuchtask", "needle"]),
    ("run-unknown-task-among-known", RG("--tasks", "needle,nosuchtask"), 2, ["nosuchtask"]),
    ("run-unknown-backend", RG("--backend", "nosuchbackend"), 2, ["nosuchbackend", "hf", "vllm"]),
    ("run-empty-backend", RG("--backend", ""), 2, ["--backend ''", "non-empty text"]),
    ("run-base-url-on-hf", RG("--base-url", "http://localhost:1"), 2, ["--base-url", "--backend openai"]),
    ("run-served-model-on-hf", RG("--served-model", "m"), 2, ["--served-model", "--backend openai"]),
    ("run-api-key-env-on-hf", RG("--api-key-env", "KEY"), 2, ["--api-key-env", "--backend openai"]),
    ("run-markup-task", RG("--tasks", "[bold]x[/bold]"), 2, ["[bold]x[/bold]"]),
    # --- run: --dry-run estimates from an earlier run's cost (--calibrate-from)
    ("run-calibrate-from-without-dry-run", RG("--calibrate-from", "{run}"), 2,
     ["--calibrate-from", "applies to --dry-run"]),
    ("run-calibrate-from-missing", RG("--dry-run", "--calibrate-from", "{w}/no-such-run"), 2,
     ["--calibrate-from", "not a folder"]),
    ("run-calibrate-from-not-a-run", RG("--dry-run", "--calibrate-from", "{w}/empty-dir"), 2,
     ["--calibrate-from", "no results.json"]),
    ("run-calibrate-from-bad-results", RG("--dry-run", "--calibrate-from", "{w}/run-bad-results"), 2,
     ["results.json", "JSON object"]),
    ("run-calibrate-from-no-cost", RG("--dry-run", "--calibrate-from", "{w}/run-no-cost"), 2,
     ["--calibrate-from", "no cost record"]),
    # --- run: needle options (-o needle.KEY=VALUE)
    ("needle-lengths-text", R(*Opt("needle.lengths=abc")), 2, ["needle.lengths 'abc'", "list of whole numbers"]),
    ("needle-lengths-commas", R(*Opt("needle.lengths=1024,2048")), 2,
     ["needle.lengths '1024,2048'", "list of whole numbers", "written [a,b,c]"]),
    ("needle-lengths-empty", R(*Opt("needle.lengths=[]")), 2, ["needle.lengths []", "non-empty list"]),
    ("needle-lengths-0", R(*Opt("needle.lengths=[0]")), 2, ["needle.lengths [0]", "each 1 or more"]),
    ("needle-lengths-negative", R(*Opt("needle.lengths=[-256]")), 2, ["needle.lengths [-256]", "1 or more"]),
    ("needle-lengths-fraction", R(*Opt("needle.lengths=[256.5]")), 2, ["needle.lengths [256.5]", WHOLE]),
    ("needle-lengths-scalar", R(*Opt("needle.lengths=256")), 2, ["needle.lengths 256", "list"]),
    ("needle-depths-150", R(*Opt("needle.lengths=[256]", "needle.depths=[150]")), 2,
     ["needle.depths [150]", "from 0 to 100"]),
    ("needle-depths-negative", R(*Opt("needle.lengths=[256]", "needle.depths=[-1]")), 2, ["needle.depths [-1]"]),
    ("needle-depths-text", R(*Opt("needle.lengths=[256]", "needle.depths=x")), 2, ["needle.depths 'x'"]),
    ("needle-depths-empty", R(*Opt("needle.lengths=[256]", "needle.depths=[]")), 2, ["needle.depths []"]),
    ("needle-num-depths-0", R(*Opt("needle.lengths=[256]", "needle.num_depths=0")), 2,
     ["needle.num_depths 0", "1 or more"]),
    ("needle-num-lengths-0", R(*Opt("needle.min_length=256", "needle.max_length=512", "needle.num_lengths=0")), 2,
     ["needle.num_lengths 0"]),
    ("needle-min-length-0", R(*Opt("needle.min_length=0", "needle.max_length=512")), 2, ["needle.min_length 0"]),
    ("needle-max-new-tokens-0", RG(*Opt("needle.max_new_tokens=0")), 2, ["needle.max_new_tokens 0", "1 or more"]),
    ("needle-max-new-tokens-negative", RG(*Opt("needle.max_new_tokens=-3")), 2, ["needle.max_new_tokens -3"]),
    ("needle-max-new-tokens-text", RG(*Opt("needle.max_new_tokens=lots")), 2, ["needle.max_new_tokens 'lots'"]),
    ("needle-depth-spacing", RG(*Opt("needle.depth_spacing=log")), 2,
     ["needle.depth_spacing 'log'", "linear, sigmoid"]),
    ("needle-depth-rounding", RG(*Opt("needle.depth_rounding=ceil")), 2, ["needle.depth_rounding 'ceil'", "floor"]),
    ("needle-min-depth-120", R(*Opt("needle.lengths=[256]", "needle.min_depth=120")), 2, ["needle.min_depth 120"]),
    ("needle-max-depth-negative", R(*Opt("needle.lengths=[256]", "needle.max_depth=-5")), 2, ["needle.max_depth -5"]),
    ("needle-training-length-0", RG(*Opt("needle.training_length=0")), 2, ["needle.training_length 0"]),
    ("needle-chat-template-text", RG(*Opt("needle.chat_template=maybe")), 2, ["needle.chat_template 'maybe'",
                                                                             "true or false"]),
    ("needle-unknown-preset", RG(*Opt("needle.preset=nope")), 2, ["needle preset 'nope'", "seed-paper"]),
    ("needle-preset-list", RG(*Opt("needle.preset=[1]")), 2, ["needle preset [1]"]),
    ("needle-unknown-option", RG(*Opt("needle.bogus_option=1")), 2, ["unknown needle option 'bogus_option'"]),
    ("needle-too-short", R(*Opt("needle.lengths=[8]", "needle.depths=[0]")), 2, ["needle length 8"]),
    ("needle-above-window", R(*Opt("needle.lengths=[4096]", "needle.depths=[0]")), 2, ["needle length 4096", "2048"]),
    ("option-without-equals", RG("-o", "needle.lengths"), 2, ["needle.lengths", "TASK.KEY=VALUE"]),
    ("option-without-task", RG("-o", "lengths=[256]"), 2, ["lengths=[256]", "TASK.KEY=VALUE"]),
    ("option-empty-task", RG("-o", ".lengths=[256]"), 2, [".lengths=[256]"]),
    ("option-bad-yaml", R("-o", "needle.lengths=[256", "-o", "needle.depths=[0]"), 2, ["needle.lengths=[256",
                                                                                      "not valid YAML"]),
    ("options-for-task-not-run", RG("-o", "othertask.k=1"), 2, ["othertask"]),
    # --- run: other tasks' options
    ("passkey-max-new-tokens-0", R("--tasks", "passkey", *Opt("passkey.max_new_tokens=0")), 2,
     ["passkey.max_new_tokens 0"]),
    ("passkey-lengths-text", R("--tasks", "passkey", *Opt("passkey.lengths=long")), 2, ["passkey.lengths 'long'"]),
    ("topic-counts-0", R("--tasks", "topic", *Opt("topic.counts=[0,5]")), 2, ["topic.counts [0, 5]", "1 or more"]),
    ("topic-counts-empty", R("--tasks", "topic", *Opt("topic.counts=[]")), 2, ["topic.counts []"]),
    ("topic-cases-0", R("--tasks", "topic", *Opt("topic.cases=0")), 2, ["topic.cases 0"]),
    ("topic-source", R("--tasks", "topic", *Opt("topic.source=nowhere")), 2, ["topic.source 'nowhere'", "generated"]),
    ("topic-exchanges", R("--tasks", "topic", *Opt("topic.min_exchanges=3", "topic.max_exchanges=1")), 2,
     ["topic.min_exchanges 3", "topic.max_exchanges 1"]),
    ("topic-max-new-tokens", R("--tasks", "topic", *Opt("topic.max_new_tokens=-1")), 2, ["topic.max_new_tokens -1"]),
    ("topic-unknown-option", R("--tasks", "topic", *Opt("topic.num_topics=[5]")), 2,
     ["unknown topic option 'num_topics'"]),
    ("longbench-max-length-0", R("--tasks", "longbench", *Opt("longbench.max_length=0")), 2,
     ["longbench.max_length 0"]),
    ("longbench-unknown-dataset", R("--tasks", "longbench", *Opt("longbench.datasets=[nope]")), 2,
     ["unknown LongBench dataset 'nope'"]),
    ("longbench-e-text", R("--tasks", "longbench", *Opt("longbench.e=sometimes")), 2, ["longbench.e 'sometimes'"]),
    ("longbench-v2-max-length", R("--tasks", "longbench-v2", *Opt("longbench-v2.max_length=-1")), 2,
     ["longbench-v2.max_length -1"]),
    ("longbench-v2-cot", R("--tasks", "longbench-v2", *Opt("longbench-v2.cot=true")), 2, ["not implemented yet"]),
    ("infinitebench-template", R("--tasks", "infinitebench", *Opt("infinitebench.template=raw")), 2,
     ["infinitebench.template 'raw'", "chat, base"]),
    ("infinitebench-scorer", R("--tasks", "infinitebench", *Opt("infinitebench.scorer=v-c")), 2,
     ["infinitebench.scorer 'v-c'", "v-a, v-b"]),
    ("infinitebench-unknown-task", R("--tasks", "infinitebench", *Opt("infinitebench.tasks=[nope]")), 2,
     ["unknown InfiniteBench task 'nope'"]),
    ("mmlu-num-fewshot", R("--tasks", "mmlu", *Opt("mmlu.num_fewshot=-1")), 2, ["mmlu.num_fewshot -1", "0 or more"]),
    ("mmlu-bootstrap", R("--tasks", "mmlu", *Opt("mmlu.bootstrap_iters=-5")), 2, ["mmlu.bootstrap_iters -5"]),
    ("mmlu-unknown-option", R("--tasks", "mmlu", *Opt("mmlu.shots=5")), 2, ["unknown mmlu option 'shots'"]),
    ("lm-eval-without-name", R("--tasks", "lm-eval:"), 2, ["lm-eval:", "names no lm-eval task"]),
    # --- run: models (checked before any engine starts)
    ("model-bert-hf", RG("--model", "{w}/bert"), 2, ["{w}/bert", "BertForMaskedLM", "not a causal language model"]),
    ("model-bert-vllm", RG("--backend", "vllm", "--model", "{w}/bert"), 2, ["BertForMaskedLM", "causal"]),
    ("model-bert-auto", RG("--backend", "auto", "--model", "{w}/bert"), 2, ["BertForMaskedLM", "causal"]),
    ("model-corrupt-hf", RG("--model", "{w}/corrupt"), 2, ["{w}/corrupt/model.safetensors", "corrupt or truncated"]),
    ("model-corrupt-vllm", RG("--backend", "vllm", "--model", "{w}/corrupt"), 2,
     ["{w}/corrupt/model.safetensors", "corrupt or truncated"]),
    ("model-empty-weights", RG("--model", "{w}/empty-weights"), 2, ["{w}/empty-weights/model.safetensors"]),
    ("model-no-weights", RG("--model", "{w}/no-weights"), 2, ["{w}/no-weights", "holds no weights"]),
    ("model-missing-shard", RG("--model", "{w}/missing-shard"), 2, ["model-00002-of-00002.safetensors"]),
    ("model-tokenizer-auto-map", RG("--model", "{w}/tokenizer-auto-map"), 2,
     ["tokenizer_config.json", "--trust-remote-code"]),
    ("model-auto-map", RG("--model", "{w}/model-auto-map"), 2, ["config.json", "--trust-remote-code"]),
    ("model-missing", RG("--model", "{w}/no-such-model"), 2, ["{w}/no-such-model"]),
    ("model-folder-without-config", RG("--model", "{w}/empty-dir"), 2, ["{w}/empty-dir"]),
    ("model-bad-config-json", RG("--model", "{w}/bad-config-json"), 2, ["{w}/bad-config-json/config.json",
                                                                          "not valid JSON"]),
    ("model-bad-window", RG("--model", "{w}/bad-window"), 2, ["max_position_embeddings 'long'"]),
    ("model-markup-path", RG("--model", "{w}/[/x]"), 2, ["{w}/[/x]"]),
    ("adapter-missing", RG("--adapter", "{w}/no-such-adapter"), 2, ["{w}/no-such-adapter", "adapter_config.json"]),
    # --- run: config files
    ("config-missing", RG("--config", "{w}/no-such.yaml"), 2, ["{w}/no-such.yaml", "does not exist"]),
    ("config-bad-yaml", RG("--config", "{w}/bad.yaml"), 2, ["{w}/bad.yaml", "not valid YAML"]),
    ("config-not-mapping", RG("--config", "{w}/list.yaml"), 2, ["{w}/list.yaml", "mapping"]),
    ("config-unknown-key", RG("--config", "{w}/unknown.yaml"), 2, ["{w}/unknown.yaml", "bogus_key"]),
    ("config-batch-size", RG("--config", "{w}/batch.yaml"), 2, ["batch_size -3 in config file {w}/batch.yaml",
                                                                 "1 or more"]),
    ("config-task-options-list", RG("--config", "{w}/taskopts.yaml"), 2, ["task_options", "{w}/taskopts.yaml"]),
    ("config-not-utf8", RG("--config", "{w}/latin1.yaml"), 2, ["{w}/latin1.yaml", "not UTF-8", "line 2"]),
    ("config-is-folder", RG("--config", "{w}"), 2, ["{w}", "folder"]),
    ("config-run-id", ["run", *DEMO, "--backend", "hf", "--out", "{out}", "--config", "{w}/runid.yaml", *GRID], 2,
     ["run_id '../escaped' in config file", "not a path"]),
    ("config-dtype", RG("--config", "{w}/dtype.yaml"), 2, ["dtype 5 in config file", "float32"]),
    ("config-limit", RG("--config", "{w}/limit.yaml"), 2, ["limit 'many' in config file", WHOLE]),
    ("config-needle-depths", R("--config", "{w}/needleopts.yaml"), 2, ["needle.depths [0, 101]"]),
    # --- run: the output folder, and resuming with other settings (refused; the run stays as it was)
    ("out-below-a-file", RG("--out", "{w}/afile/runs"), 2, ["{w}/afile", "--out"]),
    ("out-is-a-file", RG("--out", "{w}/afile"), 2, ["{w}/afile", "--out"]),
    ("resume-other-depths", R(*Opt("needle.lengths=[256]", "needle.depths=[0]")), 2, ["--run-id", "depths"]),
    ("resume-other-seed", RG("--seed", "7"), 2, ["--run-id", "seed"]),
    ("resume-other-max-length", RG("--max-length", "1024"), 2, ["--run-id", "max_length"]),
    ("resume-no-chat-template", RG("--no-chat-template"), 2, ["--run-id", "chat_template"]),
    # --- score
    ("score-unknown-benchmark", ["score", "nope", "--pred-dir", "{w}/lb-ok"], 2,
     ["BENCHMARK 'nope'", "longbench, infinitebench"]),
    ("score-missing-pred-dir", ["score", "longbench"], 2, ["--pred-dir"]),
    ("score-pred-dir-missing", ["score", "longbench", "--pred-dir", "{w}/no-such"], 2, ["{w}/no-such",
                                                                                       "does not exist"]),
    ("score-pred-dir-file", ["score", "longbench", "--pred-dir", "{w}/afile"], 2, ["{w}/afile", "not a folder"]),
    ("score-longbench-not-utf8", ["score", "longbench", "--pred-dir", "{w}/lb-latin1"], 2,
     ["{w}/lb-latin1/trec.jsonl", "not UTF-8", "line 2"]),
    ("score-longbench-bad-json", ["score", "longbench", "--pred-dir", "{w}/lb-badjson"], 2,
     ["{w}/lb-badjson/trec.jsonl line 2", "not valid JSON"]),
    ("score-longbench-not-object", ["score", "longbench", "--pred-dir", "{w}/lb-notobject"], 2,
     ["line 1", "not a JSON object"]),
    ("score-longbench-missing-field", ["score", "longbench", "--pred-dir", "{w}/lb-missing-field"], 2,
     ["lacks the field 'answers'"]),
    ("score-longbench-int-answers-qa", ["score", "longbench", "--pred-dir", "{w}/lb-int-qasper"], 2,
     ["qasper.jsonl line 1", "not a list of strings"]),
    ("score-longbench-pred-not-text", ["score", "longbench", "--pred-dir", "{w}/lb-pred-int"], 2,
     ["pred is not a string"]),
    ("score-longbench-unknown-file", ["score", "longbench", "--pred-dir", "{w}/lb-unknown-name"], 2,
     ["nosuchset.jsonl", "not named after a LongBench dataset"]),
    ("score-longbench-empty-folder", ["score", "longbench", "--pred-dir", "{w}/empty-dir"], 2,
     ["holds no .jsonl"]),
    ("score-longbench-empty-file", ["score", "longbench", "--pred-dir", "{w}/lb-empty"], 2, ["holds no predictions"]),
    ("score-longbench-scorer", ["score", "longbench", "--pred-dir", "{w}/lb-ok", "--scorer", "v-b"], 2,
     ["--scorer", "infinitebench"]),
    ("score-longbench-result-is-folder", ["score", "longbench", "--pred-dir", "{w}/lb-resultdir"], 2,
     ["{w}/lb-resultdir/result.json", "folder"]),
    ("score-longbench-e-no-length", ["score", "longbench", "--e", "--pred-dir", "{w}/lb-e-nolength"], 2,
     ["lacks the field 'length'"]),
    ("score-infinitebench-not-utf8", ["score", "infinitebench", "--pred-dir", "{w}/ib-latin1"], 2,
     ["{w}/ib-latin1/preds_passkey.jsonl", "not UTF-8", "line 1"]),
    ("score-infinitebench-scorer", ["score", "infinitebench", "--pred-dir", "{w}/ib", "--scorer", "v-z"], 2,
     ["--scorer 'v-z'", "v-a, v-b"]),
    ("score-infinitebench-e", ["score", "infinitebench", "--pred-dir", "{w}/ib", "--e"], 2, ["--e", "longbench"]),
    ("score-infinitebench-missing-label", ["score", "infinitebench", "--pred-dir", "{w}/ib-missing-gt"], 2,
     ["lacks the field 'ground_truth'"]),
    ("score-infinitebench-empty-folder", ["score", "infinitebench", "--pred-dir", "{w}/empty-dir"], 2,
     ["no preds_<task>.jsonl"]),
    ("score-infinitebench-file-is-folder", ["score", "infinitebench", "--pred-dir", "{w}/ib-dir-file"], 2,
     ["{w}/ib-dir-file/preds_passkey.jsonl", "folder"]),
    # --- compare
    ("compare-missing-folder", ["compare", "{w}/no-such"], 2, ["{w}/no-such", "does not exist"]),
    ("compare-a-file", ["compare", "{w}/afile"], 2, ["{w}/afile"]),
    ("compare-not-a-run", ["compare", "{w}/empty-dir"], 2, ["{w}/empty-dir", "not a run folder"]),
    ("compare-bad-manifest", ["compare", "{run}", "{w}/run-bad-manifest"], 2, ["manifest.json", "not valid JSON"]),
    ("compare-manifest-list", ["compare", "{run}", "{w}/run-manifest-list"], 2, ["manifest.json", "JSON object"]),
    ("compare-samples-not-utf8", ["compare", "{run}", "{w}/run-latin1-samples"], 2, ["samples.jsonl", "not UTF-8"]),
    ("compare-duplicate-samples", ["compare", "{run}", "{w}/run-dup-samples"], 2, ["twice"]),
    ("compare-bad-line", ["compare", "{run}", "{w}/run-bad-line"], 2, ["samples.jsonl line 2", "not valid JSON"]),
    ("compare-no-samples", ["compare", "{run}", "{w}/run-no-samples"], 2, ["has no samples.jsonl"]),
    ("compare-record-not-sample", ["compare", "{run}", "{w}/run-not-sample"], 2, ["line 1", "not a sample record"]),
    ("compare-record-without-task", ["compare", "{run}", "{w}/run-no-task"], 2, ["line 1", "not a sample record"]),
    ("compare-bad-results", ["compare", "{run}", "{w}/run-bad-results"], 2, ["results.json", "JSON object"]),
    ("compare-format", ["compare", "{run}", "-f", "xml"], 2, ["--format 'xml'", "table, md, csv, json"]),
    ("compare-output-missing-folder", ["compare", "{run}", "-o", "{w}/no-dir/x.md"], 2,
     ["--output {w}/no-dir/x.md", "{w}/no-dir does not exist"]),
    ("compare-output-is-folder", ["compare", "{run}", "-o", "{w}"], 2, ["--output {w}", "is a folder"]),
    ("compare-output-below-file", ["compare", "{run}", "-o", "{w}/afile/x.md"], 2, ["{w}/afile is a file"]),
    ("compare-csv-output-missing-folder", ["compare", "{run}", "-f", "csv", "-o", "{w}/no-dir/x.csv"], 2,
     ["{w}/no-dir"]),
    ("compare-table-output-is-folder", ["compare", "{run}", "-f", "table", "-o", "{w}/empty-dir"], 2,
     ["is a folder"]),
    ("compare-no-runs", ["compare"], 2, ["run_dirs"]),
    # --- gate
    ("gate-json-missing-folder", G("--json", "{w}/no-dir/v.json"), 2, ["--json {w}/no-dir/v.json", "does not exist"]),
    ("gate-json-is-folder", G("--json", "{w}"), 2, ["--json {w}", "is a folder"]),
    ("gate-json-below-file", G("--json", "{w}/afile/v.json"), 2, ["{w}/afile is a file"]),
    ("gate-summary-is-folder", G("--summary", "{w}"), 2, ["--summary {w}", "is a folder"]),
    ("gate-summary-missing-folder", G("--summary", "{w}/no-dir/s.md"), 2, ["--summary", "{w}/no-dir"]),
    ("gate-policy-missing", G("--policy", "{w}/no-such.yaml"), 2, ["{w}/no-such.yaml", "does not exist"]),
    ("gate-policy-unknown-key", P("margn"), 2, ["unknown key 'margn'"]),
    ("gate-policy-alpha", P("alpha"), 2, ["alpha 2", "from 1e-09 to 0.5"]),
    ("gate-policy-alpha-text", P("alpha-text"), 2, ["alpha 'low'", "number"]),
    ("gate-policy-margin-negative", P("margin-neg"), 2, ["check 1 margin -0.1", "0 or more"]),
    ("gate-policy-empty-checks", P("empty-checks"), 2, ["checks []", "non-empty list of checks"]),
    ("gate-policy-no-checks", P("no-checks"), 2, ["checks", "required"]),
    ("gate-policy-direction", P("direction"), 2, ["direction 'up'", "higher, lower"]),
    ("gate-policy-kind", P("kind"), 2, ["kind 'ordinal'", "auto, binary, continuous"]),
    ("gate-policy-correction", P("correction"), 2, ["correction 'bonferroni'", "holm, none"]),
    ("gate-policy-bootstrap", P("bootstrap"), 2, ["bootstrap_iterations 5", "from 100"]),
    ("gate-policy-seed", P("seed"), 2, ["seed -1"]),
    ("gate-policy-check-not-mapping", P("check-notmap"), 2, ["check 1 must be a mapping"]),
    ("gate-policy-checks-nothing", P("nothing"), 2, ["would check nothing"]),
    ("gate-policy-min-score-text", P("minscore"), 2, ["min_score 'high'", "number"]),
    ("gate-policy-no-task", P("no-task"), 2, ["check 1 task", "required"]),
    ("gate-policy-unknown-top-key", P("unknown-top"), 2, ["unknown key 'threshold'"]),
    ("gate-policy-task-absent", P("task-absent"), 2, ["no topic samples"]),
    ("gate-policy-metric-absent", P("metric-absent"), 2, ["no metric 'accuracy'"]),
    ("gate-policy-by-absent", P("by-absent"), 2, ["no breakdown 'category'"]),
    ("gate-policy-bad-yaml", P("badyaml"), 2, ["not valid YAML"]),
    ("gate-policy-not-mapping", P("list"), 2, ["mapping"]),
    ("gate-policy-not-utf8", P("latin1"), 2, ["not UTF-8", "line 2"]),
    ("gate-candidate-missing", ["gate", "--candidate", "{w}/no-such", "--baseline", "{run}"], 2, ["{w}/no-such"]),
    ("gate-baseline-not-a-run", ["gate", "--candidate", "{run}", "--baseline", "{w}/empty-dir"], 2,
     ["not a run folder"]),
    ("gate-missing-baseline", ["gate", "--candidate", "{run}"], 2, ["--baseline"]),
    ("gate-update-baseline-on-file", ["gate", "--candidate", "{run}", "--baseline", "{w}/afile", "--update-baseline"],
     2, ["{w}/afile", "not a folder"]),
    ("gate-regression-exit-1", G(), 1, ["gate: fail"]),
    # --- report
    ("report-suffix", ["report", "{run}", "-o", "{w}/report.txt"], 2, ["{w}/report.txt", ".html, .md or .png"]),
    ("report-output-is-folder", ["report", "{run}", "-o", "{w}"], 2, ["--output {w}", "is a folder"]),
    ("report-output-below-file", ["report", "{run}", "-o", "{w}/afile/sub/r.html"], 2, ["{w}/afile"]),
    ("report-missing-run", ["report", "{w}/no-such", "-o", "{w}/r.html"], 2, ["{w}/no-such", "does not exist"]),
    ("report-not-a-run", ["report", "{w}/empty-dir", "-o", "{w}/r.html"], 2, ["not a run folder"]),
    ("report-bad-manifest", ["report", "{run}", "{w}/run-bad-manifest", "-o", "{w}/r.md"], 2, ["not valid JSON"]),
    ("report-missing-output", ["report", "{run}"], 2, ["--output"]),
    # --- heatmap
    ("heatmap-missing-run", ["heatmap", "{w}/no-such"], 2, ["{w}/no-such"]),
    ("heatmap-not-a-run", ["heatmap", "{w}/empty-dir"], 2, ["{w}/empty-dir"]),
    ("heatmap-a-file", ["heatmap", "{w}/afile"], 2, ["{w}/afile"]),
    ("heatmap-unknown-task", ["heatmap", "{run}", "--task", "topic"], 2, ["no results for task 'topic'"]),
    ("heatmap-empty-task", ["heatmap", "{run}", "--task", ""], 2, ["--task ''", "non-empty text"]),
    ("heatmap-training-length-0", ["heatmap", "{run}", "--training-length", "0"], 2, ["--training-length 0"]),
    ("heatmap-training-length-negative", ["heatmap", "{run}", "--training-length", "-5"], 2,
     ["--training-length -5", "1 or more"]),
    ("heatmap-training-length-text", ["heatmap", "{run}", "--training-length", "long"], 2,
     ["--training-length 'long'"]),
    ("heatmap-out-one-run", ["heatmap", "{run}", "--out", "{w}/pictures"], 2, ["--out", "two runs"]),
    ("heatmap-three-runs", ["heatmap", "{run}", "{run}", "{run}"], 2, ["one run folder, or two"]),
    ("heatmap-out-is-file", ["heatmap", "{run}", "{run}", "--out", "{w}/afile"], 2, ["--out {w}/afile",
                                                                                    "is a file"]),
    ("heatmap-bad-results", ["heatmap", "{w}/run-bad-results"], 2, ["results.json", "JSON object"]),
    ("heatmap-results-not-utf8", ["heatmap", "{w}/run-results-latin1"], 2, ["results.json", "not UTF-8"]),
    ("heatmap-no-results", ["heatmap", "{w}/run-no-results"], 2, ["results.json does not exist"]),
    # --- show and tasks
    ("show-missing-run", ["show", "{w}/no-such"], 2, ["{w}/no-such"]),
    ("show-a-file", ["show", "{w}/afile"], 2, ["{w}/afile", "not a run folder"]),
    ("show-not-a-run", ["show", "{w}/empty-dir"], 2, ["{w}/empty-dir"]),
    ("show-bad-results", ["show", "{w}/run-bad-results"], 2, ["results.json", "JSON object"]),
    ("show-results-not-utf8", ["show", "{w}/run-results-latin1"], 2, ["not UTF-8", "line 1"]),
    ("show-results-without-tasks", ["show", "{w}/run-results-notasks"], 2, ["no `tasks` mapping"]),
    ("show-no-argument", ["show"], 2, ["run_dir"]),
    ("tasks-unknown-options", ["tasks", "--options", "nosuchtask"], 2, ["unknown task 'nosuchtask'"]),
    ("tasks-unknown-flag", ["tasks", "--bogus"], 2, ["--bogus"]),
    ("tasks-lm-eval-without-name", ["tasks", "--options", "lm-eval:"], 2, ["names no lm-eval task"]),
    # --- train (every case is refused before a model is loaded or anything is written)
    ("train-recipe-missing", T(recipe="{w}/no-such.yaml"), 2, ["{w}/no-such.yaml", "does not exist"]),
    ("train-recipe-not-utf8", T(recipe="{w}/recipes/latin1.yaml"), 2, ["not UTF-8"]),
    ("train-recipe-not-mapping", T(recipe="{w}/recipes/list.yaml"), 2, ["mapping"]),
    ("train-recipe-section-list", T(recipe="{w}/recipes/section-list.yaml"), 2, ["section 'export'", "mapping"]),
    ("train-recipe-no-base", T(recipe="{w}/recipes/nobase.yaml"), 2, ["names no model.base"]),
    ("train-output-dir-is-file", T(out="{w}/afile"), 2, ["--output-dir {w}/afile", "is a file"]),
    ("train-output-dir-below-file", T(out="{w}/afile/sub"), 2, ["{w}/afile is a file"]),
    ("train-learning-rate-negative", T("training.learning_rate=-1e-4"), 2,
     ["training.learning_rate '-1e-4'", "command-line override", "above 0"]),
    ("train-learning-rate-0", T("training.learning_rate=0"), 2, ["training.learning_rate 0", "above 0"]),
    ("train-learning-rate-text", T("training.learning_rate=fast"), 2, ["training.learning_rate 'fast'", "number"]),
    ("train-lora-rank-0", T("lora.rank=0"), 2, ["lora.rank 0", "1 or more"]),
    ("train-lora-rank-text", T("lora.rank=two"), 2, ["lora.rank 'two'", WHOLE]),
    ("train-lora-dropout", T("lora.dropout=1.5"), 2, ["lora.dropout 1.5", "below 1"]),
    ("train-lora-targets-empty", T("lora.target_modules=[]"), 2, ["lora.target_modules []", "non-empty list"]),
    ("train-lora-bias", T("lora.bias=some"), 2, ["lora.bias 'some'", "none, all, lora_only"]),
    ("train-rope-method", T("rope.method=dynamic"), 2, ["rope.method 'dynamic'", "none, theta, linear, ntk, yarn"]),
    ("train-rope-factor-missing", T("rope.method=linear"), 2, ["rope.factor above 1"]),
    ("train-rope-theta-negative", T("rope.theta=-5"), 2, ["rope.theta -5", "above 0"]),
    ("train-data-max-length", T("data.max_length=4"), 2, ["data.max_length 4", "8 or more"]),
    ("train-data-overlong", T("data.overlong=keep"), 2, ["data.overlong 'keep'", "truncate, drop"]),
    ("train-global-batch-0", T("training.global_batch_size=0"), 2, ["training.global_batch_size 0"]),
    ("train-batch-not-multiple", T("training.global_batch_size=6", "training.per_device_batch_size=4"), 2,
     ["not a multiple"]),
    ("train-s2attn-packing", T("attention.s2attn=true", "data.packing=true"), 2, ["cannot be combined"]),
    ("train-group-size-ratio", T("attention.group_size_ratio=2"), 2, ["attention.group_size_ratio 2",
                                                                       "at most 1"]),
    ("train-model-dtype", T("model.dtype=int8"), 2, ["model.dtype 'int8'", "float32, bfloat16, float16"]),
    ("train-quant-type", T("quantization.quant_type=int4"), 2, ["quantization.quant_type 'int4'", "nf4, fp4"]),
    ("train-seed-negative", T("training.seed=-1"), 2, ["training.seed -1"]),
    ("train-max-steps", T("training.max_steps=-5"), 2, ["training.max_steps -5", "-1 or more"]),
    ("train-adam-beta", T("training.adam_beta1=1"), 2, ["training.adam_beta1 1", "below 1"]),
    ("train-eval-steps", T("training.eval_steps=10"), 2, ["training.eval_samples"]),
    ("train-unknown-setting", T("training.learnig_rate=1"), 2, ["unknown setting training.learnig_rate"]),
    ("train-override-form", T("nonsense=1"), 2, ["SECTION.KEY=VALUE"]),
    ("train-unknown-section", T("bogus.key=1"), 2, ["unknown section 'bogus'"]),
    ("train-override-bad-yaml", T("lora.target_modules=[q_proj"), 2, ["not valid YAML"]),
    ("train-mix-missing", T(recipe="{w}/recipes/badmix.yaml"), 2, ["no-such-mix.yaml", "does not exist"]),
    ("train-mix-source-count", T(recipe="{w}/recipes/mixsource.yaml"), 2, ["count 'zero'", WHOLE]),
    ("train-missing-output-dir", ["train", "--recipe", str(TINY_RECIPE)], 2, ["--output-dir"]),
    # --- export
    ("export-adapter-missing", ["export", "{w}/no-such", "--merge", "--output-dir", "{w}/merged"], 2,
     ["{w}/no-such", "does not exist"]),
    ("export-not-a-training-run", ["export", "{w}/empty-dir", "--merge", "--output-dir", "{w}/merged"], 2,
     ["lceval_training.json"]),
    ("export-adapter-is-file", ["export", "{w}/afile", "--merge", "--output-dir", "{w}/merged"], 2,
     ["{w}/afile", "not a folder"]),
    ("export-without-merge", ["export", "{w}/adapter", "--output-dir", "{w}/merged"], 2, ["--merge"]),
    ("export-dtype", ["export", "{w}/adapter", "--merge", "--output-dir", "{w}/merged", "--dtype", "int8"], 2,
     ["--dtype 'int8'", "float32, bfloat16, float16"]),
    ("export-output-is-file", ["export", "{w}/adapter", "--merge", "--output-dir", "{w}/afile"], 2,
     ["--output-dir {w}/afile", "is a file"]),
    ("export-bad-record", ["export", "{w}/bad-record", "--merge", "--output-dir", "{w}/merged"], 2,
     ["lceval_training.json", "not valid JSON"]),
    ("export-record-list", ["export", "{w}/record-list", "--merge", "--output-dir", "{w}/merged"], 2,
     ["not a training record"]),
    ("export-record-not-utf8", ["export", "{w}/record-latin1", "--merge", "--output-dir", "{w}/merged"], 2,
     ["not UTF-8"]),
    ("export-base-missing", ["export", "{w}/adapter", "--merge", "--output-dir", "{w}/merged"], 2,
     ["{w}/no-such-base", "--base"]),
    ("export-missing-output-dir", ["export", "{w}/adapter", "--merge"], 2, ["--output-dir"]),
    # --- data synth
    ("synth-documents-missing", S(docs="{w}/no-such"), 2, ["{w}/no-such", "does not exist"]),
    ("synth-documents-empty", S(docs="{w}/empty-dir"), 2, ["no .txt or .md files"]),
    ("synth-concurrency-0", S("--concurrency", "0"), 2, ["--concurrency 0", "1 or more"]),
    ("synth-concurrency-text", S("--concurrency", "many"), 2, ["--concurrency 'many'", WHOLE]),
    ("synth-max-retries", S("--max-retries", "-1"), 2, ["--max-retries -1", "0 or more"]),
    ("synth-request-timeout", S("--request-timeout", "0"), 2, ["--request-timeout 0.0", "above 0"]),
    ("synth-max-tokens", S("--max-tokens", "0"), 2, ["--max-tokens 0"]),
    ("synth-limit", S("--limit", "0"), 2, ["--limit 0"]),
    ("synth-tasks-unknown", S("--tasks", "nope"), 2, ["unknown synth task 'nope'"]),
    ("synth-output-is-file", ["data", "synth", "{w}/docs", "--output-dir", "{w}/afile", "--base-url", "http://x"], 2,
     ["--output-dir {w}/afile", "is a file"]),
    ("synth-prompts-missing", S("--prompts", "{w}/no-such.yaml"), 2, ["{w}/no-such.yaml", "does not exist"]),
    ("synth-prompts-bad", S("--prompts", "{w}/prompts-bad.yaml"), 2, ["{w}/prompts-bad.yaml", "tasks"]),
    ("synth-prompts-unit", S("--prompts", "{w}/prompts-notask.yaml"), 2, ["task qa", "unit"]),
    ("synth-prompts-not-utf8", S("--prompts", "{w}/latin1.yaml"), 2, ["not UTF-8"]),
    ("synth-base-url-empty", ["data", "synth", "{w}/docs", "--output-dir", "{w}/synth-out", "--base-url", ""], 2,
     ["--base-url"]),
    ("synth-server-down", S(), 2, ["http://127.0.0.1:9", "does not answer"]),
    ("synth-missing-base-url", ["data", "synth", "{w}/docs", "--output-dir", "{w}/synth-out"], 2, ["--base-url"]),
    ("data-unknown-command", ["data", "mix"], 2, ["mix"]),
]


def _fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def invoke(argv: list[str], capsys) -> tuple[int, str, str]:
    """One command line through the console script's own code, in this process."""
    capsys.readouterr()
    try:
        code = run_cli(argv)
    except BaseException:  # noqa: BLE001 - a traceback is exactly what the catalogue must not see
        captured = capsys.readouterr()
        pytest.fail(f"lceval {' '.join(argv)} raised instead of exiting:\n{traceback.format_exc()}\n{captured.err}")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_catalogue_is_large_and_covers_every_command():
    assert len(CASES) >= 150
    assert len({case[0] for case in CASES}) == len(CASES), "case ids must be unique"
    commands = {argv[0] if argv[0] != "data" else "data synth" for _, argv, _, _ in CASES}
    assert commands >= {"run", "score", "compare", "gate", "report", "heatmap", "show", "tasks", "train", "export",
                        "data synth"}


@pytest.mark.parametrize(("argv", "code", "words"), [pytest.param(a, c, k, id=i) for i, a, c, k in CASES])
def test_bad_input_is_one_sentence_and_changes_nothing(root, finished_run, workspace, capsys, argv, code, words):
    places = {"run": str(finished_run), "out": str(finished_run.parent), "w": str(workspace)}
    argv = [_fill(a, places) for a in argv]
    words = [_fill(k, places) for k in words]
    before = snapshot(root, finished_run.parent)

    got, out, err = invoke(argv, capsys)

    everything = out + err
    assert "Traceback" not in everything, everything
    assert got == code, f"exit code {got}, expected {code}:\n{everything}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if code == 2:
        assert len(errors) == 1 and lines[-1] == errors[0], f"not one `error:` line, last:\n{err}"
        message = errors[0]
    else:
        assert not errors, err
        message = everything
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert snapshot(root, finished_run.parent) == before, "a refused command changed, created or removed files"


# ------------------------------------------------------------------------------------------------- good inputs


def test_passage_count_integer_answers_are_scored_as_eval_py_does(tmp_path, offline, capsys):
    """eval.py's count_score takes str() of the answer, so integer answers (as the hub's data holds) score."""
    rows = [{"pred": "There are 3 passages.", "answers": [3], "all_classes": None},
            {"pred": "5", "answers": [4], "all_classes": None}]
    _write(tmp_path / "passage_count.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = invoke(["score", "longbench", "--pred-dir", str(tmp_path)], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "result.json").read_text()) == {"passage_count": 50.0}


def test_help_shows_the_ranges_the_errors_use(capsys, offline):
    def plain(text: str) -> str:  # the help's panels without their borders and line breaks
        return re.sub(r"[\s\u2502]+", " ", text)

    code, out, _ = invoke(["run", "--help"], capsys)
    assert code == 0
    text = plain(out)
    for phrase in ("a whole number, 1 or more", "a number above 0 and at most 1", "a name, not a path",
                   "one of auto, float32, bfloat16, float16", "a whole number from 0 to 4294967295"):
        assert phrase in text, phrase
    code, out, _ = invoke(["data", "synth", "--help"], capsys)
    assert "a whole number, 0 or more" in plain(out)
    code, out, _ = invoke(["tasks", "--options", "needle"], capsys)
    assert code == 0 and "needle.max_new_tokens" in out and "from 0 to 100" in out


def test_the_checked_models_still_run(finished_run):
    """The demo model passes every model check (no false alarm): the module's run used it."""
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "lceval-demo" and manifest["backend"]["name"] == "hf"


# ------------------------------------------------------------------------------------------------- kill -9


KILL_GRID = ["-o", "needle.lengths=[256,512,768,1024]", "-o", "needle.depths=[0,20,40,60,80,100]", "-o",
             "needle.max_new_tokens=48"]
KILL_SAMPLES = 4 * 6 + 4  # the cells and a no-needle control per length


def _lceval_run(env: dict[str, str], out: Path, run_id: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lceval", "run", *DEMO, "--backend", "hf", "--batch-size", "1", "--out",
               str(out), "--run-id", run_id, *KILL_GRID]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _samples(run: Path) -> list[dict]:
    path = run / "samples.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]  # whole lines only


def _kill_when(proc: subprocess.Popen, ready, extra_delay: float) -> bool:
    """SIGKILL the run (its whole process group) once `ready()` holds, after `extra_delay` seconds; False if it
    finished first."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    time.sleep(extra_delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return True


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, cli_env):
    """`lceval run` killed with SIGKILL at seeded random moments, then resumed: every sample once, and the same
    outputs, scores and results as an uninterrupted run.

    Each trial kills three sessions of one run: after a random number of samples (plus a random fraction of a
    sample's time, so some kills land inside a write), after a later random number, and at a random moment of the
    whole session (startup, model loading and the pictures at the end included); then a last session finishes it.
    """
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    reference = _lceval_run(env, tmp_path, "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-2000:]
    duration = time.monotonic() - started
    expected = {(r["task"], r["id"]): (r["output"], r["scores"]) for r in _samples(tmp_path / "reference")}
    assert len(expected) == KILL_SAMPLES
    reference_results = json.loads((tmp_path / "reference" / "results.json").read_text())
    rng = random.Random(13)
    kills, mid_run = 0, 0
    for trial in range(3):
        run = tmp_path / f"killed-{trial}"
        first = rng.randint(1, KILL_SAMPLES // 2)
        second = rng.randint(first + 1, KILL_SAMPLES - 2)
        for count in (first, second):
            ready = lambda n=count, folder=run: len(_samples(folder)) >= n  # noqa: E731
            if _kill_when(_lceval_run(env, tmp_path, run.name), ready, rng.uniform(0.0, 0.05)):
                kills += 1
                mid_run += 0 < len(_samples(run)) < KILL_SAMPLES
        at = time.monotonic() + rng.uniform(0.1, 1.0) * duration
        kills += _kill_when(_lceval_run(env, tmp_path, run.name), lambda at=at: time.monotonic() >= at, 0.0)
        final = _lceval_run(env, tmp_path, run.name)
        assert final.wait(timeout=600) == 0, final.stderr.read().decode()[-2000:]
        records = _samples(run)
        keys = [(r["task"], r["id"]) for r in records]
        assert len(keys) == len(set(keys)), f"trial {trial}: a sample was written twice"
        assert {k: (r["output"], r["scores"]) for k, r in zip(keys, records, strict=True)} == expected
        assert json.loads((run / "results.json").read_text())["tasks"] == reference_results["tasks"]
        assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    print(f"kill -9 trials: {kills} kills, {mid_run} of them between samples")
    assert mid_run >= 3, f"{kills} kills, {mid_run} between samples: the kills missed the runs"
