"""Checks on a model folder before any engine starts: its code, its architecture, its weights.

- Code: `auto_map` in config.json or tokenizer_config.json names Python files shipped with the model; without
  --trust-remote-code lceval refuses the model rather than run it with another class than its authors meant
  (transformers itself silently falls back to its own tokenizer class there, loading none of that code).
- Architecture: lceval generates text, so the checkpoint must be a causal language model that the backend can
  load (transformers' AutoModelForCausalLM; for vLLM also one of its text-generation architectures).
- Weights: every safetensors file's header must read and cover the file (a truncated or corrupt download is
  named), every shard a sharded checkpoint's index lists must exist, and .bin files must be whole zip archives.
"""

from __future__ import annotations

import zipfile
from functools import cache
from pathlib import Path

from lceval.api.errors import UserError
from lceval.api.files import read_json

REMOTE_CODE_CONFIGS = ("config.json", "tokenizer_config.json")
LOCAL_MODEL_BACKENDS = ("auto", "hf", "vllm")  # backends that load the weights of the local folder


def remote_code_configs(path: Path) -> list[str]:
    """The config files of a model folder that name code of their own (auto_map)."""
    found = []
    for name in REMOTE_CODE_CONFIGS:
        file = Path(path) / name
        if file.is_file():
            data = read_json(file)
            if isinstance(data, dict) and data.get("auto_map"):
                found.append(name)
    return found


def check_remote_code(path: Path, spec: str, trust_remote_code: bool) -> None:
    found = remote_code_configs(path)
    if found and not trust_remote_code:
        raise UserError(f"model {spec} ships its own code (auto_map in {' and '.join(found)}); "
                        "pass --trust-remote-code only if you trust it.")


@cache
def _causal_names() -> tuple[frozenset[str], frozenset[str]]:
    """transformers' causal-LM architectures and model types (AutoModelForCausalLM's mapping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return frozenset(names), frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _vllm_generative() -> frozenset[str] | None:
    """vLLM's text-generation architectures (None where vLLM or its registry cannot be read)."""
    try:
        from vllm.model_executor.models import registry
    except Exception:
        return None
    names = set(getattr(registry, "_TEXT_GENERATION_MODELS", {})) | set(getattr(registry, "_MULTIMODAL_MODELS", {}))
    return frozenset(names) or None


def check_architecture(path: Path, spec: str, backend: str, trust_remote_code: bool) -> None:
    """A causal language model the backend can load, or one sentence naming what the checkpoint is."""
    config = read_json(Path(path) / "config.json")
    if not isinstance(config, dict):
        raise UserError(f"{Path(path) / 'config.json'} is not a JSON object; is it a transformers config?")
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type") or "")
    if trust_remote_code and "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return  # the model's own code says it is a causal LM
    causal_archs, causal_types = _causal_names()
    what = f"{archs[0]} ({model_type})" if archs else f"model type {model_type!r}"
    if (archs and not any(a in causal_archs for a in archs)) or (not archs and model_type not in causal_types):
        raise UserError(f"model {spec} is a {what}, not a causal language model; lceval generates text, so pass "
                        "a checkpoint that transformers opens with AutoModelForCausalLM.")
    if backend == "vllm" and archs:
        supported = _vllm_generative()
        if supported is not None and not any(a in supported for a in archs):
            raise UserError(f"vLLM cannot generate with model {spec} ({archs[0]}); use --backend hf.")


def check_weights(path: Path, spec: str) -> None:
    """Every weights file of the folder readable: safetensors headers, shards of an index, .bin zip archives."""
    path = Path(path)
    from safetensors import safe_open

    for index in sorted(path.glob("*.index.json")):
        data = read_json(index)
        shards = sorted(set((data.get("weight_map") or {}).values())) if isinstance(data, dict) else []
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise UserError(f"model {spec}: {index.name} lists the weights file {missing[0]}, which {path} lacks; "
                            "download the checkpoint again.")
    tensors = sorted(path.glob("*.safetensors"))
    pickles = sorted(path.glob("*.bin"))
    pickles = [p for p in pickles if p.name not in ("training_args.bin",)]
    if not tensors and not pickles:
        raise UserError(f"model folder {path} holds no weights (*.safetensors or *.bin); download the whole "
                        "checkpoint.")
    for file in tensors:
        try:
            with safe_open(str(file), "pt") as handle:
                handle.keys()
        except Exception as err:  # SafetensorError, OSError: the message says what is wrong with the header
            raise UserError(f"weights file {file} cannot be read ({str(err).strip() or type(err).__name__}); it is "
                            "corrupt or truncated, so download it again.") from None
    for file in pickles:
        try:
            with file.open("rb") as handle:
                head = handle.read(4)
            if not head:
                raise zipfile.BadZipFile("an empty file")
            if head.startswith(b"PK"):  # torch's zip format: the archive's directory (at its end) must read
                with zipfile.ZipFile(file) as archive:
                    archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"weights file {file} cannot be read ({err}); it is corrupt or truncated, so download "
                            "it again.") from None


def check_model(path: Path, spec: str, backend: str, trust_remote_code: bool) -> None:
    """Everything about a local model folder that would otherwise fail inside an engine, before it starts."""
    check_remote_code(path, spec, trust_remote_code)
    if backend not in LOCAL_MODEL_BACKENDS or not (Path(path) / "config.json").is_file():
        return  # openai and plugin backends: the local folder serves the tokenizer only
    check_architecture(path, spec, backend, trust_remote_code)
    check_weights(path, spec)
