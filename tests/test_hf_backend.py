"""The transformers backend: batched greedy generation that does not depend on padding, stops, RoPE override."""

from __future__ import annotations

import pytest

from lceval.api.backend import BackendSettings, GenerationRequest
from lceval.backends.hf import HFBackend

PROMPTS = [[0, *range(10, 10 + n)] for n in (20, 57, 130, 131)]


def run_all(backend, requests):
    results = dict(backend.generate(requests))
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def hf(demo_model):
    return HFBackend(BackendSettings(model_path=demo_model, max_length=2048, batch_size=4))


def test_batched_left_padded_generation_matches_one_at_a_time(hf, demo_model):
    single = HFBackend(BackendSettings(model_path=demo_model, max_length=2048, batch_size=1))
    requests = [GenerationRequest(p, 10) for p in PROMPTS]
    batched, alone = run_all(hf, requests), run_all(single, requests)
    assert [g.token_ids[:3] for g in batched] == [g.token_ids[:3] for g in alone]
    assert all(len(g.token_ids) == 10 and g.finish_reason == "length" for g in batched)


def test_each_request_stops_at_its_own_stop_ids(hf):
    free = run_all(hf, [GenerationRequest(PROMPTS[2], 12)])[0].token_ids
    stop = free[2]
    requests = [GenerationRequest(PROMPTS[2], 12, (stop,)), GenerationRequest(PROMPTS[2], 12)]
    stopped, unstopped = run_all(hf, requests)
    assert stopped.finish_reason == "stop" and stopped.token_ids == free[: free.index(stop)]
    assert unstopped.token_ids == free


def test_rope_theta_override_changes_the_model(demo_model, hf):
    rope = HFBackend(BackendSettings(model_path=demo_model, max_length=4096, rope_theta=1e6))
    assert rope.model.config.rope_parameters["rope_theta"] == 1e6
    assert rope.model.config.max_position_embeddings == 4096
    head_dim = rope.model.config.head_dim
    assert rope.model.model.rotary_emb.inv_freq[1].item() == pytest.approx(1e6 ** (-2 / head_dim))
    assert hf.model.model.rotary_emb.inv_freq[1].item() == pytest.approx(1e4 ** (-2 / head_dim))
    assert len(run_all(rope, [GenerationRequest([0, *range(10, 1000)] * 3, 4)])[0].token_ids) == 4


def test_identity_records_what_changes_outputs(hf):
    identity = hf.identity()
    assert identity["name"] == "hf" and identity["dtype"] == "float32" and identity["attention"] == "sdpa"
    assert "transformers" in identity["versions"] and "torch" in identity["versions"]


def test_auto_runs_an_adapter_with_a_trained_embedding_on_hf(tmp_path, demo_model):
    """vLLM's LoRA cannot load modules_to_save; auto says so and serves the adapter with transformers + PEFT."""
    import io
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from lceval.running.config import RunConfig
    from lceval.running.runner import execute

    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.float32)
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"])
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    cfg = RunConfig(model="lceval-demo", adapter=str(tmp_path / "adapter"), tasks=["needle"],
                    out=str(tmp_path / "runs"), run_id="a", task_options={"needle": {"lengths": [256], "depths": [0]}})
    log = io.StringIO()
    run_dir = execute(cfg, Console(file=log, width=300))
    assert "vLLM's LoRA cannot load" in log.getvalue() and "using hf" in log.getvalue()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "hf" and manifest["backend"]["versions"]["peft"]
    assert manifest["adapter"]["rank"] == 8 and len(manifest["adapter"]["sha256"]) == 64
    assert manifest["adapter"]["modules_to_save"] == ["embed_tokens"]
    assert manifest["adapter"]["base_model"] == str(demo_model)


def test_loglikelihood_is_the_sum_of_the_continuation_token_logprobs(hf):
    import torch

    from lceval.api.backend import LoglikelihoodRequest

    context, continuation = PROMPTS[0], [40, 41, 42]
    (result,) = hf.loglikelihood([LoglikelihoodRequest(context, continuation)])
    ids = torch.tensor([[*context, *continuation]])
    with torch.inference_mode():
        logprobs = torch.log_softmax(hf.model(input_ids=ids).logits[0].float(), dim=-1)
    expected = sum(logprobs[len(context) - 1 + i, token].item() for i, token in enumerate(continuation))
    assert result.logprob == pytest.approx(expected, abs=1e-5)
    greedy = run_all(hf, [GenerationRequest(context, 2)])[0].token_ids
    assert hf.loglikelihood([LoglikelihoodRequest(context, greedy)])[0].is_greedy
