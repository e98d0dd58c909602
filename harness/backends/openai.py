"""A model served over the OpenAI-compatible API (`vllm serve`): token ids in, token ids out, over HTTP.

Prompts are still built from the local --model folder's tokenizer and sent as token-id lists to
`/v1/completions`, and the server hands back the generated token ids (vLLM's `return_token_ids`), so that
truncation, stop ids and decoding follow the same rules as the in-process backends (base.cut_at_stop,
base.decode). Requests run concurrently over one or more servers from one asyncio loop in a background
thread, so that finished samples are handed to the runner (and written) while the others are in flight. A
server that stops answering is dropped and its pending requests go to the others; when none is left the run
stops with a one-sentence error and what finished is already written.

`--openai-api chat` sends `/v1/chat/completions` instead, for servers without a completions endpoint: the
server applies its own chat template to the prompt's text, so prompts are no longer token-exact.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from lceval.api.backend import (
    Backend,
    BackendSettings,
    Generation,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    cut_at_stop,
    decode,
)
from lceval.api.errors import UserError
from lceval.api.registry import backends
from lceval.api.settings import Count, NonNegativeInt, PositiveFloat, settings_class
from lceval.http.client import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    GREEDY_STANDARD,
    ApiClient,
    LoopThread,
    RequestRefused,
    RetryPolicy,
    ServerDown,
    close_clients,
    parse_base_urls,
    pick_model,
    read_api_key,
    refused,
    spread,
)

DEFAULT_CONCURRENCY = 8
APIS = ("completions", "chat")
# Greedy, and vLLM's own repetition penalty set back to neutral (lceval.http.client.GREEDY_STANDARD).
GREEDY = {**GREEDY_STANDARD, "repetition_penalty": 1.0}
# Text the startup check tokenizes on the server and locally: a different tokenizer gives different ids.
TOKENIZER_PROBE = "The quick brown fox jumps over the lazy dog 12345 times; San Francisco is sunny."


# ---------------------------------------------------------------------------------------------------------------
# Settings: the backend's own options (-M KEY=VALUE, or lceval run's server flags), as BackendSettings.extra
# ---------------------------------------------------------------------------------------------------------------

URLs = Annotated[list[str], BeforeValidator(lambda value: [value] if isinstance(value, str) else value)]


@settings_class
class OpenAIOptions:
    """The server backend's options: `lceval run --base-url URL ...`, `-M base_url=URL`, or a config file's
    `backend_options:`."""

    base_url: URLs | None = None  # one or more servers (data parallel); a comma list too
    served_model: str | None = None  # default: the one base model the server lists
    served_adapter: str | None = None  # the LoRA module serving a local --adapter folder
    api_key_env: str | None = None  # variable holding the API key (default OPENAI_API_KEY)
    concurrency: Count = DEFAULT_CONCURRENCY  # requests in flight per server
    request_timeout: PositiveFloat = DEFAULT_TIMEOUT_S  # seconds per request
    max_retries: NonNegativeInt = DEFAULT_MAX_RETRIES  # per request, with backoff, on connection errors, 5xx
    openai_api: Literal["completions", "chat"] = "completions"  # chat: for servers without /v1/completions


def _options(cfg) -> OpenAIOptions:
    return OpenAIBackend.read_options(cfg.backend_options)


def served_only_adapter(cfg) -> bool:
    """With --backend openai, an --adapter that is not a local folder names a LoRA module the server serves."""
    return cfg.backend == "openai" and bool(cfg.adapter) and not Path(cfg.adapter).expanduser().is_dir()


def served_adapter_name(cfg) -> str | None:
    """The served LoRA module for --adapter: --served-adapter, else the name given, else the local folder's name."""
    if cfg.backend != "openai":
        return None
    served = _options(cfg).served_adapter
    if not cfg.adapter:
        if served:
            raise UserError(f"--served-adapter {served} names the served module of a local --adapter "
                            "folder; to run a served LoRA module by name, pass it to --adapter instead.")
        return None
    if served:
        return served
    return cfg.adapter if served_only_adapter(cfg) else Path(cfg.adapter).expanduser().resolve().name


def settings_extra(cfg) -> dict[str, Any]:
    """The run settings this backend reads from BackendSettings.extra (nothing for other backends)."""
    if cfg.backend != "openai":
        return {}
    options = _options(cfg)
    return {"base_urls": parse_base_urls(options.base_url), "served_model": options.served_model,
            "served_adapter": served_adapter_name(cfg), "api_key_env": options.api_key_env,
            "concurrency": options.concurrency, "request_timeout": options.request_timeout,
            "max_retries": options.max_retries, "openai_api": options.openai_api, "chat_template": cfg.chat_template}


# ---------------------------------------------------------------------------------------------------------------
# The served model: which name to ask for, checked on every server at startup
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ServerInfo:
    url: str
    model: dict[str, Any]  # the model card of the base model
    adapter: dict[str, Any] | None  # the LoRA module's card
    version: str | None


@backends.register("openai")
class OpenAIBackend(Backend):
    """A model served over the OpenAI-compatible API (vllm serve): token-id prompts, several servers, LoRA by name."""

    name = "openai"
    options_class = OpenAIOptions
    # Where the servers are and how the client talks to them changes no output; which API it uses does.
    neutral_options = frozenset({"base_url", "served_model", "served_adapter", "api_key_env", "concurrency",
                                 "request_timeout", "max_retries"})

    @classmethod
    def settings_from(cls, cfg: Any) -> dict[str, Any]:
        return settings_extra(cfg)

    @classmethod
    def served_adapter(cls, cfg: Any) -> str | None:
        return served_adapter_name(cfg)

    @classmethod
    def adapter_by_name(cls, cfg: Any) -> bool:
        return served_only_adapter(cfg)

    def __init__(self, settings: BackendSettings):
        super().__init__(settings)
        from transformers import AutoTokenizer

        extra = settings.extra
        self.urls = parse_base_urls(extra.get("base_urls"))
        if not self.urls:
            raise UserError("--backend openai needs the server's address: pass --base-url http://HOST:PORT "
                            "(repeat it for several servers).")
        # --openai-api, --concurrency, --max-retries and --request-timeout are typed and range-checked with the
        # run's other settings (lceval.running.config.RunConfig); None here means the default.
        self.api = extra.get("openai_api") or "completions"
        if self.api == "chat" and extra.get("chat_template", True):
            raise UserError("--openai-api chat applies the server's chat template to the prompt; pass "
                            "--no-chat-template so that lceval does not apply one as well.")
        concurrency, retries, timeout = (extra.get(k) for k in ("concurrency", "max_retries", "request_timeout"))
        self.concurrency = DEFAULT_CONCURRENCY if concurrency is None else int(concurrency)
        self.policy = RetryPolicy(max_retries=DEFAULT_MAX_RETRIES if retries is None else int(retries),
                                  timeout=DEFAULT_TIMEOUT_S if timeout is None else float(timeout))
        self.api_key_env = extra.get("api_key_env")
        key = read_api_key(self.api_key_env)
        self._sends_key = key is not None
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model_path,
                                                       trust_remote_code=settings.trust_remote_code)
        self._loop = LoopThread()
        self.clients = [ApiClient(url, key, self.policy, self.concurrency) for url in self.urls]
        try:
            self.servers = self._loop.run(self._connect(extra.get("served_model"), extra.get("served_adapter")))
        except BaseException:
            self.close()
            raise
        first = self.servers[0]
        self.served_model = first.model["id"]
        self.request_model = first.adapter["id"] if first.adapter else self.served_model
        dropped = [c.url for c in self.clients if c.down]
        self.unreachable_at_start = dropped
        if dropped:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]backend openai: no answer from {', '.join(dropped)}; "
                                       f"using {', '.join(s.url for s in self.servers)}.[/]")

    # -- startup ---------------------------------------------------------------------------------------------------

    async def _connect(self, wanted_model: str | None, adapter: str | None) -> list[ServerInfo]:
        """Ask every server what it serves; drop those that do not answer; check the rest agree with the run."""
        answers = await asyncio.gather(*(self._probe(c) for c in self.clients), return_exceptions=True)
        servers: list[ServerInfo] = []
        for client, answer in zip(self.clients, answers, strict=True):
            if isinstance(answer, ServerDown):
                client.down = True
                continue
            if isinstance(answer, RequestRefused):
                raise refused(answer, "to list its models (/v1/models)",
                              "is it an OpenAI-compatible server? correct --base-url")
            if isinstance(answer, BaseException):
                raise answer
            models, version = answer
            servers.append(self._check_server(client.url, models, version, wanted_model, adapter))
        if not servers:
            reasons = "; ".join(f"{a.reason}" for a in answers if isinstance(a, ServerDown))
            raise UserError(f"no OpenAI-compatible server answers at {', '.join(self.urls)} ({reasons}); start it "
                            "(vllm serve MODEL --port PORT) or correct --base-url.")
        names = {s.model["id"] for s in servers}
        if len(names) > 1:
            raise UserError(f"the servers serve different models ({', '.join(sorted(names))}); name one with "
                            "--served-model or give only servers of the same model.")
        for server in servers:
            await self._check_tokenizer(server)
        return servers

    async def _probe(self, client: ApiClient) -> tuple[list[dict[str, Any]], str | None]:
        models = (await client.request("GET", "/v1/models")).get("data") or []
        try:
            version = (await client.request("GET", "/version")).get("version")
        except RequestRefused:
            version = None  # not a vLLM server: no /version
        return models, version

    def _check_server(self, url: str, models: list[dict[str, Any]], version: str | None, wanted: str | None,
                      adapter: str | None) -> ServerInfo:
        model = pick_model(url, models, wanted)
        window = model.get("max_model_len")
        if window is not None and int(window) < self.settings.max_length:
            raise UserError(f"server {url} serves {model['id']} with a window of {window} tokens, less than the run's "
                            f"{self.settings.max_length}; restart it with --max-model-len {self.settings.max_length} "
                            "or lower --max-length.")
        card = None
        if adapter is not None:
            card = next((m for m in models if m.get("id") == adapter), None)
            if card is None:
                raise UserError(f"server {url} serves no LoRA module {adapter!r}; start it with --enable-lora "
                                f"--lora-modules {adapter}=ADAPTER_FOLDER, or name a served one with --adapter.")
        return ServerInfo(url, model, card, version)

    async def _check_tokenizer(self, server: ServerInfo) -> None:
        """The served model must tokenize like the local --model, or prompts in ids mean something else there."""
        from lceval.api.prompting import encode

        client = next(c for c in self.clients if c.url == server.url)
        body = {"model": server.model["id"], "prompt": TOKENIZER_PROBE, "add_special_tokens": False}
        try:
            answer = await client.request("POST", "/tokenize", body)
        except (RequestRefused, ServerDown):
            return  # not a vLLM server (no /tokenize to compare with), or gone: then its first request says so
        if answer.get("tokens") != encode(self.tokenizer, TOKENIZER_PROBE):
            raise UserError(f"server {server.url} serves {server.model['id']} with another tokenizer than the local "
                            f"--model {self.settings.model_path}; point --model at the served checkpoint's folder.")

    # -- requests --------------------------------------------------------------------------------------------------

    def _live(self) -> list[ApiClient]:
        return [c for c in self.clients if not c.down]

    def _completion_body(self, request: GenerationRequest) -> dict[str, Any]:
        return {"model": self.request_model, "prompt": list(request.prompt_ids), "max_tokens": request.max_new_tokens,
                "min_tokens": request.min_new_tokens, "stop_token_ids": list(request.stop_token_ids),
                "return_token_ids": True, **GREEDY}

    def _chat_body(self, request: GenerationRequest) -> dict[str, Any]:
        text = decode(self.tokenizer, list(request.prompt_ids))
        return {"model": self.request_model, "messages": [{"role": "user", "content": text}],
                "max_tokens": request.max_new_tokens, **GREEDY_STANDARD}

    async def _generate_one(self, client: ApiClient, request: GenerationRequest) -> list[int]:
        """The generated token ids, as the server returns them (stop ids included, cut later)."""
        from lceval.api.prompting import encode

        path, body = ("/v1/completions", self._completion_body(request)) if self.api == "completions" else \
            ("/v1/chat/completions", self._chat_body(request))
        try:
            choice = (await client.request("POST", path, body))["choices"][0]
        except RequestRefused as err:
            raise refused(err, "a generation request") from None
        if choice.get("token_ids") is not None:
            return [int(t) for t in choice["token_ids"]]
        if self.api == "chat":  # a server without vLLM's return_token_ids: the text is all there is
            return encode(self.tokenizer, choice["message"]["content"] or "")
        raise UserError(f"server {client.url} returns no generated token ids (vLLM's return_token_ids); serve the "
                        "model with a recent vLLM, or use --openai-api chat (not token-exact).")

    def _run(self, n: int, call: Callable[[ApiClient, int], Awaitable[Any]]) -> Iterator[tuple[int, Any]]:
        """Results of call over all servers, in the order they finish, handed over from the loop thread."""
        out: queue.Queue = queue.Queue()
        done = object()

        async def feed() -> None:
            try:
                await spread(self._live() or self.clients, n, self.concurrency, call, lambda i, r: out.put((i, r)))
            except Exception as err:  # handed to the consumer, after every result that came before it
                out.put(err)
            else:
                out.put(done)

        future = self._loop.submit(feed())
        try:
            while True:
                try:
                    item = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is done:
                    return
                if isinstance(item, ServerDown):
                    raise UserError(f"no server is left to answer ({item.url}); the samples that finished are "
                                    "written, so restart a server and rerun with the same --run-id to continue.")
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            future.cancel()  # the consumer stopped early (an error, Ctrl-C): drop what is in flight

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        async def call(client: ApiClient, i: int) -> list[int]:
            return await self._generate_one(client, requests[i])

        for index, token_ids in self._run(len(requests), call):
            request = requests[index]
            ids, reason = cut_at_stop(token_ids, request.stop_token_ids, request.min_new_tokens)
            yield index, Generation(ids, decode(self.tokenizer, ids), reason)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """vLLM's prompt_logprobs of context + continuation (one generated token, discarded), as in-process."""
        if self.api != "completions":
            raise UserError("log-likelihood needs the completions API; drop --openai-api chat.")

        async def call(client: ApiClient, i: int) -> Loglikelihood:
            request = requests[i]
            body = {"model": self.request_model, "prompt": [*request.context_ids, *request.continuation_ids],
                    "max_tokens": 1, "prompt_logprobs": 0, **GREEDY}
            try:
                choice = (await client.request("POST", "/v1/completions", body))["choices"][0]
            except RequestRefused as err:
                raise refused(err, "a log-likelihood request") from None
            return continuation_loglikelihood(client.url, choice.get("prompt_logprobs"), request.continuation_ids)

        results: dict[int, Loglikelihood] = dict(self._run(len(requests), call))
        return [results[i] for i in range(len(requests))]

    # -- identity and close ----------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        import httpx

        versions = {"server": sorted({s.version or "unknown" for s in self.servers}), "httpx": httpx.__version__}
        first = self.servers[0]
        return {
            "name": self.name,
            "versions": versions,
            "base_urls": self.urls,
            "unreachable_at_start": self.unreachable_at_start,
            "api": self.api,
            "served_model": self.served_model,
            "served_model_root": first.model.get("root"),
            "served_adapter": first.adapter["id"] if first.adapter else None,
            "served_adapter_root": first.adapter.get("root") if first.adapter else None,
            "max_model_len": first.model.get("max_model_len"),
            "concurrency": self.concurrency,
            "max_retries": self.policy.max_retries,
            "request_timeout": self.policy.timeout,
            "api_key_env": (self.api_key_env or DEFAULT_API_KEY_ENV) if self._sends_key else None,
        }

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        try:
            loop.run(close_clients(getattr(self, "clients", [])))
        finally:
            loop.close()
            self._loop = None


def continuation_loglikelihood(url: str, prompt_logprobs: list[dict[str, Any] | None] | None,
                               continuation_ids: list[int]) -> Loglikelihood:
    """Sum of the continuation's prompt logprobs; greedy when each of its tokens has rank 1 (as in-process)."""
    if not prompt_logprobs:
        raise UserError(f"server {url} returns no prompt_logprobs (a vLLM extension); score log-likelihoods on a "
                        "vLLM server or with --backend vllm or hf.")
    n = len(continuation_ids)
    chosen = [position[str(token)] for position, token in zip(prompt_logprobs[-n:], continuation_ids, strict=True)]
    return Loglikelihood(sum(float(c["logprob"]) for c in chosen), all(int(c["rank"]) == 1 for c in chosen))
