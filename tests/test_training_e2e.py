"""The tiny recipe end to end through the CLI: train (4-bit QLoRA on the CPU) -> run -> export -> run -> heatmap,
resume after SIGKILL, vLLM on the merged model, and data synthesis against a real vLLM server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny-qlora-cpu.yaml"
GRID = ["--tasks", "needle", "-o", "needle.lengths=[256,512,960]", "-o", "needle.num_depths=3"]


def _run(cmd, env, timeout=900, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def _losses(out: Path) -> list[float]:
    lines = (out / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


def _answers(run_dir: Path) -> dict[str, str]:
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return {r["id"]: json.dumps(r.get("output", r.get("response", r.get("generation")))) for r in records}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lceval_cmd, cli_env) -> Path:
    """The tiny recipe as CI trains it, with a held-out loss every 10 steps (evaluation during QLoRA training)."""
    out = tmp_path_factory.mktemp("tiny") / "adapter"
    _run([*lceval_cmd, "train", "--recipe", str(TINY), "--output-dir", str(out),
          "training.eval_samples=4", "training.eval_steps=10"], cli_env)
    return out


def test_tiny_qlora_trains_and_records_its_rope(trained):
    losses = _losses(trained)
    assert len(losses) >= 25
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, losses  # the loss keeps falling after the evaluations (the bnb guard holds)
    log = (trained / "train_log.jsonl").read_text()
    assert '"eval_loss"' in log and '"checkpoint": true' in log
    record = json.loads((trained / "lceval_training.json").read_text())
    assert record["rope"] == {"method": "theta", "rope_parameters": {"rope_type": "default", "rope_theta": 160000.0},
                              "max_position_embeddings": 1024}
    adapter = json.loads((trained / "adapter_config.json").read_text())
    assert adapter["r"] == 32 and adapter["lora_alpha"] == 16 and adapter["modules_to_save"] == ["embed_tokens"]
    assert (trained / "tokenizer.json").exists() and (trained / "recipe.yaml").exists()


def test_adapter_and_merged_model_run_on_hf_and_draw_a_heatmap(trained, tmp_path, lceval_cmd, cli_env):
    base = json.loads((trained / "lceval_training.json").read_text())["base_model"]
    runs = tmp_path / "runs"
    # no --rope-theta or --max-length: the adapter's training record brings its RoPE and window
    _run([*lceval_cmd, "run", "--model", base, "--adapter", str(trained), "--backend", "hf", *GRID,
          "--out", str(runs), "--run-id", "adapter"], cli_env)
    manifest = json.loads((runs / "adapter" / "manifest.json").read_text())
    assert manifest["rope_parameters"] == {"rope_type": "default", "rope_theta": 160000.0}
    assert manifest["max_length"] == 1024
    merged = tmp_path / "merged"
    _run([*lceval_cmd, "export", str(trained), "--merge", "--output-dir", str(merged)], cli_env)
    config = json.loads((merged / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 160000.0 and config["rope_theta"] == 160000.0
    assert config["max_position_embeddings"] == 1024
    _run([*lceval_cmd, "run", "--model", str(merged), "--backend", "hf", *GRID, "--out", str(runs),
          "--run-id", "merged"], cli_env)
    adapter_answers, merged_answers = _answers(runs / "adapter"), _answers(runs / "merged")
    same = sum(adapter_answers[k] == merged_answers[k] for k in adapter_answers)
    assert same >= 0.8 * len(adapter_answers)  # the merge changes nothing but rounding
    _run([*lceval_cmd, "heatmap", str(runs / "merged")], cli_env)
    assert list((runs / "merged").glob("needle_heatmap*.png"))


def test_vllm_refuses_the_adapter_with_a_trained_embedding_and_says_merge(trained, tmp_path, lceval_cmd, cli_env):
    base = json.loads((trained / "lceval_training.json").read_text())["base_model"]
    done = _run([*lceval_cmd, "run", "--model", base, "--adapter", str(trained), "--rope-theta", "160000",
                 "--max-length", "1024", "--backend", "vllm", *GRID, "--out", str(tmp_path)], cli_env, check=False)
    assert done.returncode == 2
    assert "embed_tokens" in done.stderr and "lceval export --merge" in done.stderr


@pytest.mark.slow
def test_vllm_serves_the_merged_model_with_the_same_positions_as_hf(trained, tmp_path, lceval_cmd, cli_env):
    merged = tmp_path / "merged"
    _run([*lceval_cmd, "export", str(trained), "--merge", "--output-dir", str(merged)], cli_env)
    runs = tmp_path / "runs"
    for backend in ("hf", "vllm"):
        _run([*lceval_cmd, "run", "--model", str(merged), "--backend", backend, *GRID, "--out", str(runs),
              "--run-id", backend], cli_env)
    hf, vllm = _answers(runs / "hf"), _answers(runs / "vllm")
    same = sum(hf[k] == vllm[k] for k in hf)
    assert same >= 0.8 * len(hf), (hf, vllm)
    manifest = json.loads((runs / "vllm" / "manifest.json").read_text())
    assert manifest["backend"]["engine_args"]["max_model_len"] == 1024


@pytest.mark.slow
def test_training_resumes_after_a_kill_and_ends_where_an_unkilled_run_ends(tmp_path, lceval_cmd, cli_env):
    from safetensors.torch import load_file

    overrides = ["training.max_steps=8", "training.save_steps=2", "training.save_total_limit=null"]
    clean = tmp_path / "clean"
    _run([*lceval_cmd, "train", "--recipe", str(TINY), "--output-dir", str(clean), *overrides], cli_env)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*lceval_cmd, "train", "--recipe", str(TINY), "--output-dir", str(killed), *overrides],
                               env=cli_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (killed / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert not (killed / "lceval_training.json").exists()
    done = _run([*lceval_cmd, "train", "--recipe", str(TINY), "--output-dir", str(killed), *overrides], cli_env)
    assert "resuming from" in done.stderr
    record = json.loads((killed / "lceval_training.json").read_text())
    assert record["steps"] == 8 and record["resumed_from"].rsplit("-", 1)[1] in ("4", "6")
    a, b = load_file(clean / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-4, key
    assert _losses(clean)[-1] == pytest.approx(_losses(killed)[-1], rel=1e-3)
    # a different recipe into the same folder is refused
    again = _run([*lceval_cmd, "train", "--recipe", str(TINY), "--output-dir", str(killed), *overrides], cli_env,
                 check=False)
    assert again.returncode == 2 and "finished training run" in again.stderr


@pytest.mark.slow
def test_data_synth_against_a_real_server_is_bounded_parsed_and_resumable(demo_model, tmp_path, lceval_cmd, cli_env):
    from openai_server import VLLMServer

    from lceval.tasks.haystack import generated_text

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(2):
        (docs / f"book{i}.txt").write_text(generated_text(1500, seed=i))
    prompts = tmp_path / "prompts.yaml"
    spec = (ROOT / "training" / "data" / "synth.yaml").read_text().replace("chunk_chars: 16000", "chunk_chars: 600")
    prompts.write_text(spec.replace("max_tokens: 4096", "max_tokens: 48"))
    server = VLLMServer(demo_model, tmp_path / "server.log")
    try:
        url = server.ready()
        out = tmp_path / "synth"
        cmd = [*lceval_cmd, "data", "synth", str(docs), "--output-dir", str(out), "--base-url", url,
               "--prompts", str(prompts), "--concurrency", "2"]
        _run([*cmd, "--limit", "3"], cli_env)
        first = (out / "requests.jsonl").read_text().splitlines()
        assert len(first) == 3
        _run(cmd, cli_env)
    finally:
        server.stop()
    entries = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    ids = [e["id"] for e in entries]
    chunks = sum(1 for e in entries if e["task"] == "single_detail")
    assert chunks >= 4 and {e["task"] for e in entries} == {"single_detail", "multi_detail", "bio"}
    # the rerun sent only what had not parsed before, so no parsed request appears twice
    parsed = [e["id"] for e in entries if e["items"]]
    assert len(parsed) == len(set(parsed)) and len(set(ids)) == len(set(ids) | set(parsed))
    summary = json.loads((out / "synth_summary.json").read_text())
    assert summary["model"]
    for task_file in out.glob("*_detail.jsonl"):
        for line in task_file.read_text().splitlines():
            turns = json.loads(line)["conversations"]
            assert [t["role"] for t in turns[:2]] == ["user", "assistant"]
