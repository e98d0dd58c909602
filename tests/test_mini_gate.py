"""lceval-mini's shipped pair through the gate, as CI would gate a checkpoint: a fresh run of the extended model passes
against its committed baseline (results/baselines/mini/extended), and the same policy rejects damaged checkpoints:
the base model, and the extended adapter served on the base with the base's original RoPE (the paper's method with
its RoPE change left out). Each run is the baseline's own config on the hf backend (a minute or two each)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lceval.models import CHECKPOINTS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "results" / "baselines" / "mini" / "extended"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mini-gate")


def _run(root: Path, run_id: str, cmd, env, *extra: str) -> Path:
    proc = subprocess.run([*cmd, "run", "--config", str(BASELINE / "run.yaml"), "--out", str(root), "--run-id",
                           run_id, *extra], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / run_id


def _gate(candidate: Path, cmd, env, verdict: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "gate", "--baseline", str(BASELINE), "--candidate", str(candidate), "--policy",
                           str(BASELINE / "gate.yaml"), "--json", str(verdict)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_shipped_extended_model_passes_against_its_committed_baseline(runs, lceval_cmd, cli_env, tmp_path):
    candidate = _run(runs, "extended", lceval_cmd, cli_env)
    proc = _gate(candidate, lceval_cmd, cli_env, tmp_path / "verdict.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["n_checks"] >= 3 and verdict["verdict"] == "pass"


@pytest.mark.parametrize("damage", ["base-model", "adapter-with-original-rope"])
def test_a_damaged_checkpoint_is_rejected(damage, runs, lceval_cmd, cli_env, tmp_path):
    if damage == "base-model":
        extra = ["--model", "mini-base"]
    else:  # the extended stage's adapter on the base, with the base's RoPE base 10,000 instead of 160,000
        extra = ["--model", "mini-base", "--adapter", str(CHECKPOINTS / "mini-extended-adapter"),
                 "--rope-theta", "10000", "--max-length", "3840"]
    candidate = _run(runs, damage, lceval_cmd, cli_env, *extra)
    proc = _gate(candidate, lceval_cmd, cli_env, tmp_path / "verdict.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["verdict"] == "fail"
    failed = {check["task"] for check in verdict["checks"] if not check["passed"]}
    assert {"needle", "passkey"} <= failed, verdict
