"""Inference backends. Built-ins: `vllm` (in-process engine), `hf` (transformers), `openai` (a server over the
OpenAI-compatible API); `auto` picks vllm or hf."""

BUILTIN_BACKEND_MODULES = ["lceval.backends.hf", "lceval.backends.vllm", "lceval.backends.openai"]
