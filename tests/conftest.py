"""Shared fixtures: the demo model is built once per session; a vLLM engine is started once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lceval_cache(tmp_path_factory) -> Path:
    """One cache for the whole session (and for CLI subprocesses), so the demo model is built once."""
    path = Path(os.environ.get("LCEVAL_TEST_CACHE") or tmp_path_factory.mktemp("lceval-cache"))
    os.environ["LCEVAL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_model(lceval_cache) -> Path:
    from lceval.running.demo import demo_model_path

    return demo_model_path()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)


@pytest.fixture(scope="session")
def cli_env(lceval_cache) -> dict[str, str]:
    """Environment of `lceval` subprocesses: the shared cache, offline, and no terminal size.

    Rich sizes its output from COLUMNS; without it the output does not depend on the caller's terminal (CI pipes
    stderr and has no COLUMNS, which is the case the one-line error checks are about).
    """
    env = dict(os.environ)
    env.update(LCEVAL_CACHE=str(lceval_cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def offline(lceval_cache):
    """In-process CLI tests: offline, with the shared cache, and no terminal size (as the subprocesses see it)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():
            patch.setenv(key, value)
        patch.delenv("COLUMNS", raising=False)
        yield


@pytest.fixture(scope="session")
def lceval_cmd() -> list[str]:
    return [sys.executable, "-m", "lceval"]


@pytest.fixture(scope="session")
def vllm_backend(demo_model):
    """One real vLLM CPU engine on the demo model, shared by every test that needs one."""
    from lceval.api.backend import BackendSettings
    from lceval.backends.vllm import VLLMBackend

    backend = VLLMBackend(BackendSettings(model_path=demo_model, max_length=2048))
    yield backend
    backend.close()


# ------------------------------------------------------------------------------------------------------- lanes
# Three lanes, said by what a test uses: `-m "not slow and not model"` (the quick lane: no model, no engine, no
# subprocess), `-m model` (the demo model or another tiny model, in-process) and `-m slow` (vLLM engines, servers,
# `lceval` subprocesses, training). A test that needs a model or a process through these fixtures is marked here; a
# test that builds one itself carries the marker in its file.
PROCESS_FIXTURES = frozenset({"lceval_cmd", "cli_env", "vllm_backend"})
MODEL_FIXTURES = frozenset({"demo_model", "demo_tokenizer"})


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & PROCESS_FIXTURES:
            item.add_marker(pytest.mark.slow)
        elif used & MODEL_FIXTURES and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.model)
