"""A training recipe: one YAML file holds every hyperparameter; `section.key=value` overrides come from the CLI.

The schema is a set of dataclasses, so that an unknown or misspelled key is an error naming the known ones
instead of a setting silently ignored, and so that the resolved recipe can be written beside the checkpoints
(and compared on resume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lceval.config import load_yaml
from lceval.errors import UserError

BUILTIN_PREFIX = "builtin:"
ROPE_METHODS = ("none", "theta", "linear", "ntk", "yarn")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelSection:
    base: str = ""  # local folder, hub id, or builtin:tiny-llama (built offline by lceval.demo)
    revision: str | None = None
    dtype: str = "bfloat16"  # dtype of the weights that are not quantised (and of the merged export)
    attn_implementation: str = "sdpa"  # sdpa, eager or flash_attention_2 (full attention: what inference uses)
    trust_remote_code: bool = False
    build: dict[str, Any] = field(default_factory=dict)  # builtin:tiny-llama settings (seed, window, rope_theta)


@dataclass
class RopeSection:
    method: str = "none"  # none | theta (new base) | linear (position interpolation) | ntk (static NTK-aware) | yarn
    theta: float | None = None  # method theta: the new RoPE base
    factor: float | None = None  # linear, ntk, yarn: the scale factor
    original_max_position_embeddings: int | None = None  # yarn: the window the factor is relative to (default: base)
    max_position_embeddings: int | None = None  # the window written into the saved config


@dataclass
class QuantizationSection:
    load_in_4bit: bool = False
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass
class LoraSection:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: list[str] = field(default_factory=list)  # fully trained: embed_tokens, norm (LongLoRA's LoRA+)
    bias: str = "none"


@dataclass
class AttentionSection:
    s2attn: bool = False  # LongLoRA's shifted sparse attention, in training only
    group_size_ratio: float = 0.25  # group = ratio x sequence length


@dataclass
class DataSection:
    mix: str = ""  # data-mix file, relative to the recipe
    max_length: int = 4096
    overlong: str = "truncate"  # truncate (cut at max_length) or drop (the seed paper's choice for conversations)
    chat_template: bool = True  # instruction and conversation sources through the base model's chat template
    packing: bool = False  # pack several samples into one max_length row (positions restart per sample)
    seed: int = 42  # the [N] subsets and the order of the mix


@dataclass
class TrainingSection:
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    optimizer: str = "adamw_torch"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    global_batch_size: int = 8  # = per_device_batch_size x processes x gradient accumulation (derived)
    per_device_batch_size: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1  # -1: num_epochs decides
    gradient_checkpointing: bool = True
    group_by_length: bool = False
    bf16: bool = False
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 500  # a checkpoint every N optimizer steps; a killed run resumes from the last one
    save_total_limit: int | None = 2
    eval_steps: int | None = None  # held-out loss every N steps (needs data.eval_samples)
    eval_samples: int = 0  # samples of the mix held out for that loss
    use_cpu: bool = False
    dataloader_num_workers: int = 0


@dataclass
class ExportSection:
    dtype: str = "bfloat16"  # the merged checkpoint's dtype


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "rope": RopeSection,
    "quantization": QuantizationSection,
    "lora": LoraSection,
    "attention": AttentionSection,
    "data": DataSection,
    "training": TrainingSection,
    "export": ExportSection,
}


@dataclass
class Recipe:
    name: str = "recipe"
    model: ModelSection = field(default_factory=ModelSection)
    rope: RopeSection = field(default_factory=RopeSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    lora: LoraSection = field(default_factory=LoraSection)
    attention: AttentionSection = field(default_factory=AttentionSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    export: ExportSection = field(default_factory=ExportSection)
    source: str | None = None  # the recipe file (paths in it are relative to its folder)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def folder(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def resolve(self, relative: str) -> Path:
        """A path from the recipe, relative to the recipe's folder unless absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else (self.folder / path)


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` (value as YAML) to (section, key, value)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise UserError(f"override {text!r} is not of the form SECTION.KEY=VALUE, e.g. training.learning_rate=1e-4.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"the value of override {text!r} is not valid YAML; quote it.") from err
    return section, name, value


def _coerce(where: str, expected: Any, value: Any) -> Any:
    """YAML gives 5e-5 as a string and 1 as an int where a float is wanted: convert what is unambiguous."""
    if value is None:
        return None
    text = str(expected)
    if "float" in text and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise UserError(f"recipe setting {where} must be a number, not {value!r}.") from None
    if text.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if text.startswith("int") and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"recipe setting {where} must be a whole number, not {value!r}.")
    if text == "bool" and not isinstance(value, bool):
        raise UserError(f"recipe setting {where} must be true or false, not {value!r}.")
    if text.startswith("list") and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _section(name: str, cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"recipe section {name!r} in {where} must be a mapping of settings.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"recipe {where} has unknown setting {name}.{unknown[0]}; known in {name}: "
                        f"{', '.join(sorted(known))}.")
    values = {key: _coerce(f"{name}.{key}", known[key].type, value) for key, value in data.items()}
    return cls(**values)


def build_recipe(data: dict[str, Any], where: str, source: str | None = None) -> Recipe:
    unknown = sorted(set(data) - set(SECTIONS) - {"name"})
    if unknown:
        raise UserError(f"recipe {where} has unknown section {unknown[0]!r}; known: name, {', '.join(SECTIONS)}.")
    sections = {name: _section(name, cls, data.get(name), where) for name, cls in SECTIONS.items()}
    recipe = Recipe(name=str(data.get("name") or (Path(source).stem if source else "recipe")), source=source,
                    **sections)
    validate(recipe, where)
    return recipe


def load_recipe(path: Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe file with the command line's overrides applied, validated."""
    data = load_yaml(Path(path))
    for text in overrides or []:
        section, name, value = parse_override(text)
        if section == "name" or section not in SECTIONS:
            raise UserError(f"override {text!r} names unknown section {section!r}; known: {', '.join(SECTIONS)}.")
        block = data.setdefault(section, {}) or {}
        data[section] = {**block, name: value}
    return build_recipe(data, str(path), source=str(Path(path).resolve()))


def validate(recipe: Recipe, where: str) -> None:
    """Everything a user can get wrong in a recipe, as one sentence each, before any model is loaded."""
    m, r, q, lo, a, d, t = (recipe.model, recipe.rope, recipe.quantization, recipe.lora, recipe.attention,
                            recipe.data, recipe.training)
    if not m.base:
        raise UserError(f"recipe {where} names no model.base; set it to a checkpoint folder, hub id or "
                        "builtin:tiny-llama.")
    if m.base.startswith(BUILTIN_PREFIX) and m.base != "builtin:tiny-llama":
        raise UserError(f"model.base {m.base!r} is not a builtin model; the only one is builtin:tiny-llama.")
    for key, value in (("model.dtype", m.dtype), ("quantization.compute_dtype", q.compute_dtype),
                       ("export.dtype", recipe.export.dtype)):
        if value not in DTYPES:
            raise UserError(f"recipe setting {key} is {value!r}; use one of {', '.join(DTYPES)}.")
    if r.method not in ROPE_METHODS:
        raise UserError(f"rope.method {r.method!r} is unknown; use one of {', '.join(ROPE_METHODS)}.")
    if r.method == "theta" and not r.theta:
        raise UserError("rope.method theta needs rope.theta, the new RoPE base (e.g. 200e6).")
    if r.method in ("linear", "ntk", "yarn") and not (r.factor and r.factor > 1):
        raise UserError(f"rope.method {r.method} needs rope.factor above 1 (new window / old window).")
    if q.quant_type not in ("nf4", "fp4"):
        raise UserError(f"quantization.quant_type {q.quant_type!r} must be nf4 or fp4.")
    if lo.rank < 1 or lo.alpha <= 0 or not 0 <= lo.dropout < 1:
        raise UserError("lora.rank must be at least 1, lora.alpha positive and lora.dropout in [0, 1).")
    if not lo.target_modules:
        raise UserError("lora.target_modules is empty; name the projections to adapt, e.g. [q_proj, v_proj].")
    if not d.mix:
        raise UserError(f"recipe {where} names no data.mix; point it at a data-mix file.")
    if d.overlong not in ("truncate", "drop"):
        raise UserError(f"data.overlong {d.overlong!r} must be truncate or drop.")
    if d.max_length < 8:
        raise UserError(f"data.max_length {d.max_length} is too small; give the training length in tokens.")
    if a.s2attn:
        if not 0 < a.group_size_ratio <= 1:
            raise UserError("attention.group_size_ratio must be in (0, 1], e.g. 0.25 (LongLoRA's).")
        if d.packing:
            raise UserError("attention.s2attn cannot be combined with data.packing (groups would cross samples); "
                            "turn one of them off.")
    if t.global_batch_size < 1 or t.per_device_batch_size < 1:
        raise UserError("training.global_batch_size and training.per_device_batch_size must be at least 1.")
    if t.global_batch_size % t.per_device_batch_size:
        raise UserError(f"training.global_batch_size {t.global_batch_size} is not a multiple of "
                        f"training.per_device_batch_size {t.per_device_batch_size}.")
    if t.save_steps < 1 or t.logging_steps < 1:
        raise UserError("training.save_steps and training.logging_steps must be at least 1.")
    if t.eval_steps is not None and t.eval_samples < 1:
        raise UserError("training.eval_steps needs training.eval_samples (held-out samples) of at least 1.")


def gradient_accumulation(recipe: Recipe, world_size: int) -> int:
    """Steps to accumulate so that per-device batch x processes x steps = the recipe's global batch."""
    per_step = recipe.training.per_device_batch_size * world_size
    if recipe.training.global_batch_size % per_step:
        raise UserError(f"training.global_batch_size {recipe.training.global_batch_size} is not a multiple of "
                        f"per_device_batch_size x {world_size} processes = {per_step}; change one of them.")
    return recipe.training.global_batch_size // per_step


def dump_recipe(recipe: Recipe) -> str:
    data = recipe.to_dict()
    data.pop("source", None)
    return yaml.safe_dump(data, sort_keys=False)
