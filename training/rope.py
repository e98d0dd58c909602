"""RoPE settings for a context extension, written so that every loader sees the same positions.

transformers v5 reads `rope_parameters`; transformers v4 (and tools pinned to it) read the top-level `rope_theta`
and `rope_scaling`, and silently fall back to a base of 10,000 when `rope_theta` is missing. v5 itself lets a
legacy `rope_scaling` key win over `rope_parameters` on load. So a saved config carries both forms, equal.

Methods (all fixed at save time, so training and every inference engine compute the same frequencies):
- theta: a new RoPE base (ABF; the seed paper's 500K -> 200M).
- linear: position interpolation, positions divided by `factor` (LongLoRA).
- ntk: static NTK-aware scaling, i.e. a base change theta * factor^(d/(d-2)), written as a plain base.
- yarn: NTK-by-parts interpolation with attention temperature, relative to `original_max_position_embeddings`.
Dynamic NTK is deliberately not offered: its frequencies depend on the length of each sequence at inference,
and transformers and vLLM compute it differently, so a model trained with it would not see the same positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError


def head_dim(config: Any) -> int:
    """The rotary dimension: head_dim x partial_rotary_factor."""
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    params = getattr(config, "rope_parameters", None) or {}
    return int(dim * float(params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0) or 1.0)))


def base_rope(config: Any) -> dict[str, Any]:
    """The rope settings a config has now: rope_parameters (v5) or the legacy keys."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        return dict(params)
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.get("type", "default"))
    scaling["rope_theta"] = float(getattr(config, "rope_theta", 10000.0))
    return scaling


def target_rope(config: Any, method: str, *, theta: float | None = None, factor: float | None = None,
                original_max_position_embeddings: int | None = None) -> dict[str, Any] | None:
    """The rope_parameters a method gives on top of `config` (None: leave the model's rope as it is)."""
    if method == "none":
        return None
    base = base_rope(config)
    kind = base.get("rope_type", "default")
    if kind != "default":
        raise UserError(f"the base model already scales RoPE ({kind}); stacking rope.method {method} on it is not "
                        "supported, so start from a model with plain RoPE or set rope.method none.")
    old_theta = float(base.get("rope_theta") or 10000.0)
    if method == "theta":
        return {"rope_type": "default", "rope_theta": float(theta)}
    if method == "ntk":
        dim = head_dim(config)
        return {"rope_type": "default", "rope_theta": old_theta * float(factor) ** (dim / (dim - 2))}
    if method == "linear":
        return {"rope_type": "linear", "rope_theta": old_theta, "factor": float(factor)}
    if method == "yarn":
        original = int(original_max_position_embeddings or config.max_position_embeddings)
        return {"rope_type": "yarn", "rope_theta": old_theta, "factor": float(factor),
                "original_max_position_embeddings": original}
    raise UserError(f"rope.method {method!r} is unknown; use none, theta, linear, ntk or yarn.")


def apply_rope(config: Any, params: dict[str, Any] | None, max_position_embeddings: int | None) -> None:
    """Set the rope parameters (v5 attribute) and the window on a transformers config, in place."""
    if params is not None:
        config.rope_parameters = dict(params)
        for legacy in ("rope_scaling",):  # a v4-style attribute would win over rope_parameters when saved and read
            if hasattr(config, legacy):
                try:
                    delattr(config, legacy)
                except AttributeError:
                    pass
    if max_position_embeddings:
        config.max_position_embeddings = int(max_position_embeddings)


def legacy_keys(params: dict[str, Any]) -> dict[str, Any]:
    """The same rope in transformers v4's (and older vLLM's) keys: top-level rope_theta and rope_scaling."""
    kind = params.get("rope_type", "default")
    scaling = None
    if kind != "default":
        scaling = {"type": kind, "rope_type": kind,
                   **{k: v for k, v in params.items() if k not in ("rope_type", "type", "rope_theta")}}
    return {"rope_theta": float(params.get("rope_theta", 10000.0)), "rope_scaling": scaling}


def write_both_forms(folder: Path) -> dict[str, Any]:
    """Rewrite a saved config.json so that it holds the rope in both forms; returns the rope_parameters."""
    file = Path(folder) / "config.json"
    data = json.loads(file.read_text(encoding="utf-8"))
    params = data.get("rope_parameters")
    if not isinstance(params, dict) or not params:
        legacy = dict(data.get("rope_scaling") or {})
        legacy.setdefault("rope_type", legacy.get("type", "default"))
        legacy["rope_theta"] = float(data.get("rope_theta", 10000.0))
        params = legacy
    params = {k: v for k, v in params.items() if k != "type"}
    data["rope_parameters"] = params
    data.update(legacy_keys(params))
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return params


def read_rope(folder: Path) -> dict[str, Any]:
    """The rope settings and window a saved config declares (as transformers v5 reads them)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    params = {k: v for k, v in base_rope(config).items() if k != "type"}
    return {"rope_parameters": params, "max_position_embeddings": int(config.max_position_embeddings)}


def read_legacy_rope(folder: Path) -> dict[str, Any]:
    """What a transformers v4 loader takes from config.json: top-level rope_theta (10,000 if absent), rope_scaling."""
    data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return {"rope_theta": float(data.get("rope_theta", 10000.0)), "rope_scaling": data.get("rope_scaling")}
