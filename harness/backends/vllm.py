"""vLLM in-process: all prompts of a task go to the engine at once; finished ones are handed back as they end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lceval.api.backend import (
    Backend,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    cut_at_stop,
    decode,
    resolve_dtype,
    rope_overrides,
)
from lceval.api.errors import UserError
from lceval.api.registry import backends
from lceval.running.model_files import model_window

# The CPU engine reserves this share of host memory (KV cache included): ~2.3 GiB on a 2-core, 24 GiB machine
# leaves room for a second engine and the test process. GPU machines use vLLM's own default (0.9).
CPU_MEMORY_UTILIZATION = 0.3


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception:
        return False


@backends.register("vllm")
class VLLMBackend(Backend):
    """vLLM in-process engine: greedy, explicit max_model_len, stop ids, LoRA adapters, RoPE overrides."""

    name = "vllm"
    swaps_adapters = True

    def __init__(self, settings):
        super().__init__(settings)
        trained = settings.extra.get("adapter_modules_to_save")
        if trained:
            raise UserError(f"adapter {settings.served_adapters[0]} fully trains "
                            f"{', '.join(trained)}, which vLLM's LoRA "
                            "cannot load; merge it into the model (lceval export --merge) or use --backend hf.")
        import vllm
        from transformers import AutoConfig

        path = settings.model_path
        config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
        overrides = rope_overrides(config, settings.rope_theta, settings.max_length, model_window(path),
                                   settings.rope_parameters)
        utilization = settings.gpu_memory_utilization
        if utilization is None:
            utilization = CPU_MEMORY_UTILIZATION if _on_cpu() else 0.9
        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(path),
            "max_model_len": settings.max_length,
            "dtype": resolve_dtype(settings.dtype, config),
            "seed": settings.seed,
            "trust_remote_code": settings.trust_remote_code,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": utilization,
            "tensor_parallel_size": settings.tensor_parallel_size,
        }
        if overrides:
            kwargs["hf_overrides"] = overrides
        if settings.served_adapters:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=max(settings.adapter_rank or 8, 8))
        self._kwargs = kwargs
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        # One LoRA request per checkpoint, each with its own id (vLLM keys its prefix cache by it).
        self._lora_ids = {path: i + 1 for i, path in enumerate(settings.served_adapters)}
        self._lora = None
        self.use_adapter(settings.adapter_path)

    def use_adapter(self, path: Path | None) -> None:
        from vllm.lora.request import LoRARequest

        if path is None:
            self._lora = None
        else:
            number = self._lora_ids[path]
            self._lora = LoRARequest("adapter" if number == 1 else f"adapter-{number}", number, str(path))

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        from vllm import SamplingParams, TokensPrompt

        engine = self.llm.llm_engine
        pending: dict[str, int] = {}
        for index, request in enumerate(requests):
            params = SamplingParams(
                temperature=0.0,
                max_tokens=request.max_new_tokens,
                min_tokens=request.min_new_tokens,
                stop_token_ids=list(request.stop_token_ids),
                detokenize=False,  # one decoding rule for every backend: base.decode
            )
            request_id = f"lceval-{index}"
            engine.add_request(request_id, TokensPrompt(prompt_token_ids=request.prompt_ids), params,
                               lora_request=self._lora)
            pending[request_id] = index
        try:
            while pending:
                for output in engine.step():
                    if output.finished and output.request_id in pending:
                        index = pending.pop(output.request_id)
                        completion = output.outputs[0]
                        ids, reason = cut_at_stop(list(completion.token_ids), requests[index].stop_token_ids,
                                                  requests[index].min_new_tokens)
                        yield index, Generation(ids, decode(self.tokenizer, ids), reason)
        finally:
            if pending:  # the consumer stopped early (an error or Ctrl-C): drop what is still queued
                engine.abort_request(list(pending))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Prompt log-probabilities of context + continuation (one generated token, discarded).

        Scoring requests skip reading the prefix cache (said explicitly; vLLM's default for prompt logprobs), so
        caching left on for generation cannot change these numbers.
        """
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False,
                                skip_reading_prefix_cache=True)
        prompts = [TokensPrompt(prompt_token_ids=[*r.context_ids, *r.continuation_ids]) for r in requests]
        if self._lora is not None and _on_cpu():
            # vLLM 0.32's CPU LoRA logits layer fails on prompt logprobs of several requests at once: one by one
            outputs = [self.llm.generate([p], params, lora_request=self._lora, use_tqdm=False)[0] for p in prompts]
        else:
            outputs = self.llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            n = len(request.continuation_ids)
            positions = output.prompt_logprobs[-n:]
            chosen = [position[token] for position, token in zip(positions, request.continuation_ids, strict=True)]
            results.append(Loglikelihood(sum(c.logprob for c in chosen), all(c.rank == 1 for c in chosen)))
        return results

    def identity(self) -> dict[str, Any]:
        import vllm

        settings = {k: v for k, v in self._kwargs.items() if k not in ("model", "tokenizer")}
        return {"name": self.name, "versions": {"vllm": vllm.__version__}, "engine_args": settings}

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            self.llm = None
