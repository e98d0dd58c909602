"""The openai backend against real vLLM OpenAI-compatible servers on loopback (no mocks of the server).

Two servers start once for this module, at the same time: `main` (the demo model, a LoRA adapter served under
two names, an API key) and `spare` (killed with SIGKILL in the fault test). Results are compared with the
in-process hf and vllm backends on the same tiny float32 model.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from openai_server import TcpProxy, VLLMServer, free_port, make_lora_adapter

from lceval.api.backend import (
    BackendSettings,
    GenerationRequest,
    LoglikelihoodRequest,
    decode,
    generation_eos,
)
from lceval.api.errors import UserError
from lceval.api.prompting import stop_token_ids
from lceval.api.task import PromptContext
from lceval.backends.openai import OpenAIBackend
from lceval.http.client import ApiClient, parse_base_urls
from lceval.running.config import RunConfig
from lceval.running.runner import execute
from lceval.tasks.judge import parse_rating

KEY = "sk-lceval-test-5f0c2d9e7b"
KEY_ENV = "LCEVAL_TEST_SERVER_KEY"
PROMPTS = [[0, *range(10, 10 + n)] for n in (30, 75, 140)]
GRID = {"lengths": [256, 1024, 1984], "depths": [0, 50, 100], "max_new_tokens": 24}


def run_all(backend, requests):
    results = dict(backend.generate(requests))
    return [results[i] for i in range(len(requests))]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- fast checks: no server -------------------------------------------------------------------------------------


def test_base_urls_accept_repeats_comma_lists_and_v1():
    assert parse_base_urls(["http://a:1/v1/", "http://b:2,http://a:1"]) == ["http://a:1", "http://b:2"]
    assert parse_base_urls("http://a:1") == ["http://a:1"]


def test_judge_rating_is_the_first_double_bracket_integer_from_1_to_10():
    assert parse_rating("Short and right. Rating: [[7]]") == 7
    assert parse_rating("[[10]] then [[3]]") == 10
    assert parse_rating("Rating: 7") is None  # a bare number, as LangChain's parser also refuses
    assert parse_rating("[[11]]") is None and parse_rating("[[7.5]]") is None and parse_rating("") is None


def test_a_dead_url_is_one_sentence_naming_it(demo_model):
    url = f"http://127.0.0.1:{free_port()}"
    settings = BackendSettings(model_path=demo_model, max_length=2048, extra={"base_urls": [url], "max_retries": 0})
    with pytest.raises(UserError, match=f"no OpenAI-compatible server answers at {url}"):
        OpenAIBackend(settings)


def test_a_run_whose_server_is_dead_leaves_no_empty_run_folder(demo_model, lceval_cmd, cli_env, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "openai", "--base-url", url,
                           "--max-retries", "0", "--out", str(tmp_path), "--run-id", "dead"], env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and f"no OpenAI-compatible server answers at {url}" in proc.stderr
    assert not (tmp_path / "dead").exists()


# -- real servers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(demo_model, tmp_path_factory) -> Path:
    return make_lora_adapter(demo_model, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def servers(demo_model, adapter, tmp_path_factory):
    """Both servers start now and are waited for on first use, so their start overlaps the in-process engine's."""
    logs = tmp_path_factory.mktemp("server-logs")
    os.environ[KEY_ENV] = KEY
    started = SimpleNamespace(
        main=VLLMServer(demo_model, logs / "main.log", lora={"tiny": adapter, adapter.name: adapter}, api_key=KEY),
        spare=VLLMServer(demo_model, logs / "spare.log", api_key=KEY),
    )
    yield started
    started.main.stop()
    started.spare.stop()
    os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def server(servers) -> str:
    return servers.main.ready()


def open_backend(demo_model: Path, urls: list[str], **extra) -> OpenAIBackend:
    settings = BackendSettings(model_path=demo_model, max_length=2048,
                               extra={"base_urls": urls, "api_key_env": KEY_ENV, "max_retries": 1, **extra})
    return OpenAIBackend(settings)


@pytest.fixture(scope="module")
def backend(server, demo_model):
    opened = open_backend(demo_model, [server])
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def hf_backend(demo_model):
    from lceval.backends.hf import HFBackend

    return HFBackend(BackendSettings(model_path=demo_model, max_length=2048, batch_size=1))


@pytest.fixture(scope="module")
def needle_requests(demo_model, demo_tokenizer) -> list[GenerationRequest]:
    from lceval.tasks.needle import NeedleTask

    stops = stop_token_ids(demo_tokenizer, generation_eos(demo_model))
    ctx = PromptContext(demo_tokenizer, window=2048, stop_token_ids=stops, chat_template=True)
    samples = NeedleTask(GRID).build_samples(ctx)
    return [GenerationRequest(s.prompt_ids, s.max_new_tokens, tuple(stops)) for s in samples]


@pytest.mark.slow
def test_generation_equals_the_hf_backend_token_for_token(backend, hf_backend, needle_requests):
    served, local = run_all(backend, needle_requests), run_all(hf_backend, needle_requests)
    assert [g.token_ids for g in served] == [g.token_ids for g in local]
    assert [g.text for g in served] == [g.text for g in local]
    assert [g.finish_reason for g in served] == [g.finish_reason for g in local]
    assert all(g.token_ids for g in served)


@pytest.mark.slow
def test_stop_ids_end_generation_and_min_tokens_suppresses_them(backend, hf_backend):
    free = run_all(backend, [GenerationRequest(PROMPTS[1], 12)])[0].token_ids
    stop = free[3]
    stopped = run_all(backend, [GenerationRequest(PROMPTS[1], 12, (stop,))])[0]
    assert stopped.finish_reason == "stop" and stopped.token_ids == free[: free.index(stop)]
    # Before min_new_tokens a stop id cannot be chosen at all (vLLM's min_tokens, transformers' min_new_tokens).
    late = [GenerationRequest(PROMPTS[1], 12, (stop,), min_new_tokens=5)]
    served, local = run_all(backend, late)[0], run_all(hf_backend, late)[0]
    assert (served.token_ids, served.finish_reason) == (local.token_ids, local.finish_reason)
    assert stop not in served.token_ids[:5] and served.token_ids[:3] == free[:3]


@pytest.mark.slow
def test_loglikelihood_agrees_across_hf_vllm_and_openai(servers, demo_model, hf_backend, vllm_backend):
    """On the spare server: vLLM 0.32 on CPU crashes on prompt logprobs when started with --enable-lora."""
    greedy = run_all(hf_backend, [GenerationRequest(PROMPTS[0], 3)])[0].token_ids
    requests = [LoglikelihoodRequest(PROMPTS[0], greedy),  # the model's own greedy answer
                LoglikelihoodRequest(PROMPTS[1], [17, 250, 3]),
                LoglikelihoodRequest(PROMPTS[2][:500], [900])]
    backend = open_backend(demo_model, [servers.spare.ready()])
    try:
        served = backend.loglikelihood(requests)
    finally:
        backend.close()
    local, engine = hf_backend.loglikelihood(requests), vllm_backend.loglikelihood(requests)
    for a, b, c in zip(served, local, engine, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3) and a.logprob == pytest.approx(c.logprob, abs=1e-3)
        assert a.is_greedy == b.is_greedy == c.is_greedy
    assert served[0].is_greedy and not served[1].is_greedy


@pytest.mark.slow
def test_lora_module_by_name_changes_outputs_as_peft_does(server, demo_model, adapter, backend):
    from lceval.backends.hf import HFBackend

    requests = [GenerationRequest(p, 8) for p in PROMPTS]
    adapted_backend = open_backend(demo_model, [server], served_adapter="tiny")
    try:
        adapted = run_all(adapted_backend, requests)
        assert adapted_backend.identity()["served_adapter"] == "tiny"
    finally:
        adapted_backend.close()
    assert [g.token_ids for g in adapted] != [g.token_ids for g in run_all(backend, requests)]
    peft = HFBackend(BackendSettings(model_path=demo_model, max_length=2048, adapter_path=adapter, adapter_rank=16))
    assert [g.token_ids[0] for g in run_all(peft, requests)] == [g.token_ids[0] for g in adapted]


@pytest.mark.slow
def test_startup_checks_are_one_sentence(server, demo_model, monkeypatch):
    monkeypatch.setenv("LCEVAL_WRONG_KEY", "sk-wrong")
    with pytest.raises(UserError, match="refused the API key"):
        open_backend(demo_model, [server], api_key_env="LCEVAL_WRONG_KEY")
    monkeypatch.delenv("LCEVAL_UNSET_KEY", raising=False)
    with pytest.raises(UserError, match="LCEVAL_UNSET_KEY .* is not set"):
        open_backend(demo_model, [server], api_key_env="LCEVAL_UNSET_KEY")
    with pytest.raises(UserError, match=f"does not serve model 'nope'; it serves {demo_model}, tiny"):
        open_backend(demo_model, [server], served_model="nope")
    with pytest.raises(UserError, match="serves no LoRA module 'other'; start it with --enable-lora"):
        open_backend(demo_model, [server], served_adapter="other")
    settings = BackendSettings(model_path=demo_model, max_length=4096, extra={"base_urls": [server],
                                                                              "api_key_env": KEY_ENV})
    with pytest.raises(UserError, match="window of 2048 tokens, less than the run's 4096; restart it with "
                                        "--max-model-len 4096"):
        OpenAIBackend(settings)


def test_yaml_base_url_may_be_one_string_and_served_adapter_needs_an_adapter(tmp_path):
    from lceval.backends.openai import served_adapter_name, settings_extra
    from lceval.running.config import build_config

    config = tmp_path / "run.yaml"
    config.write_text("backend: openai\nbackend_options: {base_url: 'http://a:8000,http://b:8000', concurrency: 2}\n")
    cfg = build_config(config, {}, [])
    assert settings_extra(cfg)["base_urls"] == ["http://a:8000", "http://b:8000"]
    assert settings_extra(cfg)["concurrency"] == 2
    assert served_adapter_name(RunConfig(backend="openai", adapter="tiny")) == "tiny"
    with pytest.raises(UserError, match="pass it to --adapter instead"):
        served_adapter_name(RunConfig(backend="openai", backend_options={"served_adapter": "tiny"}))


def test_server_settings_are_the_backends_own_options(tmp_path):
    """The server flags, -M and a config file's backend_options: reach the same options; the backend checks them,
    and the addresses and client settings stay out of the fingerprint, so that a run resumes on other servers."""
    from lceval.running.config import build_config
    from lceval.running.runner import _run_settings

    by_flag = build_config(None, {"backend": "openai"}, [], [], {"base_url": ["http://a:1"], "openai_api": "chat"})
    by_pair = build_config(None, {"backend": "openai"}, [], ["base_url=http://a:1", "openai_api=chat"])
    assert by_flag.backend_options == {"base_url": ["http://a:1"], "openai_api": "chat"}
    assert by_pair.backend_options == {"base_url": "http://a:1", "openai_api": "chat"}
    assert _run_settings(by_flag, 2048, [])["backend_options"] == {"openai_api": "chat"}
    with pytest.raises(UserError, match="^-M concurrency 0 must be a whole number, 1 or more"):
        build_config(None, {"backend": "openai"}, [], ["concurrency=0"])
    with pytest.raises(UserError, match="^-M retries is not an option of backend openai; its options: api_key_env"):
        build_config(None, {"backend": "openai"}, [], ["retries=2"])
    with pytest.raises(UserError, match="^-M base_url applies to --backend openai, not hf"):
        build_config(None, {"backend": "hf"}, [], ["base_url=http://a:1"])
    config = tmp_path / "run.yaml"
    config.write_text("backend: openai\nbase_url: http://a:1\n")
    with pytest.raises(UserError, match="base_url is an option of --backend openai; put it under backend_options"):
        build_config(config, {}, [])


@pytest.mark.slow
def test_cli_run_on_a_served_adapter_beside_a_dead_url_completes_and_keeps_the_key_out(
        server, tmp_path, cli_env, lceval_cmd):
    dead = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "openai", "--base-url",
                           f"{dead},{server}/v1", "--adapter", "tiny", "--api-key-env", KEY_ENV, "--max-retries", "1",
                           "-o", "needle.lengths=[256,512]", "-o", "needle.depths=[0,50,100]",
                           "--out", str(tmp_path), "--run-id", "cli"],
                          env={**cli_env, KEY_ENV: KEY}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"no answer from {dead}" in " ".join(proc.stderr.split())
    run_dir = tmp_path / "cli"
    assert sorted(r["id"] for r in lines(run_dir / "samples.jsonl")) == \
        sorted([f"L{n}-D{d}" for n in (256, 512) for d in (0, 50, 100)] + ["control-256", "control-512"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["adapter"] is None and manifest["served_adapter"] == "tiny"
    identity = manifest["backend"]
    assert identity["base_urls"] == [dead, server] and identity["unreachable_at_start"] == [dead]
    assert identity["served_adapter"] == "tiny" and identity["versions"]["server"] == ["0.32.0"]
    assert (identity["concurrency"], identity["max_retries"], identity["request_timeout"]) == (8, 1, 600.0)
    assert identity["api_key_env"] == KEY_ENV
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), f"the API key was written to {file.name}"


@pytest.mark.slow
def test_a_local_adapter_folder_is_hashed_and_served_under_its_name(server, adapter, tmp_path, backend):
    from rich.console import Console

    from lceval.running.runner import execute

    cfg = RunConfig(model="lceval-demo", tasks=["needle"], out=str(tmp_path), run_id="folder", backend="openai",
                    adapter=str(adapter), backend_options={"base_url": [server], "api_key_env": KEY_ENV},
                    task_options={"needle": {"lengths": [256], "depths": [0]}})
    run_dir = execute(cfg, Console(stderr=True))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["adapter"]["sha256"] and manifest["served_adapter"] == adapter.name
    assert manifest["backend"]["served_adapter"] == adapter.name
    assert manifest["backend"]["served_adapter_root"] == str(adapter)
    assert manifest["fingerprint"]["served_adapter"] is None  # the folder's hash says which adapter it was


@pytest.mark.slow
def test_pending_requests_move_to_the_other_server_when_one_dies(server, demo_model, needle_requests, backend):
    """A server that vanishes mid-run (connections reset, then refused) hands its requests to the live one."""
    reference = [g.token_ids for g in run_all(backend, needle_requests)]
    proxy = TcpProxy(int(server.rsplit(":", 1)[1]))
    pair = open_backend(demo_model, [proxy.url, server], concurrency=1)
    try:
        results = {}
        for index, generation in pair.generate(needle_requests):
            results[index] = generation.token_ids
            if len(results) == 2:
                proxy.close()
        assert pair.clients[0].down and not pair.clients[1].down
    finally:
        pair.close()
        proxy.close()
    assert [results[i] for i in range(len(needle_requests))] == reference


@pytest.mark.slow
def test_chat_api_fallback_generates_and_refuses_a_second_template(server, demo_model):
    with pytest.raises(UserError, match="--no-chat-template"):
        open_backend(demo_model, [server], openai_api="chat", chat_template=True)
    chat = open_backend(demo_model, [server], openai_api="chat", chat_template=False)
    try:
        generations = run_all(chat, [GenerationRequest(p, 6, (4,)) for p in PROMPTS[:2]])
        assert all(g.text == decode(chat.tokenizer, g.token_ids) for g in generations)
        with pytest.raises(UserError, match="completions API"):
            chat.loglikelihood([LoglikelihoodRequest(PROMPTS[0], [5])])
    finally:
        chat.close()


@pytest.mark.slow
def test_judge_asks_with_gkamradt_rubric_and_records_an_unparsable_reply_as_missing(
        server, backend, tmp_path, monkeypatch):
    from rich.console import Console

    from lceval.running.runner import execute

    asked: list[tuple[dict, dict]] = []
    original = ApiClient.request

    async def spy(self, method, path, body=None):  # the real request, recorded
        answer = await original(self, method, path, body)
        if path == "/v1/chat/completions":
            asked.append((body, answer))
        return answer

    monkeypatch.setattr(ApiClient, "request", spy)
    options = {"lengths": [256], "depths": [0, 100], "judge_url": server, "judge_api_key_env": KEY_ENV}
    cfg = RunConfig(model="lceval-demo", tasks=["needle"], out=str(tmp_path), run_id="judge", backend="openai",
                    backend_options={"base_url": [server], "api_key_env": KEY_ENV}, task_options={"needle": options})
    run_dir = execute(cfg, Console(stderr=True), backend=backend)
    records = lines(run_dir / "samples.jsonl")
    assert len(asked) == len(records) == 3  # 2 cells and the no-needle control
    for body, _ in asked:
        system, user = body["messages"]
        assert system == {"role": "system", "content": "You are a helpful assistant."}
        assert "accuracy:Score 1: The answer is completely unrelated to the reference." in user["content"]
        assert "Only respond with a numberical score\n[Ground truth]\nThe best thing to do in San Francisco" \
            in user["content"]
        assert body["temperature"] == 0.0
    by_output = {r["output"]: r for r in records}
    for body, answer in asked:
        answered = body["messages"][1]["content"].split("[The Start of Assistant's Answer]\n")[1]
        output = answered.rsplit("\n[The End", 1)[0]
        rating = parse_rating(answer["choices"][0]["message"]["content"])
        assert by_output[output]["scores"]["judge"] == (None if rating is None else rating / 10)
    results = json.loads((run_dir / "results.json").read_text())
    assert "judge" in results["tasks"]["needle"]["metrics"]


@pytest.mark.slow
def test_topic_passkey_and_mmlu_answer_alike_on_hf_vllm_and_openai(servers, demo_model, vllm_backend, tmp_path):
    """The issue's done-means: the three tasks on every backend, offline, on the project's own fixtures."""
    from rich.console import Console

    quiet = Console(file=io.StringIO())
    tasks = ["topic", "passkey", "mmlu"]
    outputs = {}
    served = open_backend(demo_model, [servers.spare.ready()])
    try:
        for name, lent in (("hf", None), ("vllm", vllm_backend), ("openai", served)):
            cfg = RunConfig(model="lceval-demo", tasks=tasks, backend=name, out=str(tmp_path), run_id=name, limit=4)
            run_dir = execute(cfg, quiet, backend=lent)
            outputs[name] = {(r["task"], r["id"]): r["output"] for r in lines(run_dir / "samples.jsonl")}
    finally:
        served.close()
    assert len(outputs["hf"]) == 12
    assert outputs["openai"] == outputs["hf"] == outputs["vllm"]


@pytest.mark.slow
def test_killed_server_fails_the_run_then_a_rerun_completes_without_loss_or_repeats(
        servers, server, tmp_path, cli_env, lceval_cmd):
    spare = servers.spare.ready()
    env = {**cli_env, KEY_ENV: KEY}
    grid = ["-o", "needle.lengths=[256,512,768,1024,1280,1536,1792,1984]", "-o", "needle.depths=[0,25,50,75,100]",
            "-o", "needle.max_new_tokens=48"]
    common = [*lceval_cmd, "run", "--model", "lceval-demo", "--backend", "openai", "--api-key-env", KEY_ENV,
              "--max-retries", "1", *grid, "--out", str(tmp_path), "--run-id", "killed"]
    samples = tmp_path / "killed" / "samples.jsonl"
    proc = subprocess.Popen([*common, "--base-url", spare, "--concurrency", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and len(samples.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the server could be killed; enlarge the grid"
    servers.spare.kill()
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 2, stderr[-3000:]
    message = " ".join(stderr.split())
    assert f"no server is left to answer ({spare}" in message and "rerun with the same --run-id" in message
    assert "Traceback" not in stderr
    done_before = len(lines(samples))
    total = 8 * 5 + 8  # the cells and a no-needle control per length
    assert 3 <= done_before < total

    resumed = subprocess.run([*common, "--base-url", server, "--served-model", str(servers.main.model)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{done_before} samples already done" in resumed.stderr
    ids = [r["id"] for r in lines(samples)]
    assert len(ids) == len(set(ids)) == total
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["sessions"][-1]["samples_run"] == total - done_before
