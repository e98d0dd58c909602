"""Models known by name (lceval.models): lceval-mini's two packaged checkpoints, found or said missing in one
sentence with the command that rebuilds them; their shared default grid; and the run settings a named model brings
(`run_defaults`), which any setting the user gave (flag or config file) overrides and the manifest records.

No lceval-mini checkpoint is needed: CHECKPOINTS is pointed at a temporary folder. The one plan (no engine) runs a
stand-in named model on the demo's files."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest
from rich.console import Console

from lceval import cli, models
from lceval.api.errors import UserError
from lceval.cli import catalog
from lceval.models import NamedModel, locate, named_model
from lceval.running.config import RunConfig, build_config
from lceval.running.runner import _backend_settings, _make_tasks, model_run_defaults, plan

REPO = Path(__file__).resolve().parents[1]
MINI = ("mini-base", "mini-extended")


@pytest.fixture
def no_checkpoints(monkeypatch, tmp_path) -> Path:
    """An install without lceval-mini's checkpoints: CHECKPOINTS is an empty folder."""
    monkeypatch.setattr(models, "CHECKPOINTS", tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------------- the mini entries


def test_both_mini_models_are_named_with_one_shared_grid():
    base, extended = (named_model(name) for name in MINI)
    assert base.task_options is extended.task_options is models.MINI_GRID
    lengths = [192, 320, 768, 1536, 2304, 3072, 3776]
    assert models.MINI_GRID == {
        "needle": {"lengths": lengths, "num_depths": 5, "max_new_tokens": 64},
        "passkey": {"lengths": lengths, "num_depths": 5},
        "topic": {"counts": [1, 2, 4, 8, 16], "cases": 5, "min_exchanges": 0, "max_exchanges": 0,
                  "max_new_tokens": 24},
    }
    assert base.run_defaults == {"max_length": 3840, "rope_theta": 10000.0} and extended.run_defaults == {}
    assert not base.built and not extended.built and named_model("lceval-demo").built


def test_the_mini_grid_fits_the_window_both_models_are_run_at():
    """mini-extended's window is 3840 tokens, and mini-base is run at 3840 by its run defaults."""
    assert named_model("mini-base").run_defaults["max_length"] == models.MINI_WINDOW == 3840
    for name in MINI:
        for task in _make_tasks(RunConfig(tasks=list(models.MINI_GRID)), named_model(name)):
            task.check_window(models.MINI_WINDOW)  # a length leaves room for the task's answer tokens


BUILD_BASE = "lceval train --recipe recipes/mini/base.yaml --output-dir out/mini-base"
REBUILD = {"mini-base": [BUILD_BASE],
           "mini-extended": [BUILD_BASE, "lceval train --recipe recipes/mini/extended.yaml --output-dir "
                             "out/mini-extended-adapter", "lceval export out/mini-extended-adapter --merge "
                             "--output-dir out/mini-extended"]}


@pytest.mark.parametrize("name", MINI)
def test_a_missing_checkpoint_is_none_and_locate_names_the_rebuild(no_checkpoints, name):
    model = named_model(name)
    assert model.locate() is None
    with pytest.raises(UserError) as err:
        locate(model)
    message = str(err.value)
    assert message.startswith(f"model {name} is not installed;") and "belongs in" in message
    assert all(command in message for command in REBUILD[name]) and "\n" not in message
    assert all(command in model.install for command in REBUILD[name])  # what `lceval models` shows


def test_a_shipped_checkpoint_is_its_folder_in_the_package(no_checkpoints):
    folder = no_checkpoints / "mini-extended"
    folder.mkdir()
    assert named_model("mini-extended").locate() is None  # a folder without config.json is not a checkpoint
    (folder / "config.json").write_text("{}")
    assert locate(named_model("mini-extended")) == folder
    assert named_model("mini-base").locate() is None


def test_the_checkpoints_folder_is_inside_the_package_and_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    assert models.CHECKPOINTS == Path(models.__file__).parent / "checkpoints"
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["lceval"] == "harness"
    assert "checkpoints/**/*" in setuptools["package-data"]["lceval.models"]


def test_models_looks_for_every_model_not_built_whichever_is_the_default(no_checkpoints, monkeypatch, capsys):
    """`lceval models` marks the default by name and looks for it like any other; only a built model is not
    looked for (lceval makes it on first use)."""
    monkeypatch.setattr(catalog, "DEFAULT_MODEL", "mini-extended")
    monkeypatch.delenv("COLUMNS", raising=False)
    looked: list[str] = []
    demo = models.NAMED_MODELS["lceval-demo"]
    monkeypatch.setitem(models.NAMED_MODELS, "lceval-demo", replace(demo, locate=lambda: looked.append("demo")))
    assert cli.run_cli(["models"]) == 0
    cells = [[cell.strip() for cell in line.split("│")[1:3]] for line in capsys.readouterr().out.splitlines()
             if line.count("│") > 2]
    installed = {name: state for name, state in cells if name}
    assert installed["mini-extended (default)"] == "no" and installed["mini-base"] == "no"
    assert installed["lceval-demo"] == "yes" and not looked


# ------------------------------------------------------------------------------------------------ run defaults


def test_every_run_default_is_a_setting_that_can_be_left_unset():
    """A run default applies where the setting is None; a setting with another default could never take it."""
    unset = {f.name for f in fields(RunConfig) if f.default is None and f.default_factory is MISSING}
    for model in models.NAMED_MODELS.values():
        assert set(model.run_defaults) <= unset, model.name


def test_run_defaults_fill_only_what_the_user_left_unset(tmp_path):
    base = named_model("mini-base")
    assert model_run_defaults(RunConfig(model="mini-base"), base) == {"max_length": 3840, "rope_theta": 10000.0}
    assert model_run_defaults(RunConfig(model="mini-base", max_length=512), base) == {"rope_theta": 10000.0}
    assert model_run_defaults(RunConfig(model="mini-base", max_length=512, rope_theta=5e4), base) == {}
    config = tmp_path / "run.yaml"
    config.write_text("model: mini-base\nrope_theta: 40000\n")
    assert model_run_defaults(build_config(config, {}, []), base) == {"max_length": 3840}  # a config file's too
    assert model_run_defaults(build_config(config, {"max_length": 1024}, []), base) == {}
    assert model_run_defaults(RunConfig(model="mini-extended"), named_model("mini-extended")) == {}
    assert model_run_defaults(RunConfig(model="/some/folder"), None) == {}


def test_run_defaults_do_not_apply_with_an_adapter():
    """An adapter's training record brings its RoPE and window; a model's default --rope-theta would override it."""
    assert model_run_defaults(RunConfig(model="mini-base", adapter="out/adapter"), named_model("mini-base")) == {}


STAND_IN = "test-stand-in"  # the demo's files with run defaults past its 2048-token window, as mini-base has


@pytest.fixture
def stand_in(monkeypatch, demo_model, offline) -> str:
    grid = {"needle": {"lengths": [256], "depths": [0], "max_new_tokens": 8}}
    model = NamedModel(STAND_IN, "the demo with run defaults", lambda: demo_model, "nothing", grid,
                       {"max_length": 4096, "rope_theta": 20000.0})
    monkeypatch.setitem(models.NAMED_MODELS, STAND_IN, model)
    return STAND_IN


def _plan(tmp_path: Path, **settings):
    cfg = RunConfig(tasks=["needle"], out=str(tmp_path / "runs"), run_id="r", backend="hf", **settings)
    return plan(cfg, Console(stderr=True), write=False)


def test_plan_runs_with_the_run_defaults_and_the_manifest_records_them(stand_in, tmp_path):
    p = _plan(tmp_path, model=stand_in)
    assert p.max_length == 4096 and p.config.rope_theta == 20000.0
    manifest = p.manifest
    assert manifest["max_length"] == 4096 and manifest["model"]["window"] == 2048
    assert manifest["config"]["max_length"] == 4096 and manifest["config"]["rope_theta"] == 20000.0
    assert manifest["fingerprint"]["max_length"] == 4096 and manifest["fingerprint"]["rope_theta"] == 20000.0
    assert manifest["run_defaults"] == {"max_length": 4096, "rope_theta": 20000.0}
    settings = _backend_settings(p)  # what the engine is opened with
    assert settings.max_length == 4096 and settings.rope_theta == 20000.0
    assert not (tmp_path / "runs").exists()


def test_plan_takes_the_user_s_settings_over_the_run_defaults(stand_in, tmp_path):
    p = _plan(tmp_path, model=stand_in, max_length=1024)
    assert p.max_length == 1024 and p.config.rope_theta == 20000.0
    assert p.manifest["config"]["max_length"] == 1024 and p.manifest["run_defaults"] == {"rope_theta": 20000.0}
    p = _plan(tmp_path, model=stand_in, max_length=1024, rope_theta=30000.0)
    assert p.manifest["fingerprint"]["rope_theta"] == 30000.0 and p.manifest["run_defaults"] == {}


def test_a_model_without_run_defaults_runs_as_before(demo_model, offline, tmp_path):
    p = _plan(tmp_path, model="lceval-demo", task_options={"needle": {"lengths": [256], "depths": [0]}})
    assert p.max_length == 2048 and p.config.max_length is None and p.manifest["run_defaults"] == {}
