"""Any lceval backend as an lm-eval `LM`, so lm-eval's own task definitions (MMLU and the rest) run on it.

lm-eval's `TemplateLM` does the tokenisation rules (the context/continuation split, the empty-context prefix);
this class only maps its three request types onto the backend's token-id calls. Every answer is handed to
lm-eval's cache hook as soon as it is known, so a run killed half-way resumes from the run folder's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from lceval.api.backend import Backend, GenerationRequest, LoglikelihoodRequest
from lceval.api.prompting import bos_ids

CHUNK = 64  # requests per backend call: the unit of progress and of what a kill can lose

Progress = Callable[[str, int, int], None]  # (request type, done, total)


def _no_progress(kind: str, done: int, total: int) -> None:
    pass


class BackendLM(TemplateLM):
    """lm-eval's view of one lceval backend (or, with `backend=None`, of its tokenizer only: building prompts)."""

    def __init__(self, tokenizer: Any, max_length: int, backend: Backend | None = None,
                 stop_token_ids: Sequence[int] = (), progress: Progress = _no_progress):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lceval_backend = backend
        self.stop_token_ids = tuple(stop_token_ids)
        self.progress = progress

    # --- tokenisation (what TemplateLM asks for) ---
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = bos_ids(self.tokenizer)
        return bos[0] if bos else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """The tokenizer's own special tokens, except where the text already starts with them (a chat template)."""
        if add_special_tokens is None:
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    # --- the three request types ---
    def _backend(self) -> Backend:
        if self.lceval_backend is None:
            raise RuntimeError("this BackendLM only builds prompts; give it a backend to score them")
        return self.lceval_backend

    def _fit(self, context: list[int], continuation: list[int]) -> LoglikelihoodRequest:
        """Cut from the left so that context + continuation fit the window, keeping one context token."""
        continuation = list(continuation[-(self.max_length - 1):])
        return LoglikelihoodRequest(list(context[-(self.max_length - len(continuation)):]), continuation)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = []
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start:start + CHUNK]
            answers = self._backend().loglikelihood([self._fit(ctx, cont) for _, ctx, cont in chunk])
            for (key, _, _), answer in zip(chunk, answers, strict=True):
                result = (answer.logprob, answer.is_greedy)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, result)
                results.append(result)
            self.progress("loglikelihood", len(results), len(requests))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in disjoint windows, each token scored once.

        A window is one context token and max_length - 1 scored tokens (the rule of lm-eval's vLLM and API models;
        its HF model scores max_length), so that every backend, vLLM's engine included, gets the same windows.
        """
        totals = []
        for done, request in enumerate(requests, start=1):
            (text,) = request.args
            windows = [make_disjoint_window(pair) for pair in get_rolling_token_windows(
                self.tok_encode(text), self.prefix_token_id, self.max_length - 1, 1)]
            scored = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            total = sum(logprob for logprob, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            totals.append(total)
            self.progress("loglikelihood_rolling", done, len(requests))
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation to the model's end tokens, then cut at the first of the task's `until` strings."""
        prepared = []
        for request in requests:
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            budget = int(gen_kwargs.get("max_gen_toks", 256))
            prompt = self.tok_encode(context)[-(self.max_length - budget):]
            prepared.append((GenerationRequest(prompt, budget, self.stop_token_ids), until))
        texts: list[str | None] = [None] * len(requests)
        done = 0
        for index, generation in self._backend().generate([request for request, _ in prepared]):
            text = generation.text
            for term in prepared[index][1]:
                if term:
                    text = text.split(term)[0]
            texts[index] = text
            self.cache_hook.add_partial("generate_until", requests[index].args, text)
            done += 1
            self.progress("generate_until", done, len(requests))
        return [text or "" for text in texts]
