"""`lceval export --merge`: the adapter merged into its base, saved with the RoPE it was trained with.

The serving path for adapters that train the embedding matrix (vLLM's LoRA cannot load a fully trained
embedding): reload the base in full precision (not 4-bit, so the merge adds no quantisation error on top of
training's), apply the new RoPE and window to its config, apply the adapter (LoRA and fully trained modules),
merge, and save with the tokenizer. The saved config holds the RoPE both as `rope_parameters` (transformers v5)
and as top-level `rope_theta`/`rope_scaling` (transformers v4, older vLLM); it is read back and checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError

EXPORT_RECORD = "lceval_export.json"


def merge(adapter: Path, out: Path, dtype: str | None = None, base: Path | None = None) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lceval.training.recipe import DTYPES
    from lceval.training.rope import apply_rope, write_both_forms
    from lceval.training.train import read_training_record

    adapter, out = Path(adapter), Path(out)
    record = read_training_record(adapter)
    base = Path(base or record["base_model"])
    if not (base / "config.json").exists():
        raise UserError(f"base model {base} (from {adapter}) is not a checkpoint folder; pass --base with its folder.")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty; pass a new --output-dir.")
    recipe_dtype = _recipe_export_dtype(adapter)
    dtype = dtype or recipe_dtype or "bfloat16"
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} must be one of {', '.join(DTYPES)}.")
    from lceval.running.model_checks import check_weights

    check_weights(base, str(base))  # a corrupt base is named before it is loaded
    rope = record["rope"]
    config = AutoConfig.from_pretrained(base)
    apply_rope(config, rope.get("rope_parameters"), rope.get("max_position_embeddings"))
    model = AutoModelForCausalLM.from_pretrained(base, config=config, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(staging)
    params = write_both_forms(staging)
    _check(staging, rope, params)
    (staging / EXPORT_RECORD).write_text(json.dumps({"adapter": str(adapter.resolve()), "base_model": str(base),
                                                     "dtype": dtype, "rope": rope, "training": record}, indent=2)
                                         + "\n", encoding="utf-8")
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out


def _recipe_export_dtype(adapter: Path) -> str | None:
    file = adapter / "recipe.yaml"
    if not file.exists():
        return None
    from lceval.api import files

    data = files.read_yaml(file) or {}
    return ((data.get("export") or {}).get("dtype")) if isinstance(data, dict) else None


def _check(folder: Path, rope: dict[str, Any], written: dict[str, Any]) -> None:
    """The saved config reads back with the trained RoPE and window (a mismatch is a bug, not a user error)."""
    from lceval.training.rope import read_rope

    loaded = read_rope(folder)
    wanted = rope.get("rope_parameters")
    if wanted is not None:
        for key, value in wanted.items():
            if loaded["rope_parameters"].get(key) != value:
                raise RuntimeError(f"merged config reads rope {key}={loaded['rope_parameters'].get(key)!r}, "
                                   f"trained with {value!r}")
    if rope.get("max_position_embeddings") and loaded["max_position_embeddings"] != rope["max_position_embeddings"]:
        raise RuntimeError("merged config reads another max_position_embeddings than the trained window")
