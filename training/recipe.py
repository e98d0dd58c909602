"""A training recipe: one YAML file holds every hyperparameter; `section.key=value` overrides come from the CLI.

The schema is a set of typed settings classes (lceval.api.settings): each field's type is its range, so that an
unknown or misspelled key, a value of the wrong type or out of range is one sentence naming `section.key`, the
value and what is allowed, before any model is loaded; and the resolved recipe can be written beside the
checkpoints (and compared on resume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import Field

from lceval.api.errors import UserError
from lceval.api.settings import (
    CommaList,
    Count,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    Probability,
    Seed,
    Share,
    parse,
    parse_dotted_assignment,
    settings_class,
)
from lceval.running.config import load_yaml

BUILTIN_PREFIX = "builtin:"
RopeMethod = Literal["none", "theta", "linear", "ntk", "yarn"]
DtypeName = Literal["float32", "bfloat16", "float16"]
ROPE_METHODS = get_args(RopeMethod)
DTYPES = get_args(DtypeName)


@settings_class
class ModelSection:
    base: str = ""  # local folder, hub id, or builtin:tiny-llama (built offline by lceval.running.demo)
    revision: str | None = None
    dtype: DtypeName = "bfloat16"  # dtype of the weights that are not quantised (and of the merged export)
    # full attention (what inference uses)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    build: dict[str, Any] = field(default_factory=dict)  # builtin:tiny-llama settings (seed, window, rope_theta)


@settings_class
class RopeSection:
    method: RopeMethod = "none"  # none | theta (new base) | linear (position interpolation) | ntk (static NTK) | yarn
    theta: PositiveFloat | None = None  # method theta: the new RoPE base
    factor: PositiveFloat | None = None  # linear, ntk, yarn: the scale factor
    original_max_position_embeddings: Count | None = None  # yarn: the window the factor is relative to
    max_position_embeddings: Count | None = None  # the window written into the saved config


@settings_class
class QuantizationSection:
    load_in_4bit: bool = False
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: DtypeName = "bfloat16"


@settings_class
class LoraSection:
    rank: Count = 8
    alpha: Count = 16
    dropout: Probability = 0.0
    target_modules: Annotated[CommaList, Field(min_length=1)] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: CommaList = field(default_factory=list)  # fully trained: embed_tokens, norm (LoRA+)
    bias: Literal["none", "all", "lora_only"] = "none"


@settings_class
class AttentionSection:
    s2attn: bool = False  # LongLoRA's shifted sparse attention, in training only
    group_size_ratio: Share = 0.25  # group = ratio x sequence length


@settings_class
class DataSection:
    mix: str = ""  # data-mix file, relative to the recipe
    max_length: Annotated[int, Field(ge=8)] = 4096
    overlong: Literal["truncate", "drop"] = "truncate"  # drop: the seed paper's choice for conversations
    chat_template: bool = True  # instruction and conversation sources through the base model's chat template
    packing: bool = False  # pack several samples into one max_length row (positions restart per sample)
    seed: Seed = 42  # the [N] subsets and the order of the mix
    # shuffled: the whole mix in one seeded random order; by_source: a curriculum, each source shuffled on its own
    # and the sources trained one after another in the listed order (a sequential sampler, one pass)
    order: Literal["shuffled", "by_source"] = "shuffled"
    # false: only the answer (assistant turns, a completion) is learned; true: every token of the sample is, prompt
    # included (torchtune's train_on_input): the signal a model trained from scratch needs to learn to read
    train_on_input: bool = False


@settings_class
class TrainingSection:
    # lora: train an adapter on the (quantised) base; full: train every weight of the base and save a whole
    # checkpoint (a model trained from scratch, as lceval-mini's base); lora and quantization are then unused.
    method: Literal["lora", "full"] = "lora"
    learning_rate: PositiveFloat = 5e-5
    lr_scheduler: str = "linear"
    warmup_steps: NonNegativeInt = 0
    weight_decay: NonNegativeFloat = 0.0
    optimizer: str = "adamw_torch"
    adam_beta1: Probability = 0.9
    adam_beta2: Probability = 0.999
    adam_epsilon: PositiveFloat = 1e-8
    max_grad_norm: NonNegativeFloat = 1.0
    global_batch_size: Count = 8  # = per_device_batch_size x processes x gradient accumulation (derived)
    per_device_batch_size: Count = 1
    num_epochs: PositiveFloat = 1.0
    max_steps: Annotated[int, Field(ge=-1)] = -1  # -1: num_epochs decides
    gradient_checkpointing: bool = True
    # batches of like length (less padding); with data.order by_source, made within runs of 64 consecutive batches
    # so that the curriculum's order holds (lceval.training.data.group_in_order, per device batch: one process)
    group_by_length: bool = False
    bf16: bool = False
    seed: Seed = 42
    logging_steps: Count = 1
    save_steps: Count = 500  # a checkpoint every N optimizer steps; a killed run resumes from the last one
    save_total_limit: Count | None = 2
    eval_steps: Count | None = None  # held-out loss every N steps (needs data.eval_samples)
    eval_samples: NonNegativeInt = 0  # samples of the mix held out for that loss
    use_cpu: bool = False
    dataloader_num_workers: NonNegativeInt = 0


@settings_class
class ExportSection:
    dtype: DtypeName = "bfloat16"  # the merged checkpoint's dtype


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
    return parse_dotted_assignment(text, "override", "SECTION.KEY=VALUE", "training.learning_rate=1e-4")


def _section(name: str, cls: type, data: Any, where: str, overridden: set[tuple[str, str]]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"recipe section {name!r} in {where} must be a mapping of settings.")
    return parse(cls, data, label=lambda key: f"{name}.{key}",
                 where=lambda key: " (a command-line override)" if (name, key) in overridden else f" in recipe {where}",
                 unknown=lambda key, known: f"recipe {where} has unknown setting {name}.{key}; known in {name}: "
                                            f"{', '.join(known)}.")


def build_recipe(data: dict[str, Any], where: str, source: str | None = None,
                 overridden: set[tuple[str, str]] | None = None) -> Recipe:
    unknown = sorted(set(data) - set(SECTIONS) - {"name"}, key=str)
    if unknown:
        raise UserError(f"recipe {where} has unknown section {unknown[0]!r}; known: name, {', '.join(SECTIONS)}.")
    sections = {name: _section(name, cls, data.get(name), where, overridden or set())
                for name, cls in SECTIONS.items()}
    recipe = Recipe(name=str(data.get("name") or (Path(source).stem if source else "recipe")), source=source,
                    **sections)
    validate(recipe, where)
    return recipe


def load_recipe(path: Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe file with the command line's overrides applied, validated."""
    data = load_yaml(Path(path), "recipe")
    overridden = set()
    for text in overrides or []:
        section, name, value = parse_override(text)
        if section == "name" or section not in SECTIONS:
            raise UserError(f"override {text!r} names unknown section {section!r}; known: {', '.join(SECTIONS)}.")
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise UserError(f"recipe section {section!r} in {path} must be a mapping of settings.")
        data[section] = {**block, name: value}
        overridden.add((section, name))
    return build_recipe(data, str(path), source=str(Path(path).resolve()), overridden=overridden)


def validate(recipe: Recipe, where: str) -> None:
    """What relates two settings, as one sentence each (each setting's own range is its type's)."""
    m, r, a, d, t = recipe.model, recipe.rope, recipe.attention, recipe.data, recipe.training
    if not m.base:
        raise UserError(f"recipe {where} names no model.base; set it to a checkpoint folder, hub id or "
                        "builtin:tiny-llama.")
    if m.base.startswith(BUILTIN_PREFIX) and m.base != "builtin:tiny-llama":
        raise UserError(f"model.base {m.base!r} is not a builtin model; the only one is builtin:tiny-llama.")
    if r.method == "theta" and not r.theta:
        raise UserError("rope.method theta needs rope.theta, the new RoPE base (e.g. 200e6).")
    if r.method in ("linear", "ntk", "yarn") and not (r.factor and r.factor > 1):
        raise UserError(f"rope.method {r.method} needs rope.factor above 1 (new window / old window).")
    if not d.mix:
        raise UserError(f"recipe {where} names no data.mix; point it at a data-mix file.")
    if a.s2attn and d.packing:
        raise UserError("attention.s2attn cannot be combined with data.packing (groups would cross samples); "
                        "turn one of them off.")
    if t.global_batch_size % t.per_device_batch_size:
        raise UserError(f"training.global_batch_size {t.global_batch_size} is not a multiple of "
                        f"training.per_device_batch_size {t.per_device_batch_size}.")
    if t.method == "full" and recipe.quantization.load_in_4bit:
        raise UserError("training.method full trains every weight, which 4-bit weights cannot be; set "
                        "quantization.load_in_4bit false or training.method lora.")
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
