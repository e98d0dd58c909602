"""`lceval run --adapter none,A,B`: several checkpoints in one engine start, one run folder each, exactly as
separate runs write them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from lceval.api.errors import UserError
from lceval.running.config import RunConfig
from lceval.running.runner import checkpoint_configs, execute, execute_checkpoints

# Written at different times or by another engine start: everything else of a manifest must be equal.
VOLATILE = {"created_at", "finished_at", "sessions"}
GRID = {"passkey": {"lengths": [256, 512], "depths": [0, 50]}}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=300)


@pytest.fixture(scope="module")
def adapters(demo_model, tmp_path_factory) -> list[Path]:
    from openai_server import make_lora_adapter

    root = tmp_path_factory.mktemp("checkpoints")
    return [make_lora_adapter(demo_model, root / f"step-{seed}00", seed=seed) for seed in (1, 2)]


def outputs(run_dir: Path) -> list[tuple[str, list[int] | str]]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["id"], r["output"]) for r in rows)


def scores(run_dir: Path) -> dict:
    """results.json but its cost (times)."""
    return {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items() if k != "cost"}


def comparable(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"] = {k: v for k, v in manifest["config"].items() if k not in ("out", "run_id")}  # as given
    return {k: v for k, v in manifest.items() if k not in VOLATILE}


def check_same_as_separate_runs(tmp_path: Path, adapters: list[Path], backend: str) -> list[Path]:
    spec = ",".join(["none", *map(str, adapters)])
    shared = RunConfig(model="lceval-demo", adapter=spec, tasks=["passkey"], backend=backend,
                       out=str(tmp_path / "shared"), task_options=GRID)
    log = io.StringIO()
    folders = execute_checkpoints(shared, Console(file=log, width=300))
    assert log.getvalue().count("checkpoint ") == 3  # one engine, three checkpoints
    assert len({f.name for f in folders}) == 3
    assert folders[1].name.startswith("lceval-demo+step-100-passkey-")
    for one, folder in zip(checkpoint_configs(shared), folders, strict=True):
        alone = execute(RunConfig(**{**one.to_dict(), "out": str(tmp_path / "alone"), "run_id": folder.name}),
                        quiet())
        assert outputs(folder) == outputs(alone)
        assert scores(folder) == scores(alone)
        mine, theirs = comparable(folder), comparable(alone)
        if one.adapter is None and backend == "vllm":
            # The one difference: the model alone was served by an engine started with LoRA on, and says so.
            lora = {"enable_lora": True, "max_loras": 1, "max_lora_rank": 16}
            assert {k: mine["backend"]["engine_args"].pop(k) for k in lora} == lora
        assert json.loads(json.dumps(mine).replace(str(tmp_path / "shared"), "OUT")) == \
            json.loads(json.dumps(theirs).replace(str(tmp_path / "alone"), "OUT"))
    assert len({str(outputs(f)) for f in folders}) == 3  # each checkpoint answered as itself
    sessions = [json.loads((f / "manifest.json").read_text())["sessions"][-1]["cost"] for f in folders]
    assert sessions[0]["engine_start_s"] > 0 and sessions[1]["engine_start_s"] is None
    return folders


@pytest.mark.slow
def test_hf_runs_each_checkpoint_in_one_engine_as_separate_runs_would(tmp_path, adapters, offline):
    check_same_as_separate_runs(tmp_path, adapters, "hf")


@pytest.mark.slow
def test_vllm_runs_each_checkpoint_in_one_engine_as_separate_runs_would(tmp_path, adapters, offline):
    check_same_as_separate_runs(tmp_path, adapters, "vllm")


def test_a_comma_list_is_one_run_per_checkpoint():
    cfg = RunConfig(model="lceval-demo", adapter="none, a ,b")
    assert [c.adapter for c in checkpoint_configs(cfg)] == [None, "a", "b"]
    assert checkpoint_configs(RunConfig(adapter="a")) == [RunConfig(adapter="a")]


@pytest.mark.parametrize(("adapter", "run_id", "says"), [
    ("a,,b", None, "has an empty item"),
    ("a,b,a", None, "names a checkpoint twice"),
    ("none,a", "mine", "--run-id mine names one run folder"),
])
def test_a_bad_checkpoint_list_is_refused_in_one_sentence(adapter, run_id, says):
    with pytest.raises(UserError, match=says):
        checkpoint_configs(RunConfig(adapter=adapter, run_id=run_id))


def test_checkpoints_that_need_different_engines_are_refused_before_any_work(tmp_path, adapters, offline):
    """An adapter lceval trained records its RoPE; the model alone has another, so one engine cannot serve both."""
    trained = tmp_path / "trained"
    trained.mkdir()
    for file in adapters[0].iterdir():
        (trained / file.name).write_bytes(file.read_bytes())
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 160000.0}, "max_position_embeddings": 4096}
    (trained / "lceval_training.json").write_text(json.dumps({"rope": rope}))
    cfg = RunConfig(model="lceval-demo", adapter=f"none,{trained}", tasks=["passkey"], backend="hf",
                    out=str(tmp_path / "runs"), task_options=GRID)
    with pytest.raises(UserError, match="one engine cannot serve both"):
        execute_checkpoints(cfg, quiet())
    assert not (tmp_path / "runs").exists()
