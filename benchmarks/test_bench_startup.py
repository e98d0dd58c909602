"""How long `lceval` takes to start for commands that need no model (tests/test_startup.py checks that they import
no engine: torch, vLLM, transformers, lm-eval).

Run: python -m pytest benchmarks/test_bench_startup.py --benchmark-only
"""

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def env(demo_model):
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")


@pytest.mark.parametrize("args", [["--help"], ["tasks"], ["models"]], ids=["help", "tasks", "models"])
def test_cli_start(benchmark, env, args):
    def start():
        proc = subprocess.run([sys.executable, "-m", "lceval", *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]

    benchmark.pedantic(start, rounds=5, warmup_rounds=1)
