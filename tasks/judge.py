"""An LLM judge on an OpenAI-compatible server, asked through lceval's HTTP client (lceval.http.client).

One client implementation means one rule for retries, backoff, timeouts and the API key (read from an
environment variable, sent only in a header). The judge is opened on its first question, so that building
a task's samples needs no server; a judge that does not answer stops the run with one sentence, and the
samples that finished before are already written.
"""

from __future__ import annotations

import re
from typing import Any

from lceval.api.errors import UserError
from lceval.http.client import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    GREEDY_STANDARD,
    ApiClient,
    LoopThread,
    RequestRefused,
    RetryPolicy,
    ServerDown,
    chat_text,
    parse_base_urls,
    pick_model,
    read_api_key,
    refused,
)

# LangChain's labeled_score_string reads the first [[...]] of the reply and accepts only the integers 1 to 10.
_RATING = re.compile(r"\[\[(.*?)\]\]")


def parse_rating(reply: str, low: int = 1, high: int = 10) -> int | None:
    """The first `[[n]]` of a judge's reply, where n is an integer from low to high; None for anything else."""
    match = _RATING.search(reply or "")
    if match is None:
        return None
    text = match.group(1).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        return None
    return int(text)


class Judge:
    """Chat questions to one server's model, greedy; `model` defaults to the one base model the server lists."""

    def __init__(self, base_url: str, model: str | None = None, api_key_env: str | None = None, *,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = DEFAULT_TIMEOUT_S, option: str = "judge"):
        urls = parse_base_urls(base_url)
        if len(urls) != 1:
            raise UserError(f"{option}_url {base_url!r} must be one server URL, e.g. http://localhost:8000.")
        self.url, self.model, self.option = urls[0], model, option
        self._key = read_api_key(api_key_env)  # a missing variable is an error now, before any work
        self._policy = RetryPolicy(max_retries=max_retries, timeout=timeout)
        self._loop: LoopThread | None = None
        self._client: ApiClient | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._loop is None:
            self._loop = LoopThread()
            self._client = ApiClient(self.url, self._key, self._policy, max_connections=4)
        try:
            return self._loop.run(self._client.request(method, path, body))
        except ServerDown as err:
            raise UserError(f"the judge at {self.url} does not answer ({err.reason}); start it or correct "
                            f"{self.option}_url, then rerun with the same --run-id to continue.") from None
        except RequestRefused as err:
            raise refused(err, "a judge request") from None

    def ask(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The judge's reply to a chat, greedy (temperature 0)."""
        if self.model is None:
            self.model = pick_model(self.url, self._request("GET", "/v1/models").get("data") or [], None)["id"]
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, **GREEDY_STANDARD}
        answer = self._request("POST", "/v1/chat/completions", body)
        return chat_text(answer)

    def close(self) -> None:
        if self._loop is not None:
            client, loop = self._client, self._loop
            self._loop = self._client = None
            try:
                loop.run(client.aclose())
            finally:
                loop.close()
