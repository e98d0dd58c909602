"""The training module, piece by piece: recipes, RoPE round trips, label masking, S2-Attn, the bitsandbytes guard."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lceval.api.errors import UserError
from lceval.training import data as tdata
from lceval.training.recipe import gradient_accumulation, load_recipe
from lceval.training.rope import apply_rope, read_legacy_rope, read_rope, target_rope, write_both_forms

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


# -- recipes ------------------------------------------------------------------------------------------------------


def test_paper_recipe_holds_the_papers_settings():
    r = load_recipe(RECIPES / "llama3-8b-instruct-80k-qlora.yaml")
    assert r.model.base == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (r.rope.method, r.rope.theta) == ("theta", 200e6)
    q = r.quantization
    assert (q.load_in_4bit, q.quant_type, q.double_quant, q.compute_dtype) == (True, "nf4", True, "bfloat16")
    lo = r.lora
    assert (lo.rank, lo.alpha, lo.dropout) == (32, 16, 0.0)
    assert lo.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"] and lo.modules_to_save == ["embed_tokens"]
    t = r.training
    assert (t.learning_rate, t.lr_scheduler, t.warmup_steps, t.num_epochs) == (5e-5, "linear", 0, 1.0)
    assert (t.global_batch_size, t.per_device_batch_size, t.gradient_checkpointing, t.group_by_length) == (8, 1, True,
                                                                                                          True)
    assert r.data.max_length == 81920 and r.data.overlong == "drop" and not r.attention.s2attn
    assert gradient_accumulation(r, 8) == 1 and gradient_accumulation(r, 1) == 8


def test_longlora_recipe_is_position_interpolation_with_lora_plus_and_s2attn():
    r = load_recipe(RECIPES / "llama2-7b-longlora-pi.yaml")
    assert (r.rope.method, r.rope.factor) == ("linear", 8.0)
    assert r.attention.s2attn and r.attention.group_size_ratio == 0.25
    assert r.lora.modules_to_save == ["embed_tokens", "norm"] and r.lora.rank == 8


def test_overrides_and_mistakes_are_one_sentence_errors(tmp_path):
    r = load_recipe(RECIPES / "tiny-qlora-cpu.yaml", ["training.learning_rate=1e-4", "lora.rank=4"])
    assert r.training.learning_rate == 1e-4 and r.lora.rank == 4
    for bad, words in [("training.learnig_rate=1", "unknown setting training.learnig_rate"),
                       ("nonsense=1", "SECTION.KEY=VALUE"), ("rope.method=dynamic", "rope.method 'dynamic'"),
                       ("lora.rank=two", "whole number"), ("attention.s2attn=true", None)]:
        if words is None:
            load_recipe(RECIPES / "tiny-qlora-cpu.yaml", [bad])
            continue
        with pytest.raises(UserError, match=words):
            load_recipe(RECIPES / "tiny-qlora-cpu.yaml", [bad])
    with pytest.raises(UserError, match="cannot be combined with data.packing"):
        load_recipe(RECIPES / "tiny-qlora-cpu.yaml", ["attention.s2attn=true", "data.packing=true"])
    r = load_recipe(RECIPES / "tiny-qlora-cpu.yaml",
                    ["training.global_batch_size=6", "training.per_device_batch_size=3"])
    with pytest.raises(UserError, match="not a multiple"):
        gradient_accumulation(r, 4)


# -- RoPE ---------------------------------------------------------------------------------------------------------


def _tiny_config(theta: float = 10000.0, window: int = 256):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, head_dim=32, max_position_embeddings=window, rope_theta=theta)


CHOICES = [
    ("theta", {"theta": 160000.0}, {"rope_type": "default", "rope_theta": 160000.0}),
    ("linear", {"factor": 4.0}, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
    ("ntk", {"factor": 4.0}, {"rope_type": "default", "rope_theta": 10000.0 * 4.0 ** (32 / 30)}),
    ("yarn", {"factor": 4.0}, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                               "original_max_position_embeddings": 256}),
]


def _expected_inv_freq(params: dict, dim: int = 32) -> torch.Tensor:
    inv = 1.0 / params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return inv / params["factor"] if params["rope_type"] == "linear" else inv


@pytest.mark.parametrize(("method", "args", "wanted"), CHOICES, ids=[c[0] for c in CHOICES])
def test_rope_choice_round_trips_through_a_saved_config(tmp_path, method, args, wanted):
    """Saved in both forms, read back by transformers v5 (and as v4 reads it) with the intended frequencies."""
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = _tiny_config()
    params = target_rope(config, method, **args)
    assert params == pytest.approx(wanted)
    apply_rope(config, params, 1024)
    config.save_pretrained(tmp_path)
    write_both_forms(tmp_path)
    loaded = read_rope(tmp_path)
    assert loaded["max_position_embeddings"] == 1024
    assert {k: loaded["rope_parameters"][k] for k in wanted} == pytest.approx(wanted)
    legacy = read_legacy_rope(tmp_path)  # transformers 4.x reads only these keys
    assert legacy["rope_theta"] == pytest.approx(wanted["rope_theta"])
    if wanted["rope_type"] == "default":
        assert legacy["rope_scaling"] is None
    else:
        assert legacy["rope_scaling"]["type"] == wanted["rope_type"]
        assert legacy["rope_scaling"]["factor"] == wanted["factor"]
    rotary = LlamaRotaryEmbedding(AutoConfig.from_pretrained(tmp_path))
    if method != "yarn":  # yarn's per-band blend is checked against vLLM below
        assert torch.allclose(rotary.inv_freq.double(), _expected_inv_freq(wanted), rtol=1e-5)


@pytest.mark.parametrize(("method", "args", "wanted"), CHOICES, ids=[c[0] for c in CHOICES])
def test_vllm_reads_the_same_positions_as_transformers(tmp_path, method, args, wanted):
    """vLLM's config loader and rotary embedding give the cos/sin transformers gives, at every position."""
    pytest.importorskip("vllm")
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope
    from vllm.transformers_utils.config import get_config

    config = _tiny_config()
    apply_rope(config, target_rope(config, method, **args), 1024)
    config.save_pretrained(tmp_path)
    write_both_forms(tmp_path)
    vllm_config = get_config(str(tmp_path), trust_remote_code=False)
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(32, vllm_config.max_position_embeddings, True, dict(vllm_config.rope_parameters),
                        torch.float32)
    positions = torch.tensor([[0, 1, 255, 256, 700, 1023]])
    cos, sin = LlamaRotaryEmbedding(AutoConfig.from_pretrained(tmp_path))(torch.zeros(1, 6, 32), positions)
    cache = rope.cos_sin_cache[positions[0]]
    assert torch.allclose(cache[:, :16], cos[0, :, :16], atol=1e-5)
    assert torch.allclose(cache[:, 16:], sin[0, :, :16], atol=1e-5)


def test_stacking_on_an_already_scaled_rope_is_refused():
    config = _tiny_config()
    apply_rope(config, {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}, None)
    with pytest.raises(UserError, match="already scales RoPE"):
        target_rope(config, "linear", factor=4.0)


# -- data ---------------------------------------------------------------------------------------------------------


def _learned(tokenizer, ids, labels) -> list[str]:
    """The learned spans, decoded, one string per run of consecutive labelled tokens."""
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == tdata.IGNORE:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_conversation_labels_cover_assistant_turns_token_by_token(demo_tokenizer):
    messages = [{"role": "user", "content": "A long document.\n\nWhat is the secret color?"},
                {"role": "assistant", "content": "The secret color is red."},
                {"role": "user", "content": "And the city?"},
                {"role": "assistant", "content": "Lima."}]
    ids, labels = tdata.encode_chat(demo_tokenizer, messages)
    assert ids == demo_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False) or \
        demo_tokenizer.decode(ids) == demo_tokenizer.apply_chat_template(messages, tokenize=False)
    assert _learned(demo_tokenizer, ids, labels) == ["The secret color is red.<|eot_id|>", "Lima.<|eot_id|>"]
    # every masked token is outside the assistant answers: the user turns and the headers
    masked = demo_tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == tdata.IGNORE])
    assert "What is the secret color?" in masked and "And the city?" in masked and "Lima" not in masked


def test_an_answer_is_learned_after_the_prompt_tokens_a_model_is_given():
    """The prompt up to an answer is tokenised as at inference (the generation prompt's blank line is one token of
    this byte-level BPE; tokenised together with the answer it became two newline tokens, so a model trained that
    way met a prompt at inference that it had never seen before an answer)."""
    from lceval.running.demo import build_tokenizer

    # a corpus full of blank lines, as lceval-mini's is: its BPE learns the blank line as one token
    tokenizer = build_tokenizer(400, corpus=["The key is here.\n\n\nWhere is the key?\n\n", "It is gone.\n\n"] * 50)
    messages = [{"role": "user", "content": "Where is the key?"}, {"role": "assistant", "content": "The key is here."}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(prompt_ids[-1]) == "ĊĊ"  # the case that matters
    ids, labels = tdata.encode_chat(tokenizer, messages)
    assert ids[:len(prompt_ids)] == prompt_ids
    assert set(labels[:len(prompt_ids)]) == {tdata.IGNORE} and tdata.IGNORE not in labels[len(prompt_ids):]


def test_instruction_text_and_subsets(demo_tokenizer, tmp_path):
    ids, labels = tdata.encode_chat(demo_tokenizer, tdata.to_messages(
        {"instruction": "Read this.", "input": "Passage.", "output": "Answer 42."}, "instruction", tmp_path))
    assert _learned(demo_tokenizer, ids, labels) == ["Answer 42.<|eot_id|>"]
    ids, labels = tdata.encode_text(demo_tokenizer, "plain text for language modelling", 100)
    assert labels == ids and ids[0] == demo_tokenizer.bos_token_id and ids[-1] == demo_tokenizer.eos_token_id
    ids, labels = tdata.encode_plain_instruction(demo_tokenizer, [{"role": "user", "content": "Q?"},
                                                                  {"role": "assistant", "content": "A."}])
    assert _learned(demo_tokenizer, ids, labels) == ["A.<|eot_id|>"]
    records = [{"text": str(i)} for i in range(50)]
    first = tdata.subset(records, 10, 42, Path("x.jsonl"))
    assert first == tdata.subset(records, 10, 42, Path("x.jsonl")) != tdata.subset(records, 10, 43, Path("x.jsonl"))
    assert len(first) == 10


def test_data_mix_counts_truncation_and_drop(demo_tokenizer, tmp_path):
    long_doc = "word " * 400
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i} {long_doc}"}) for i in range(20)))
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": long_doc + "?", "output": "yes"},
                                                 {"instruction": "short?", "output": "no"}]))
    (tmp_path / "mix.yaml").write_text("sources:\n  - a.jsonl[5]\n  - {path: b.json, kind: instruction}\n")
    sources = tdata.load_mix(tmp_path / "mix.yaml")
    examples, report = tdata.build_examples(demo_tokenizer, sources, max_length=64, overlong="drop",
                                            chat_template=True, seed=1)
    assert report.dropped_overlong == 1 and len(examples) == 6
    assert all(e["length"] <= 64 for e in examples)
    _, report = tdata.build_examples(demo_tokenizer, sources, max_length=64, overlong="truncate", chat_template=True,
                                     seed=1)
    # truncating the long instruction cuts its answer off: nothing left to learn, so it is dropped too
    assert report.truncated == 1 and report.dropped_no_labels == 1
    (tmp_path / "bad.yaml").write_text("sources:\n  - missing.jsonl\n")
    with pytest.raises(UserError, match="does not exist"):
        tdata.build_examples(demo_tokenizer, tdata.load_mix(tmp_path / "bad.yaml"), max_length=64,
                             overlong="drop", chat_template=True, seed=1)


def test_a_by_source_mix_is_trained_source_after_source(demo_tokenizer, tmp_path):
    """data.order by_source: a curriculum; each source shuffled on its own, the sources in the listed order, and the
    trainer's sampler sequential (the default order is one shuffle of the whole mix)."""
    from lceval.training.recipe import load_recipe
    from lceval.training.train import training_arguments

    (tmp_path / "first.jsonl").write_text("\n".join(json.dumps({"text": f"first {i}"}) for i in range(8)))
    (tmp_path / "then.jsonl").write_text("\n".join(json.dumps({"text": f"then {i}"}) for i in range(8)))
    (tmp_path / "mix.yaml").write_text("sources:\n  - first.jsonl\n  - then.jsonl\n")
    sources = tdata.load_mix(tmp_path / "mix.yaml")
    kinds = {}
    for by_source in (True, False):
        examples, _ = tdata.build_examples(demo_tokenizer, sources, max_length=16, overlong="drop",
                                           chat_template=False, seed=3, by_source=by_source)
        kinds[by_source] = [demo_tokenizer.decode(e["input_ids"], skip_special_tokens=True).split()[0]
                            for e in examples]
    assert kinds[True] == ["first"] * 8 + ["then"] * 8 and kinds[False] != kinds[True]
    for grouped in ("true", "false"):  # grouping by length is done on the examples (group_in_order), not the sampler
        recipe = load_recipe(ROOT / "recipes" / "tiny-qlora-cpu.yaml", ["data.order=by_source",
                                                                        f"training.group_by_length={grouped}"])
        assert training_arguments(recipe, tmp_path, 1, False).train_sampling_strategy == "sequential"


def test_grouping_by_length_keeps_a_curriculum_in_order():
    """data.order by_source with training.group_by_length: batches of like length (less padding), made within runs
    of consecutive batches, so that every example stays in its run and the sources' order holds; seeded."""
    lengths = random.Random(0).choices(range(10, 400), k=1000)
    examples = [{"id": i, "source": "copy" if i < 300 else "mix", "length": n} for i, n in enumerate(lengths)]
    grouped = tdata.group_in_order(examples, batch_size=8, seed=1, group_batches=10)
    assert sorted(e["id"] for e in grouped) == list(range(1000))
    assert grouped == tdata.group_in_order(examples, batch_size=8, seed=1, group_batches=10)
    assert [e["id"] for e in grouped] != [e["id"] for e in tdata.group_in_order(examples, 8, seed=2, group_batches=10)]
    for position, example in enumerate(grouped):
        assert position // 80 == example["id"] // 80  # never leaves its run of 10 batches
    assert {e["source"] for e in grouped[:240]} == {"copy"} and {e["source"] for e in grouped[320:]} == {"mix"}

    def padded(order):  # tokens a batch of 8 computes when padded to its longest sample
        return sum(8 * max(e["length"] for e in order[i:i + 8]) for i in range(0, len(order), 8))

    assert padded(examples) > 1.7 * sum(lengths) and padded(grouped) < 1.15 * sum(lengths)


def test_train_on_input_learns_the_prompt_as_well_as_the_answer(demo_tokenizer, tmp_path):
    """data.train_on_input: every token of a sample is a label (a model trained from scratch learns to read from
    its prompts too); by default only the completion is."""
    record = {"prompt": "The code is 4417. What is the code? The code is", "completion": " 4417."}
    (tmp_path / "keys.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "mix.yaml").write_text("sources:\n  - keys.jsonl\n")
    sources = tdata.load_mix(tmp_path / "mix.yaml")
    settings = {"max_length": 64, "overlong": "drop", "chat_template": False, "seed": 0}
    (answer_only,), _ = tdata.build_examples(demo_tokenizer, sources, **settings)
    (whole,), _ = tdata.build_examples(demo_tokenizer, sources, train_on_input=True, **settings)
    assert whole["input_ids"] == answer_only["input_ids"] and whole["labels"] == whole["input_ids"]
    learned = [t for t in answer_only["labels"] if t != tdata.IGNORE]
    assert demo_tokenizer.decode(learned, skip_special_tokens=True) == " 4417."


def test_packing_restarts_positions_and_never_predicts_across_samples():
    examples = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "length": 3},
                {"input_ids": [4, 5], "labels": [-100, 5], "length": 2},
                {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9], "length": 4}]
    rows = tdata.pack(examples, 6)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert rows[0]["position_ids"] == [0, 1, 2, 0, 1] and rows[0]["labels"] == [-100, 2, 3, -100, 5]
    batch = tdata.Collator(pad_id=0)(rows)
    assert "attention_mask" not in batch and batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0]


# -- S2-Attn ------------------------------------------------------------------------------------------------------


def _mask_reference(q, k, v, size: int, shift: int):
    n = q.shape[2]
    i = torch.arange(n)
    same = (i[:, None] + shift) // size == (i[None, :] + shift) // size
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=same & (i[None, :] <= i[:, None]))


@pytest.mark.parametrize("n", [32, 30, 7])
def test_s2attn_matches_its_definition(n):
    from lceval.training.s2attn import group_size, s2_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 8) for _ in range(3))
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(s2_attention(q, k, v, 1.0), causal, atol=1e-6)  # one group = full causal attention
    size = group_size(n, 0.25)
    out = s2_attention(q, k, v, 0.25)
    if size < n:
        assert not torch.allclose(out, causal, atol=1e-3)
    assert torch.allclose(out[:, :2], _mask_reference(q, k, v, size, 0)[:, :2], atol=1e-6)
    assert torch.allclose(out[:, 2:], _mask_reference(q, k, v, size, size // 2)[:, 2:], atol=1e-6)


def test_s2attn_in_a_model_agrees_with_full_attention_for_one_group_and_passes_gradients(demo_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lceval.training import s2attn

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.randint(10, 500, (2, 64))
    full = model(input_ids=ids).logits
    s2attn.enable(model, 1.0)
    assert torch.allclose(model(input_ids=ids).logits, full, atol=1e-4)
    s2attn.enable(model, 0.25)
    sparse = model(input_ids=ids, labels=ids)
    assert not torch.allclose(sparse.logits, full, atol=1e-3)
    # the first group is identical for the plain heads only, so compare the first G/2 tokens (no shifted group yet)
    sparse.loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if "lora_A" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    s2attn.disable(model)
    assert torch.allclose(model(input_ids=ids).logits, full, atol=1e-4)


# -- the bitsandbytes CPU trap ------------------------------------------------------------------------------------


def _input_grad(layer, x) -> torch.Tensor | None:
    x = x.clone().requires_grad_(True)
    layer(x).sum().backward()
    return x.grad


def test_bnb_guard_keeps_gradients_flowing_through_4bit_layers_after_evaluation():
    """Regression test for bitsandbytes >= 0.49 on AVX512-BF16 CPUs: an eval pass repacks 4-bit weights in place
    and gradients stop; the guard restores the layout and turns the repacking off."""
    bnb = pytest.importorskip("bitsandbytes")
    from lceval.training.qlora import guard_4bit_training, is_repacked

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
    layer.weight = layer.weight._quantize("cpu") if hasattr(layer.weight, "_quantize") else layer.weight
    x = torch.randn(4, 64)
    assert _input_grad(layer, x).abs().sum() > 0
    layer.eval()
    with torch.no_grad():
        layer(x)  # an evaluation pass
    layer.train()
    if is_repacked(layer):  # the trap is present on this machine: gradients no longer flow
        grad = _input_grad(layer, x) if _requires_grad_possible(layer, x) else None
        assert grad is None or grad.abs().sum() == 0
    assert guard_4bit_training(layer) in (0, 1)
    assert not is_repacked(layer) and layer.support_avx512bf16_for_cpu is False
    assert _input_grad(layer, x).abs().sum() > 0
    layer.eval()
    with torch.no_grad():
        layer(x)  # guarded: a later evaluation no longer repacks
    layer.train()
    assert not is_repacked(layer) and _input_grad(layer, x).abs().sum() > 0


def _requires_grad_possible(layer, x) -> bool:
    try:
        x = x.clone().requires_grad_(True)
        return layer(x).requires_grad
    except RuntimeError:
        return False
