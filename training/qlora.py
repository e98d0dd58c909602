"""The bitsandbytes CPU trap, and how QLoRA training on a CPU is kept out of it.

bitsandbytes 0.49+ on CPUs with AVX512-BF16 repacks a Linear4bit's weight in place the first time the layer
runs in eval mode on an input that needs no gradient (any evaluation pass). From then on `matmul_4bit` takes
an inference kernel with no autograd, so no gradient flows back through the frozen 4-bit layers, even after
`model.train()`: evaluating during QLoRA training silently ruins it.

The guard does two things: it turns the repacking off on every 4-bit layer of the model being trained, and it
undoes a repacking that already happened (a model evaluated before training). Training calls it before the
first step and after every evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def linear4bit_layers(model: Any) -> Iterator[Any]:
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return iter(())
    return (m for m in model.modules() if isinstance(m, Linear4bit))


def is_repacked(layer: Any) -> bool:
    state = getattr(layer.weight, "quant_state", None)
    return bool(getattr(state, "packing_format_for_cpu", False))


def guard_4bit_training(model: Any) -> int:
    """Keep gradients flowing through the 4-bit layers; returns how many repacked layers were restored."""
    restored = 0
    for layer in linear4bit_layers(model):
        layer.support_avx512bf16_for_cpu = False  # never repack again while this model trains
        if is_repacked(layer):
            # Saving a layer undoes the repacking (bitsandbytes does it so that checkpoints hold the portable layout).
            layer._save_to_state_dict({}, "", False)
            restored += 1
    return restored


def trainer_callback():
    """A TrainerCallback applying the guard before training and after every evaluation."""
    from transformers import TrainerCallback

    class Guard4bit(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                guard_4bit_training(model)

        def on_evaluate(self, args, state, control, model=None, **kwargs):
            if model is not None:
                guard_4bit_training(model)

    return Guard4bit()
