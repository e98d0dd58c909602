"""transformers in-process: the embedded default wherever no vLLM engine can start."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
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
    generation_eos,
    resolve_dtype,
    rope_overrides,
)
from lceval.api.registry import backends
from lceval.running.model_files import model_window


@backends.register("hf")
class HFBackend(Backend):
    """transformers in-process, batched greedy generation, SDPA attention, PEFT adapters."""

    name = "hf"
    swaps_adapters = True

    def __init__(self, settings):
        super().__init__(settings)
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        path = settings.model_path
        config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
        for key, value in rope_overrides(config, settings.rope_theta, settings.max_length, model_window(path),
                                    settings.rope_parameters).items():
            setattr(config, key, value)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
        self._dtype = getattr(torch, resolve_dtype(settings.dtype, config))
        torch.manual_seed(settings.seed)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            config=config,
            dtype=self._dtype,
            attn_implementation="sdpa",
            trust_remote_code=settings.trust_remote_code,
        )
        # PEFT names the one adapter of a run "default"; several checkpoints are loaded side by side, one active.
        paths = settings.served_adapters
        self._adapter_names = {path: "default" if i == 0 else f"checkpoint-{i}" for i, path in enumerate(paths)}
        if paths:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, paths[0])
            for path in paths[1:]:
                model.load_adapter(path, adapter_name=self._adapter_names[path])
        self.model = model.eval()
        self._adapter: Path | None = None
        if paths:
            self.use_adapter(settings.adapter_path)
        pad = self.tokenizer.pad_token_id
        eos = generation_eos(path)
        self._pad_id = pad if pad is not None else (eos[0] if eos else 0)

    def use_adapter(self, path: Path | None) -> None:
        if path is not None:
            self.model.set_adapter(self._adapter_names[path])
        self._adapter = path

    def _model_as_served(self):
        """The model with the adapter in use; with none, PEFT's adapters switched off (the base's own layers)."""
        if self._adapter is None and self._adapter_names:
            return self.model.disable_adapter()
        return nullcontext()

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.max_new_tokens, tuple(request.stop_token_ids), request.min_new_tokens)].append(index)
        for (max_new, stops, min_new), indices in groups.items():
            # Longest first, so that a batch holds prompts of similar length and padding stays small.
            indices.sort(key=lambda i: -len(requests[i].prompt_ids))
            for start in range(0, len(indices), self.settings.batch_size):
                batch = indices[start : start + self.settings.batch_size]
                outputs = self._generate_batch([requests[i].prompt_ids for i in batch], max_new, stops, min_new)
                yield from zip(batch, outputs, strict=True)

    def _generate_batch(self, prompts: list[list[int]], max_new: int, stops: tuple[int, ...],
                        min_new: int) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention[row, width - len(prompt) :] = 1
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new,
            min_new_tokens=min_new or None,
            eos_token_id=list(stops) or None,
            pad_token_id=self._pad_id,
        )
        with torch.inference_mode(), self._model_as_served():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
        results = []
        for row in out[:, width:].tolist():
            ids, reason = cut_at_stop(row, stops, min_new)
            results.append(Generation(ids, decode(self.tokenizer, ids), reason))
        return results

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """One forward pass over context + continuation per request."""
        import torch

        results = []
        for request in requests:
            ids = torch.tensor([[*request.context_ids, *request.continuation_ids]])
            with torch.inference_mode(), self._model_as_served():
                logits = self.model(input_ids=ids).logits[0].float()
            n = len(request.continuation_ids)
            # Position t predicts token t + 1: the continuation is predicted by the n positions before its end.
            predicted = torch.log_softmax(logits[-n - 1 : -1], dim=-1)
            target = torch.tensor(request.continuation_ids)
            chosen = predicted.gather(1, target[:, None])[:, 0]
            results.append(Loglikelihood(float(chosen.sum()), bool((predicted.argmax(-1) == target).all())))
        return results

    def identity(self) -> dict[str, Any]:
        import torch
        import transformers

        versions = {"transformers": transformers.__version__, "torch": torch.__version__}
        if self._adapter is not None:
            import peft

            versions["peft"] = peft.__version__
        return {
            "name": self.name,
            "versions": versions,
            "dtype": str(self._dtype).replace("torch.", ""),
            "attention": "sdpa",
            "batch_size": self.settings.batch_size,
            "max_length": self.settings.max_length,
        }
