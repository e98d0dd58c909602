"""Training of context-extension checkpoints (QLoRA, S2-Attn); filled in by the training issue."""
