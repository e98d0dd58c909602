"""The in-process vLLM backend on the real CPU engine: greedy, stop ids, LoRA, RoPE overrides, the runner."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lceval.api.backend import BackendSettings, GenerationRequest, LoglikelihoodRequest
from lceval.running.config import RunConfig
from lceval.running.runner import execute

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
PROMPTS = [[0, *range(10, 10 + n)] for n in (30, 75, 140)]


def run_all(backend, requests):
    results = dict(backend.generate(requests))
    return [results[i] for i in range(len(requests))]


def test_greedy_generation_is_repeatable_and_uses_the_whole_budget(vllm_backend):
    requests = [GenerationRequest(p, 12) for p in PROMPTS]
    first, second = run_all(vllm_backend, requests), run_all(vllm_backend, requests)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert all(len(g.token_ids) == 12 and g.finish_reason == "length" for g in first)
    assert first[0].text == vllm_backend.tokenizer.decode(first[0].token_ids, skip_special_tokens=True)


def test_generation_ends_at_a_stop_id(vllm_backend):
    free = run_all(vllm_backend, [GenerationRequest(PROMPTS[1], 12)])[0].token_ids
    stop = free[3]
    cut = free.index(stop)
    stopped = run_all(vllm_backend, [GenerationRequest(PROMPTS[1], 12, (free[-1], stop))])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free[: min(cut, free.index(free[-1]))]


def test_runner_on_a_lent_engine_writes_a_complete_run(vllm_backend, tmp_path, lceval_cache):
    cfg = RunConfig(model="lceval-demo", tasks=["needle"], out=str(tmp_path), run_id="v", backend="vllm",
                    task_options={"needle": {"lengths": [256, 1024], "depths": [0, 50, 100]}})
    from rich.console import Console

    run_dir = execute(cfg, Console(stderr=True), backend=vllm_backend)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted([f"L{n}-D{d}" for n in (256, 1024) for d in (0, 50, 100)]
                                                      + ["control-256", "control-1024"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "vllm"
    assert manifest["backend"]["engine_args"]["max_model_len"] == 2048
    assert manifest["backend"]["engine_args"]["enable_prefix_caching"] is True
    assert manifest["backend"]["engine_args"]["dtype"] == "float32"  # the checkpoint's dtype, as on hf
    assert manifest["backend"]["engine_args"]["tensor_parallel_size"] == 1
    assert (run_dir / "needle_heatmap_exact_phrase.png").exists()


@pytest.fixture(scope="module")
def lora_adapter(demo_model, tmp_path_factory):
    """A real PEFT LoRA adapter on the demo model with non-zero weights, so that it changes outputs."""
    from openai_server import make_lora_adapter

    return make_lora_adapter(demo_model, tmp_path_factory.mktemp("adapter"))


def test_lora_adapter_and_rope_override_reach_the_engine(demo_model, lora_adapter, vllm_backend):
    """One extra engine: adapter (rank 16 > vLLM's default 8 read from adapter_config) and a window extension."""
    from lceval.backends.hf import HFBackend
    from lceval.backends.vllm import VLLMBackend

    settings = BackendSettings(model_path=demo_model, max_length=4096, adapter_path=lora_adapter, adapter_rank=16,
                               rope_theta=40000.0)
    backend = VLLMBackend(settings)
    try:
        config = backend.llm.llm_engine.model_config
        assert config.max_model_len == 4096
        assert config.hf_config.rope_parameters["rope_theta"] == 40000.0
        assert backend.identity()["engine_args"]["max_lora_rank"] == 16
        requests = [GenerationRequest(p, 8) for p in PROMPTS]
        adapted = run_all(backend, requests)
        long_prompt = [GenerationRequest([0, *range(10, 1000)] * 3, 4)]  # 2973 tokens: past the declared 2048
        assert len(run_all(backend, long_prompt)[0].token_ids) == 4
        # several scoring requests at once through the adapter (vLLM's CPU LoRA layer fails on a batch of them)
        pairs = [LoglikelihoodRequest(p[:-3], p[-3:]) for p in PROMPTS]
        adapted_ll = backend.loglikelihood(pairs)
    finally:
        backend.close()
    base = run_all(vllm_backend, requests)
    assert [g.token_ids for g in adapted] != [g.token_ids for g in base]
    # transformers + PEFT with the same adapter and RoPE base agrees on the first greedy token of every prompt.
    hf = HFBackend(settings)
    assert [g.token_ids[0] for g in run_all(hf, requests)] == [g.token_ids[0] for g in adapted]
    for ours, theirs in zip(adapted_ll, hf.loglikelihood(pairs), strict=True):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-3)


def test_adapter_with_a_trained_embedding_is_refused_on_vllm(demo_model, tmp_path):
    from lceval.api.errors import UserError
    from lceval.backends.vllm import VLLMBackend

    settings = BackendSettings(model_path=demo_model, max_length=2048, adapter_path=tmp_path,
                               extra={"adapter_modules_to_save": ["embed_tokens"]})
    with pytest.raises(UserError, match="merge"):
        VLLMBackend(settings)


def test_quickstart_command_picks_vllm_and_writes_the_heatmap(tmp_path, cli_env, lceval_cmd):
    """`lceval run --tasks needle,longbench`, exactly as the README's quickstart runs it: the default model
    (lceval-mini's extended checkpoint) on vLLM, which finds the needle where its committed baseline did on hf."""
    proc = subprocess.run([*lceval_cmd, "run", "--tasks", "needle,longbench", "--out", str(tmp_path), "--run-id", "q"],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend auto: using vllm." in proc.stderr
    run_dir = tmp_path / "q"
    assert json.loads((run_dir / "manifest.json").read_text())["model"]["spec"] == "mini-extended"
    results = json.loads((run_dir / "results.json").read_text())
    needle = results["tasks"]["needle"]
    assert needle["n_samples"] == 35 + 7  # 7 lengths x 5 depths, a no-needle control per length
    assert needle["by_length"]["192"]["key_facts"] == needle["by_length"]["320"]["key_facts"] == 1.0
    baseline = json.loads((REPO / "results" / "baselines" / "mini" / "extended" / "results.json").read_text())
    assert abs(needle["metrics"]["key_facts"] - baseline["tasks"]["needle"]["metrics"]["key_facts"]) <= 0.1
    assert results["tasks"]["longbench"]["n_samples"] == results["tasks"]["longbench"]["n_expected"] == 63
    assert (run_dir / "needle_heatmap_key_facts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "needle_heatmap_key_facts.csv").read_text().startswith("depth_percent,192,320,768")


def test_auto_falls_back_to_hf_when_the_engine_cannot_start(tmp_path, cli_env, lceval_cmd):
    """A memory share too small for the KV cache makes the real engine fail at start; auto says so and uses hf."""
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--gpu-memory-utilization", "0.001",
                           "-o", "needle.lengths=[256]", "-o", "needle.depths=[0]", "--out", str(tmp_path),
                           "--run-id", "fb"],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the vLLM engine could not start" in proc.stderr and "using hf" in proc.stderr
    manifest = json.loads((tmp_path / "fb" / "manifest.json").read_text())
    assert manifest["backend"]["requested"] == "auto" and manifest["backend"]["name"] == "hf"


def test_loglikelihood_agrees_between_vllm_and_hf(vllm_backend, demo_model):
    """Prompt logprobs from the vLLM engine and one transformers forward pass give the same numbers."""
    from lceval.backends.hf import HFBackend

    hf = HFBackend(BackendSettings(model_path=demo_model, max_length=2048))
    greedy = run_all(hf, [GenerationRequest(PROMPTS[0], 3)])[0].token_ids
    requests = [LoglikelihoodRequest(PROMPTS[0], greedy),  # the model's own greedy answer
                LoglikelihoodRequest(PROMPTS[1], [17, 250, 3]),
                LoglikelihoodRequest(PROMPTS[2][:500], [900])]
    from_vllm, from_hf = vllm_backend.loglikelihood(requests), hf.loglikelihood(requests)
    for a, b in zip(from_vllm, from_hf, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3) and a.logprob < 0
        assert a.is_greedy == b.is_greedy
    assert from_hf[0].is_greedy and not from_hf[1].is_greedy
