"""S2-Attn (LongLoRA's shifted sparse attention) as a transformers attention function, for training only.

The sequence is cut into groups of G = ratio x N tokens and attention is causal inside each group. Half of the
heads use groups shifted by G/2, so that information crosses group borders from one layer to the next. The
shifted groups do not wrap around (the first and last shifted groups are half groups, as in LongLoRA's
flash-attention path), so no token ever sees a later one. Inference uses full attention: the model's
architecture is unchanged, only this function is swapped in while training.

It is registered under ATTENTION_NAME in transformers' AttentionInterface and switched on with
`model.set_attn_implementation`. No attention mask is built for it (transformers passes None): batches are
right-padded, so padding sits after every real token and causal masking already hides it. Packed rows
(several samples per row) are refused by the recipe, since groups would cross samples.

Cost: each group is one SDPA call over G tokens, so attention is O(N x G) instead of O(N^2).
"""

from __future__ import annotations

from typing import Any

ATTENTION_NAME = "lceval_s2attn"


def group_size(n: int, ratio: float) -> int:
    """G for a sequence of n tokens: ratio x n, even (shifted groups start at G/2), at least 2."""
    size = max(2, int(n * ratio))
    return size + (size % 2)


def _repeat_kv(tensor, times: int):
    return tensor if times == 1 else tensor.repeat_interleave(times, dim=1)


def s2_attention(query, key, value, ratio: float, scaling: float | None = None, dropout: float = 0.0):
    """Shifted sparse attention of (b, h, n, d) tensors (keys/values already at h heads); returns (b, h, n, d)."""
    import torch
    import torch.nn.functional as F

    b, h, n, d = query.shape
    size = group_size(n, ratio)
    if size >= n:  # one group: plain causal attention
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, dropout_p=dropout)
    padded = -(-n // size) * size
    half = size // 2

    def pad(x, front: int, back: int):
        return F.pad(x, (0, 0, front, back))

    def grouped(x, groups: int):
        return x.reshape(x.shape[0], x.shape[1], groups, size, d)

    # Heads [0, h//2): groups [0, G), [G, 2G), ... Causal inside each group.
    plain = slice(0, h // 2)
    q, k, v = (pad(t[:, plain], 0, padded - n) for t in (query, key, value))
    groups = padded // size
    out_plain = F.scaled_dot_product_attention(grouped(q, groups), grouped(k, groups), grouped(v, groups),
                                               is_causal=True, scale=scaling, dropout_p=dropout)
    out_plain = out_plain.reshape(b, h // 2, padded, d)[:, :, :n]

    # Heads [h//2, h): groups shifted by G/2: [0, G/2), [G/2, 3G/2), ..., realised by G/2 slots of padding in front.
    shifted = slice(h // 2, h)
    q, k, v = (pad(t[:, shifted], half, padded - n + half) for t in (query, key, value))
    groups = padded // size + 1
    mask = torch.ones(groups, size, size, dtype=torch.bool, device=query.device).tril()
    mask[0, :, :half] = False  # the front padding is never a key ...
    mask[0, torch.arange(half), torch.arange(half)] = True  # ... except for itself (no empty rows, no NaN)
    out_shift = F.scaled_dot_product_attention(grouped(q, groups), grouped(k, groups), grouped(v, groups),
                                               attn_mask=mask, scale=scaling, dropout_p=dropout)
    out_shift = out_shift.reshape(b, h - h // 2, padded + size, d)[:, :, half : half + n]
    return torch.cat([out_plain, out_shift], dim=1)


def make_attention_function(ratio: float):
    """The function transformers calls in place of SDPA: (module, q, k, v, mask, ...) -> ((b, n, h, d), None)."""
    import torch.nn.functional as F

    def attention(module: Any, query, key, value, attention_mask, dropout: float = 0.0,
                  scaling: float | None = None, **kwargs):
        times = getattr(module, "num_key_value_groups", 1)
        key, value = _repeat_kv(key, times), _repeat_kv(value, times)
        dropout = dropout if module.training else 0.0
        if query.shape[2] != key.shape[2]:  # decoding with a cache (not training): full attention
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
        else:
            out = s2_attention(query, key, value, ratio, scaling=scaling, dropout=dropout)
        return out.transpose(1, 2).contiguous(), None

    return attention


def enable(model, ratio: float) -> None:
    """Switch a transformers model (or a PEFT model around one) to S2-Attn for training."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, make_attention_function(ratio))
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.set_attn_implementation(ATTENTION_NAME)


def disable(model, implementation: str = "sdpa") -> None:
    """Back to full attention (evaluation, saving)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.set_attn_implementation(implementation)
