"""`lceval train`: (Q)LoRA context extension with the transformers Trainer, resumable after a kill.

The Trainer (not a hand-written loop) because it already does what a multi-GPU user needs from `accelerate launch`
/ torchrun: DDP, DeepSpeed ZeRO and FSDP from an accelerate config, gradient accumulation with token-weighted
loss, length-grouped sampling, and checkpoints that restore optimizer, scheduler, RNG and data position. lceval
adds the recipe, the data pipeline, the RoPE change, S2-Attn, the bitsandbytes guard, a rich progress bar and a
JSON-lines log.

Output folder:
    OUT/recipe.yaml             the resolved recipe (a resumed run must match it)
    OUT/checkpoints/checkpoint-N/   every training.save_steps steps (adapter, optimizer, scheduler, RNG, state)
    OUT/train_log.jsonl         step, loss, learning rate, grad norm, as they are logged
    OUT/adapter_model.safetensors, adapter_config.json, tokenizer files    the final PEFT adapter
    OUT/lceval_training.json    base model, RoPE setting (rope_parameters, window), what was trained, final loss
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from lceval.api.errors import UserError
from lceval.running.model_files import TRAINING_RECORD
from lceval.training.recipe import Recipe, dump_recipe, gradient_accumulation

# Settings that may change between a killed run and its resumption without changing what is trained.
RESUMABLE_CHANGES = {("training", "save_steps"), ("training", "logging_steps"), ("training", "save_total_limit"),
                     ("training", "dataloader_num_workers")}


def base_model_path(recipe: Recipe) -> Path:
    """The base checkpoint folder: built offline for builtin:tiny-llama, else a local folder or a hub download."""
    if recipe.model.base == "builtin:tiny-llama":
        return _tiny_llama(recipe)
    from lceval.running.model_files import resolve_model

    base = recipe.model.base
    relative = recipe.resolve(base)
    if base.startswith(".") and relative.is_dir():  # ./ or ../: a folder beside the recipe
        base = str(relative)
    return resolve_model(base, recipe.model.revision).path


def tiny_llama_shape(recipe: Recipe):
    """`model.build` as builtin:tiny-llama's typed shape (lceval.running.demo.TinyLlama); bad settings are one
    sentence."""
    from lceval.api.settings import parse
    from lceval.running.demo import TinyLlama

    return parse(TinyLlama, {"window": 512, **recipe.model.build}, label=lambda key: f"model.build.{key}",
                 where=lambda key: f" in recipe {recipe.source}",
                 unknown=lambda key, known: f"model.build has unknown setting {key!r}; builtin:tiny-llama takes "
                                            f"{', '.join(known)}.")


def _tiny_llama(recipe: Recipe) -> Path:
    """builtin:tiny-llama with `model.build`'s shape, cached by that shape (and by what its tokenizer's corpus, the
    data mix, is made from)."""
    import hashlib

    from lceval.running.demo import build_tiny_llama, cache_dir
    from lceval.training.data import load_mix, mix_digest, mix_texts

    build = tiny_llama_shape(recipe)
    sources = load_mix(recipe.resolve(recipe.data.mix)) if build.tokenizer == "mix" else None
    key = json.dumps(asdict(build), sort_keys=True) + (mix_digest(sources, recipe.data.seed) if sources else "")
    name = f"tiny-llama-seed{build.seed}-w{build.window}-theta{float(build.rope_theta):g}"
    path = cache_dir() / "training" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (path / "config.json").exists():  # the corpus is made only for a model not built before
        build_tiny_llama(path, shape=build, corpus=mix_texts(sources, recipe.data.seed) if sources else None)
    return path


def rope_target(recipe: Recipe, config: Any) -> tuple[dict[str, Any] | None, int]:
    """The rope_parameters and window the trained model uses."""
    from lceval.training.rope import target_rope

    r = recipe.rope
    params = target_rope(config, r.method, theta=r.theta, factor=r.factor,
                         original_max_position_embeddings=r.original_max_position_embeddings)
    window = r.max_position_embeddings or max(int(config.max_position_embeddings), recipe.data.max_length)
    return params, int(window)


def load_model(recipe: Recipe, base: Path, device_map: Any = None):
    """The base model with the new RoPE, 4-bit where asked, with LoRA (and fully trained modules) attached; with
    training.method full, the model itself with every weight trainable."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    from lceval.training.rope import apply_rope

    m, q, lo, t = recipe.model, recipe.quantization, recipe.lora, recipe.training
    config = AutoConfig.from_pretrained(base, trust_remote_code=m.trust_remote_code)
    params, window = rope_target(recipe, config)
    apply_rope(config, params, window)
    config.use_cache = False
    kwargs: dict[str, Any] = {"config": config, "dtype": getattr(torch, m.dtype),
                              "attn_implementation": m.attn_implementation, "trust_remote_code": m.trust_remote_code}
    if q.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype))
        kwargs["device_map"] = device_map if device_map is not None else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    checkpointing = {"use_reentrant": False}
    if q.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.enable_input_require_grads()
    if t.method == "full":  # every weight trained (a model trained from scratch): no adapter
        return model, params, window
    lora = LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=list(lo.target_modules),
                      modules_to_save=list(lo.modules_to_save) or None, bias=lo.bias, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if recipe.attention.s2attn:
        from lceval.training import s2attn

        s2attn.enable(model, recipe.attention.group_size_ratio)
    return model, params, window


def load_tokenizer(recipe: Recipe, base: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=recipe.model.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_datasets(recipe: Recipe, tokenizer, console: Console | None = None):
    """Tokenised (and packed) train and held-out examples, and the report of what was kept."""
    from lceval.running.progress import sample_progress
    from lceval.training.data import build_examples, group_in_order, load_mix, pack

    d = recipe.data
    sources = load_mix(recipe.resolve(d.mix))
    settings = {"max_length": d.max_length, "overlong": d.overlong, "chat_template": d.chat_template, "seed": d.seed,
                "by_source": d.order == "by_source", "train_on_input": d.train_on_input}
    if console is not None:
        with sample_progress(console) as progress:
            examples, report = build_examples(tokenizer, sources, progress=progress, **settings)
    else:
        examples, report = build_examples(tokenizer, sources, **settings)
    held = recipe.training.eval_samples
    if held >= len(examples):
        raise UserError(f"training.eval_samples {held} leaves no training data out of {len(examples)} samples.")
    evaluation, train = examples[:held], examples[held:]
    if d.packing:
        train, evaluation = pack(train, d.max_length), pack(evaluation, d.max_length)
    if d.order == "by_source" and recipe.training.group_by_length:  # the sampler is sequential: group here
        train = group_in_order(train, recipe.training.per_device_batch_size, d.seed)
    return train, evaluation, report


# -- output folder and resumption -------------------------------------------------------------------------------


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose trainer state (written last) is readable, newest first; a killed save is skipped."""
    found = []
    for path in folder.glob("checkpoint-*"):
        try:
            step = int(path.name.split("-", 1)[1])
            json.loads((path / "trainer_state.json").read_text())
        except (ValueError, OSError, json.JSONDecodeError):
            continue
        if any(path.glob("adapter_model.*")):
            found.append((step, path))
    return [path for _, path in sorted(found, reverse=True)]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key) and (section, key) not in RESUMABLE_CHANGES:
                    out.append(f"{section}.{key} (was {a.get(key)!r}, now {b.get(key)!r})")
        elif a != b and section != "source":
            out.append(f"{section} (was {a!r}, now {b!r})")
    return out


def prepare_output(recipe: Recipe, out: Path) -> Path | None:
    """Create OUT or check it holds this recipe's unfinished run; the checkpoint to resume from, if any."""
    import yaml

    from lceval.api import files

    files.check_output_dir(out, "--output-dir")
    record = out / TRAINING_RECORD
    if record.exists():
        raise UserError(f"output folder {out} already holds a finished training run; pass another --output-dir.")
    saved = out / "recipe.yaml"
    if saved.exists():
        old = files.read_yaml(saved) or {}
        if not isinstance(old, dict):
            raise UserError(f"{saved} is not a recipe; pass another --output-dir.")
        new = yaml.safe_load(dump_recipe(recipe))
        changed = _differences(old, new)
        if changed:
            raise UserError(f"output folder {out} holds a run of another recipe ({changed[0]}); pass another "
                            "--output-dir or the same recipe and overrides to resume it.")
    files.ensure_dir(out, "--output-dir")
    files.write_text(saved, dump_recipe(recipe))
    checkpoints = complete_checkpoints(out / "checkpoints")
    return checkpoints[0] if checkpoints else None


# -- callbacks: progress and log --------------------------------------------------------------------------------


def progress_callback(console: Console, log_file: Path):
    """A rich progress bar (steps, loss, learning rate) and a JSON-lines log, on the main process only."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                                     TimeRemainingColumn(), console=console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                               stats="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            with log_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
            if self.progress is not None and "loss" in logs:
                stats = f"loss {logs['loss']:.4f} lr {logs.get('learning_rate', 0):.2e}"
                self.progress.update(self.task, stats=stats)
            elif "eval_loss" in logs:
                console.print(f"step {state.global_step}: held-out loss {logs['eval_loss']:.4f}")

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                with log_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, "checkpoint": True}) + "\n")

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()

    return RichProgress()


# -- the run ------------------------------------------------------------------------------------------------------


def training_arguments(recipe: Recipe, out: Path, world_size: int, has_eval: bool):
    from transformers import TrainingArguments

    t = recipe.training
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(recipe, world_size),
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        optim=t.optimizer,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        bf16=t.bf16,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval and t.eval_steps else "no",
        eval_steps=t.eval_steps if has_eval else None,
        train_sampling_strategy=("sequential" if recipe.data.order == "by_source" else
                                 "group_by_length" if t.group_by_length else "random"),
        length_column_name="length",
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=[],
        disable_tqdm=True,
        use_cpu=t.use_cpu,
        dataloader_num_workers=t.dataloader_num_workers,
        ddp_find_unused_parameters=False,
        gradient_checkpointing=False,  # switched on by load_model (with the 4-bit preparation where needed)
    )


def train(recipe: Recipe, out: Path, console: Console) -> Path:
    """Train (or resume) the recipe into `out`; returns the adapter folder (= out)."""
    import torch
    from accelerate import PartialState
    from transformers import Trainer

    from lceval.training import qlora
    from lceval.training.data import Collator

    state = PartialState(cpu=recipe.training.use_cpu)
    world = state.num_processes
    gradient_accumulation(recipe, world)  # a batch that does not divide fails before any model is loaded
    out = Path(out)
    resume = prepare_output(recipe, out) if state.is_main_process else None
    state.wait_for_everyone()
    if not state.is_main_process:
        checkpoints = complete_checkpoints(out / "checkpoints")
        resume = checkpoints[0] if checkpoints else None
    torch.manual_seed(recipe.training.seed)
    base = base_model_path(recipe)
    tokenizer = load_tokenizer(recipe, base)
    train_set, eval_set, report = build_datasets(recipe, tokenizer, console if state.is_main_process else None)
    if state.is_main_process:
        kept = ", ".join(f"{Path(k).name}: {v}" for k, v in report.per_source.items())
        console.print(f"data: {len(train_set)} training rows ({kept}); truncated {report.truncated}, dropped "
                      f"{report.dropped_overlong} overlong and {report.dropped_no_labels} without labels")
    device_map = {"": state.device} if recipe.quantization.load_in_4bit and state.device.type != "cpu" else None
    model, params, window = load_model(recipe, base, device_map)
    if state.is_main_process:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        console.print(f"model: {base} with RoPE {params or 'unchanged'}, window {window}; {trainable:,} trainable "
                      f"parameters; {'4-bit' if recipe.quantization.load_in_4bit else recipe.model.dtype}"
                      f"{', S2-Attn' if recipe.attention.s2attn else ''}")
    log_file = out / "train_log.jsonl"
    multiple = 8 if state.device.type == "cuda" else 1
    trainer = Trainer(model=model, args=training_arguments(recipe, out, world, bool(eval_set)),
                      train_dataset=train_set, eval_dataset=eval_set or None,
                      data_collator=Collator(tokenizer.pad_token_id, multiple),
                      callbacks=[qlora.trainer_callback(), progress_callback(console, log_file)])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the rich bar and train_log.jsonl say it instead
    if resume is not None and state.is_main_process:
        console.print(f"resuming from {resume}")
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if recipe.attention.s2attn:
        from lceval.training import s2attn

        s2attn.disable(model, recipe.model.attn_implementation)
    model.config.use_cache = True  # off for training only: the saved model generates with its cache
    trainer.save_model(str(out))
    if state.is_main_process:
        tokenizer.save_pretrained(out)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        record = {
            "recipe": recipe.name,
            "base_model": str(base),
            "base_model_spec": recipe.model.base,
            "rope": {"method": recipe.rope.method, "rope_parameters": params, "max_position_embeddings": window},
            "method": recipe.training.method,
            "lora": None if recipe.training.method == "full" else {
                "rank": recipe.lora.rank, "alpha": recipe.lora.alpha,
                "target_modules": list(recipe.lora.target_modules),
                "modules_to_save": list(recipe.lora.modules_to_save)},
            "quantization": "4bit-" + recipe.quantization.quant_type if recipe.quantization.load_in_4bit else None,
            "s2attn": recipe.attention.s2attn,
            "max_length": recipe.data.max_length,
            "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss if not math.isnan(result.training_loss) else None,
            "resumed_from": str(resume) if resume else None,
            "versions": _versions(),
        }
        (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        console.print(f"adapter: {out} (steps {record['steps']}, loss {record['first_loss']} -> "
                      f"{record['final_loss']})")
    state.wait_for_everyone()
    return out


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "accelerate": accelerate.__version__}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        pass
    return versions


def read_training_record(adapter: Path) -> dict[str, Any]:
    file = Path(adapter) / TRAINING_RECORD
    if not file.exists():
        raise UserError(f"adapter folder {adapter} has no {TRAINING_RECORD}; point at the --output-dir of a finished "
                        "lceval train run.")
    from lceval.api import files

    record = files.read_json(file)
    if not isinstance(record, dict) or not isinstance(record.get("rope"), dict) or "base_model" not in record:
        raise UserError(f"{file} is not a training record of lceval train (it lacks rope or base_model); point at "
                        "the --output-dir of a finished lceval train run.")
    return record


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
