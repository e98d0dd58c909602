"""lceval-mini's two recipes, shortened to CI time: the base is trained from scratch (its own tokenizer, every
weight) and the extended stage is 4-bit QLoRA with a 16x RoPE base at ten times the window; both losses fall, the
export merges, and `lceval run` loads what each stage wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_training_e2e import _losses, _run

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "recipes" / "mini"


def _short_mix(source: Path, out: Path, samples: int, first_only: bool = False) -> Path:
    """The recipe's own data mix with fewer samples (same generator, settings and seed); `first_only`: its first
    source alone."""
    mix = yaml.safe_load(source.read_text())
    mix["sources"] = [{**entry, "samples": samples} for entry in mix["sources"][: 1 if first_only else None]]
    out.write_text(yaml.safe_dump(mix))
    return out


@pytest.fixture(scope="module")
def stages(tmp_path_factory, lceval_cmd, cli_env) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mini")
    base, adapter, merged = root / "mini-base", root / "mini-extended-adapter", root / "mini-extended"
    base_mix = _short_mix(MINI / "data" / "base-mix.yaml", root / "base-mix.yaml", 800)
    _run([*lceval_cmd, "train", "--recipe", str(MINI / "base.yaml"), "--output-dir", str(base),
          f"data.mix={base_mix}", "training.max_steps=40", "training.warmup_steps=5", "training.logging_steps=1"],
         cli_env)
    # 8 samples of every length seen six times over: on a base of 40 steps, the loss of a shortened run falls only
    # where the same samples come back (fresh samples of random words are as new at step 8 as at step 1). The first
    # source only: with the long-only second one in so few samples, the loss of 12 steps did not fall (two batches,
    # ~3,000 and ~1,000 tokens, 6.09/4.00 at the first epoch and 6.35/4.62 at the sixth).
    long_mix = _short_mix(MINI / "data" / "extended-mix.yaml", root / "extended-mix.yaml", 8, first_only=True)
    _run([*lceval_cmd, "train", "--recipe", str(MINI / "extended.yaml"), "--output-dir", str(adapter),
          f"model.base={base}", f"data.mix={long_mix}", "training.max_steps=12", "training.warmup_steps=1",
          "training.logging_steps=1"], cli_env)
    _run([*lceval_cmd, "export", str(adapter), "--merge", "--output-dir", str(merged)], cli_env)
    return {"base": base, "adapter": adapter, "merged": merged}


@pytest.mark.slow
def test_the_base_is_a_whole_model_trained_from_scratch_with_its_own_tokenizer(stages):
    base = stages["base"]
    losses = _losses(base)
    # from chance (ln 1,024 = 6.9) on the curriculum's copy runs, then the mix: measured 6.85 -> 5.45 (5 steps' means)
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5, losses
    record = json.loads((base / "lceval_training.json").read_text())
    assert record["method"] == "full" and record["lora"] is None and record["base_model_spec"] == "builtin:tiny-llama"
    config = json.loads((base / "config.json").read_text())
    assert config["max_position_embeddings"] == 384 and config["num_hidden_layers"] == 3
    assert (base / "model.safetensors").exists() and not (base / "adapter_config.json").exists()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    assert len(tokenizer) == 1024
    assert tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]  # one token per digit
    assert tokenizer.tokenize(" topic") == ["Ġtopic"]  # a word every topic sample holds is one token


@pytest.mark.slow
def test_the_extended_stage_is_qlora_with_the_paper_s_rope_change(stages):
    adapter = stages["adapter"]
    losses = _losses(adapter)
    assert len(losses) == 12 and sum(losses[-2:]) < sum(losses[:2]), losses
    record = json.loads((adapter / "lceval_training.json").read_text())
    assert record["quantization"] == "4bit-nf4" and record["lora"]["modules_to_save"] == ["embed_tokens", "norm"]
    assert record["rope"]["rope_parameters"]["rope_theta"] == 160000.0
    assert record["rope"]["max_position_embeddings"] == 3840
    config = json.loads((stages["merged"] / "config.json").read_text())
    assert config["rope_theta"] == 160000.0 and config["max_position_embeddings"] == 3840


@pytest.mark.slow
def test_lceval_run_loads_what_each_stage_wrote(stages, tmp_path, lceval_cmd, cli_env):
    runs = tmp_path / "runs"
    grid = ["--tasks", "passkey", "-o", "passkey.lengths=[200,2400]", "-o", "passkey.depths=[50]"]
    _run([*lceval_cmd, "run", "--model", str(stages["merged"]), "--backend", "hf", *grid, "--out", str(runs),
          "--run-id", "extended"], cli_env)
    _run([*lceval_cmd, "run", "--model", str(stages["base"]), "--backend", "hf", "--tasks", "passkey",
          "-o", "passkey.lengths=[200]", "-o", "passkey.depths=[50]", "--out", str(runs), "--run-id", "base"], cli_env)
    extended = json.loads((runs / "extended" / "results.json").read_text())
    manifest = json.loads((runs / "extended" / "manifest.json").read_text())
    assert manifest["max_length"] == 3840
    passkey = extended["tasks"]["passkey"]
    assert passkey["n_samples"] == 4 and passkey["control"]["n"] == 2  # two cells and each length's control
    assert (runs / "base" / "results.json").exists()
