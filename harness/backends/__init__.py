"""Inference backends. Built-ins: `vllm` (in-process engine) and `hf` (transformers); `auto` picks one."""

BUILTIN_BACKEND_MODULES = ["lceval.backends.hf", "lceval.backends.vllm"]
