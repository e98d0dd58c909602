"""The HTTP client of every OpenAI-compatible server lceval talks to (the openai backend, the needle judge, `lceval
data synth`): one client per server with retries and exponential backoff, the API key read from an environment
variable and sent only in a header, a background asyncio loop, and a scheduler that spreads requests over servers
and drops a server that stops answering.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from lceval.api.errors import UserError

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_RETRIES = 5
# Greedy, with every server-side default that could change a greedy choice set back to neutral: vLLM applies the
# model's generation_config.json (repetition_penalty, temperature ...) to any field a request leaves out. The chat
# API is the portable fallback, so it sends only fields of the OpenAI API itself.
GREEDY_STANDARD = {"temperature": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def parse_base_urls(value: str | Sequence[str] | None) -> list[str]:
    """Repeated --base-url flags and/or comma lists, each without a trailing slash or `/v1`."""
    items = [value] if isinstance(value, str) else list(value or [])
    urls = []
    for item in items:
        for part in str(item).split(","):
            url = part.strip().rstrip("/")
            url = url[: -len("/v1")] if url.endswith("/v1") else url
            if url and url not in urls:
                urls.append(url)
    return urls


def read_api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable; OPENAI_API_KEY is optional, a variable named explicitly is not."""
    name = env_name or DEFAULT_API_KEY_ENV
    key = os.environ.get(name) or None
    if key is None and env_name and env_name != DEFAULT_API_KEY_ENV:
        raise UserError(f"environment variable {env_name} (--api-key-env) is not set; export the server's API key "
                        "in it.")
    return key


class ServerDown(Exception):
    """A server did not answer (connection error, timeout, 429 or 5xx) after every retry."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class RequestRefused(Exception):
    """A server answered a request with an error that retrying cannot fix (4xx other than 429)."""

    def __init__(self, url: str, path: str, status: int, message: str):
        super().__init__(f"{url}{path} answered {status}: {message}")
        self.url, self.path, self.status, self.message = url, path, status, message


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT_S  # seconds, per request (connect, each read, write)
    backoff: float = 0.5  # first wait; doubled after every failed try, up to `cap`
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff * 2**attempt, self.cap)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _error_message(response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
    except ValueError:
        message = response.text
    return " ".join(str(message).split())[:300]


class ApiClient:
    """One OpenAI-compatible server. Used only from the loop thread of its LoopThread."""

    def __init__(self, base_url: str, api_key: str | None, policy: RetryPolicy, max_connections: int):
        import httpx

        self.url = base_url
        self.policy = policy
        self.down = False  # set once it failed every retry: no new work goes to it in this run
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=policy.timeout,
                                       limits=httpx.Limits(max_connections=max_connections))

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer; retries connection errors, timeouts, 429 and 5xx, then raises ServerDown."""
        import httpx

        reason = "no try was made"
        for attempt in range(self.policy.max_retries + 1):
            if self.down:
                raise ServerDown(self.url, "stopped answering earlier in this run")
            if attempt:
                await asyncio.sleep(self.policy.delay(attempt - 1))
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as err:
                reason = f"{type(err).__name__} {err}".strip()
                continue
            if response.status_code < 400:
                try:
                    return response.json()
                except ValueError:
                    raise RequestRefused(self.url, path, response.status_code, "the answer is not JSON") from None
            if not _retryable(response.status_code):
                raise RequestRefused(self.url, path, response.status_code, _error_message(response))
            reason = f"HTTP {response.status_code} {_error_message(response)}"
        raise ServerDown(self.url, f"{reason} (after {self.policy.max_retries} retries)")

    async def aclose(self) -> None:
        await self._http.aclose()


async def close_clients(clients: Sequence[ApiClient]) -> None:
    """Close every client's connections, whatever state each is in."""
    await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)


def chat_text(answer: dict[str, Any]) -> str:
    """The reply text of a /v1/chat/completions answer ("" where the server sent none)."""
    return answer["choices"][0]["message"].get("content") or ""


class LoopThread:
    """One asyncio loop in a daemon thread: requests stay in flight while the caller writes and scores results."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lceval-http", daemon=True)
        self._thread.start()

    def submit(self, coro: Awaitable[Any]) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on the loop and wait for its result (its exception is raised here)."""
        future = self.submit(coro)
        try:
            return future.result()
        finally:
            future.cancel()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def refused(err: RequestRefused, what: str,
            todo: str = "check the server's settings (--max-model-len, --lora-modules) against the run's") -> UserError:
    """A request a server refused, as one sentence naming the server and what to do."""
    if err.status in (401, 403):
        return UserError(f"server {err.url} refused the API key ({err.status}: {err.message}); put the server's key "
                         f"in ${DEFAULT_API_KEY_ENV} or in the variable named by --api-key-env.")
    return UserError(f"server {err.url} refused {what} ({err.status}: {err.message}); {todo}.")


async def spread(clients: list[ApiClient], n: int, concurrency: int,
                 call: Callable[[ApiClient, int], Awaitable[Any]], emit: Callable[[int, Any], None]) -> None:
    """call(client, i) for i in range(n), `concurrency` at a time per live server; emit(i, result) as each ends.

    A server that fails every retry is dropped and its requests go back in the queue for the others; when no
    server is left, ServerDown is raised naming them all.
    """
    todo: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        todo.put_nowait(i)
    left = n
    over = asyncio.Event()
    failures: list[Exception] = []

    async def worker(client: ApiClient) -> None:
        nonlocal left
        while not client.down and left:
            i = await todo.get()
            try:
                result = await call(client, i)
            except ServerDown as err:
                todo.put_nowait(i)
                if not client.down:
                    client.down = True
                    failures.append(err)
                if all(c.down for c in clients):
                    over.set()
                return
            except Exception as err:  # a refused request or a bug: stop the whole call
                failures.append(err)
                over.set()
                return
            emit(i, result)
            left -= 1
            if not left:
                over.set()

    if n == 0:
        return
    workers = [asyncio.create_task(worker(c)) for c in clients if not c.down for _ in range(concurrency)]
    if not workers:
        raise ServerDown(", ".join(c.url for c in clients), "no server is up")
    try:
        await over.wait()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if left:
        other = [f for f in failures if not isinstance(f, ServerDown)]
        if other:
            raise other[0]
        raise ServerDown("; ".join(f"{f.url} ({f.reason})" for f in failures), "every server stopped answering")


def pick_model(url: str, models: list[dict[str, Any]], wanted: str | None) -> dict[str, Any]:
    """The model card to send requests to: `wanted`, or the server's one base model (LoRA modules have a parent)."""
    names = [m.get("id") for m in models]
    if wanted is not None:
        for card in models:
            if card.get("id") == wanted:
                return card
        raise UserError(f"server {url} does not serve model {wanted!r}; it serves {', '.join(map(str, names))}.")
    bases = [m for m in models if not m.get("parent")]
    if len(bases) != 1:
        raise UserError(f"server {url} serves {len(bases)} base models ({', '.join(str(m.get('id')) for m in bases)});"
                        " name one with --served-model.")
    return bases[0]

