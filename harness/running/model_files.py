"""Where a model, tokenizer and adapter live, what window they have, and their content hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError

# Files larger than this are hashed by size plus three 8 MiB windows (start, middle, end), so that
# hashing a 140 GB checkpoint does not dominate a run; the manifest records the method.
FULL_HASH_LIMIT = 64 * 2**20
_WINDOW = 8 * 2**20
TRAINING_RECORD = "lceval_training.json"  # what `lceval train` writes beside an adapter: base, RoPE, window, loss


@dataclass(frozen=True)
class ModelRef:
    """A model as the user named it and the local folder it resolved to."""

    spec: str
    path: Path
    revision: str | None = None
    gguf: dict[str, str] | None = None  # a GGUF model: the file it was read from and its sha256
    named: str | None = None  # a model lceval knows by name (lceval.models)


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and " " not in spec


def resolve_model(spec: str, revision: str | None = None) -> ModelRef:
    """A named model, a GGUF file (or a folder holding one), a local checkpoint folder as is, or a hub id through
    the hub cache (downloaded when the hub is reachable)."""
    from lceval.models import locate, named_model

    named = named_model(spec)
    path = locate(named) if named else Path(spec).expanduser()
    gguf = gguf_file(path)
    if gguf is not None:
        folder, record = gguf_folder(gguf)
        return ModelRef(spec, folder, revision, gguf=record, named=named and named.name)
    if named:
        return ModelRef(spec, path.resolve(), revision, named=named.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model folder {path} has no config.json; point --model at a transformers checkpoint.")
        return ModelRef(spec, path.resolve(), revision)
    if not _looks_like_hub_id(spec):
        raise UserError(f"model folder {path} does not exist; pass a local checkpoint folder or a hub id (org/name).")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(spec, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                                         "*.txt", "*.jinja", "*.tiktoken"])
    except Exception as err:
        raise UserError(
            f"model {spec!r} is not a local folder and could not be fetched from the hub ({type(err).__name__}); "
            "download it and pass its folder to --model."
        ) from err
    return ModelRef(spec, Path(local), revision or Path(local).name)


GGUF_RECORD = "lceval_gguf.json"  # beside a dequantised GGUF model: the file it came from and its sha256


def gguf_file(path: Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one .gguf of a folder without config.json."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path.resolve()
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise UserError(f"model folder {path} holds {len(found)} GGUF files; pass the one to run to --model.")
        if found:
            return found[0].resolve()
    return None


def gguf_folder(file: Path) -> tuple[Path, dict[str, str]]:
    """A transformers checkpoint folder for a GGUF file: dequantised once by transformers' GGUF loader (weights in
    float32, tokenizer and chat template from the file's metadata) into lceval's cache, keyed by the file's hash."""
    from lceval.running.demo import cache_dir

    sha = _file_digest(file, full=True)
    record = {"file": str(file), "sha256": sha}
    folder = cache_dir() / "gguf" / f"{file.stem}-{sha[:16]}"
    if (folder / GGUF_RECORD).exists():
        return folder, record
    import shutil
    import tempfile

    from rich.console import Console

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        with Console(stderr=True).status(f"dequantising {file.name} into {folder} (once)"):
            _dequantise(file, staging)
        (staging / GGUF_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, record


def _dequantise(file: Path, out: Path) -> None:
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError as err:
        raise UserError(f"reading {file} needs the `gguf` package; run `pip install gguf`.") from err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
    except Exception as err:  # transformers names what it cannot read (architecture, quantisation type, a bad file)
        raise UserError(f"transformers could not read the GGUF file {file} ({type(err).__name__}: {err}).") from err
    # The weights are dequantised in memory: save them as a plain checkpoint, not as a GGUF-quantised one.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (config.json, adapter_config.json); one sentence naming the file when it is not one."""
    from lceval.api import files

    data = files.read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; check the file.")
    return data


def model_window(path: Path) -> int:
    """The context window the checkpoint declares (max_position_embeddings)."""
    config = read_json(path / "config.json")
    window = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    if not window:
        raise UserError(f"{path / 'config.json'} declares no max_position_embeddings; pass --max-length.")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise UserError(f"{path / 'config.json'} declares max_position_embeddings {window!r}, not a whole number of "
                        "tokens; fix the file.")
    return window


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    rank: int
    base_model: str | None
    modules_to_save: tuple[str, ...]
    rope_parameters: dict[str, Any] | None = None  # the RoPE it was trained with (lceval train's record)
    trained_window: int | None = None


def read_adapter(spec: str) -> AdapterInfo:
    """A PEFT adapter folder: its rank and what else it trains (vLLM cannot serve modules_to_save)."""
    path = Path(spec).expanduser()
    config_file = path / "adapter_config.json"
    if not config_file.exists():
        raise UserError(f"adapter folder {path} has no adapter_config.json; pass a PEFT adapter folder to --adapter.")
    config = read_json(config_file)
    record = path / TRAINING_RECORD
    rope = (read_json(record).get("rope") or {}) if record.exists() else {}
    return AdapterInfo(
        path=path.resolve(),
        rank=int(config.get("r", 8)),
        base_model=config.get("base_model_name_or_path"),
        modules_to_save=tuple(config.get("modules_to_save") or ()),
        rope_parameters=rope.get("rope_parameters"),
        trained_window=rope.get("max_position_embeddings"),
    )


def _file_digest(path: Path, full: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle:
        if full or size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            for offset in (0, size // 2, max(size - _WINDOW, 0)):
                handle.seek(offset)
                digest.update(handle.read(_WINDOW))
    return digest.hexdigest()


TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "chat_template.jinja", "*.model", "*.tiktoken",
                   "vocab.*", "merges.txt")


def tokenizer_hash(path: Path) -> str:
    """sha256 over the tokenizer's files of a checkpoint folder (what turns text into the prompt's ids)."""
    files = sorted({f for pattern in TOKENIZER_FILES for f in path.glob(pattern) if f.is_file()})
    return folder_hash(path, files)["sha256"]


def folder_hash(path: Path, files: list[Path] | None = None) -> dict[str, str]:
    """A content hash over every file of a checkpoint folder (names and contents), with how it was taken."""
    digest = hashlib.sha256()
    if files is None:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for file in files:
        digest.update(str(file.relative_to(path)).encode())
        digest.update(_file_digest(file).encode())
    method = f"sha256; files over {FULL_HASH_LIMIT // 2**20} MiB by size and three 8 MiB windows"
    return {"sha256": digest.hexdigest(), "method": method}
