"""`lceval run`: build every sample before any engine starts, then generate, score and write as samples finish."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from lceval import environment, registry
from lceval.backends.base import Backend, BackendSettings, generation_eos
from lceval.backends.openai import served_adapter_name, served_only_adapter
from lceval.backends.openai import settings_extra as openai_settings
from lceval.config import RunConfig
from lceval.errors import UserError
from lceval.model_checks import check_model
from lceval.model_files import (
    AdapterInfo,
    ModelRef,
    folder_hash,
    model_window,
    read_adapter,
    resolve_model,
    tokenizer_hash,
)
from lceval.models import DEFAULT_MODEL, NamedModel, named_model
from lceval.progress import sample_progress
from lceval.prompting import hash_ids, hash_text, stop_token_ids
from lceval.results import SCHEMA_VERSION, RunFolder, first_difference
from lceval.task import PromptContext, Sample, Task


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Plan:
    """Everything known before the engine starts."""

    config: RunConfig
    model: ModelRef
    adapter: AdapterInfo | None
    max_length: int
    tasks: list[Task]
    samples: dict[str, list[Sample]]  # what this session may run (after --limit)
    all_ids: dict[str, set[str]]  # every sample of each task (what a complete run holds)
    run: RunFolder
    manifest: dict[str, Any]


def _make_tasks(cfg: RunConfig, named: NamedModel | None) -> list[Task]:
    """The tasks with their options: a named model's default grid, then the user's options over it."""
    tasks = []
    for name in cfg.tasks:
        options = dict(named.task_options.get(name, {})) if named else {}
        options.update(cfg.task_options.get(name, {}))
        factory = registry.tasks.get(name)
        if cfg.data_dir and getattr(factory, "reads_data_dir", False):
            options.setdefault("data_dir", cfg.data_dir)
        if cfg.num_fewshot is not None and getattr(factory, "takes_num_fewshot", False):
            options.setdefault("num_fewshot", cfg.num_fewshot)
        tasks.append(factory(options))
    unused = sorted(set(cfg.task_options) - set(cfg.tasks))
    if unused:
        raise UserError(f"options were given for task {unused[0]!r}, which is not in --tasks {','.join(cfg.tasks)}.")
    return tasks


def adapter_rope(cfg: RunConfig, adapter: AdapterInfo | None) -> dict[str, Any] | None:
    """The RoPE an adapter was trained with (lceval train records it), unless --rope-theta overrides it."""
    if adapter is None or cfg.rope_theta is not None:
        return None
    return adapter.rope_parameters


def default_run_id(model: ModelRef, adapter: AdapterInfo | None, tasks: list[str]) -> str:
    name = Path(model.spec.rstrip("/")).name
    if adapter is not None:
        name += "+" + adapter.path.name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{name}-{'-'.join(t.replace('/', '_') for t in tasks)}-{stamp}"


def _fingerprint(cfg: RunConfig, model_hash: str, adapter_hash: str | None, max_length: int,
                 tasks: list[Task]) -> dict[str, Any]:
    """What must be equal for two sessions to write into the same run folder."""
    return {
        "model_sha256": model_hash,
        "adapter_sha256": adapter_hash,
        "max_length": max_length,
        "rope_theta": cfg.rope_theta,
        "dtype": cfg.dtype,
        "chat_template": cfg.chat_template,
        "seed": cfg.seed,
        "tasks": {t.name: {"version": t.version, "settings": t.settings()} for t in tasks},
        "served_adapter": None if adapter_hash else served_adapter_name(cfg),  # --backend openai: a LoRA by name
    }


def plan(cfg: RunConfig, console: Console) -> Plan:
    """Validate everything a user can get wrong, and build all samples, before starting an engine."""
    named = named_model(cfg.model or DEFAULT_MODEL)
    tasks = _make_tasks(cfg, named)
    if cfg.backend != "auto":
        registry.backends.get(cfg.backend)  # an unknown backend fails here, naming the known ones
    if cfg.backend != "openai":  # a server's flags on another backend would be silently ignored
        given = [flag for flag, value in (("--base-url", cfg.base_url), ("--served-model", cfg.served_model),
                                          ("--served-adapter", cfg.served_adapter), ("--api-key-env", cfg.api_key_env))
                 if value]
        if given:
            raise UserError(f"{given[0]} applies to --backend openai, not {cfg.backend}; drop it or pass "
                            "--backend openai.")
    model = resolve_model(cfg.model or DEFAULT_MODEL, cfg.revision)
    # Its code (auto_map), architecture and weights, before any engine loads it.
    check_model(model.path, model.spec, cfg.backend, cfg.trust_remote_code)
    adapter = read_adapter(cfg.adapter) if cfg.adapter and not served_only_adapter(cfg) else None
    window = model_window(model.path)
    if adapter_rope(cfg, adapter):
        window = max(window, adapter.trained_window or window)  # the window the adapter was trained for
    max_length = window if cfg.max_length is None else cfg.max_length
    if max_length > window and cfg.rope_theta is None:
        raise UserError(f"--max-length {max_length} is above the model's window of {window} tokens "
                        "(max_position_embeddings); lower it, or extend the window with --rope-theta.")
    for task in tasks:
        task.check_window(max_length)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path, trust_remote_code=cfg.trust_remote_code)
    stops = stop_token_ids(tokenizer, generation_eos(model.path))
    ctx = PromptContext(tokenizer=tokenizer, window=max_length, stop_token_ids=stops, chat_template=cfg.chat_template)
    samples: dict[str, list[Sample]] = {}
    all_ids: dict[str, set[str]] = {}
    for task in tasks:
        with console.status(f"building {task.name} samples"):
            built = task.build_samples(ctx)
        all_ids[task.name] = {s.id for s in built}
        if cfg.limit is not None:
            built = built[: cfg.limit]
        for sample in built:
            sample.stop_token_ids = sample.stop_token_ids or list(stops)
            if len(sample.prompt_ids) + sample.max_new_tokens > max_length:
                raise UserError(f"{task.name} sample {sample.id} needs {len(sample.prompt_ids)} + "
                                f"{sample.max_new_tokens} tokens, more than the window of {max_length}.")
        samples[task.name] = built

    run_id = cfg.run_id or default_run_id(model, adapter, cfg.tasks)
    run = RunFolder(Path(cfg.out) / run_id)
    run.ensure_writable()  # only now: input that fails above leaves no empty run folder behind
    with console.status("hashing the model"):
        # A GGUF model is the file it came from (its dequantised folder is lceval's cache of it).
        model_hash = ({"sha256": model.gguf["sha256"], "method": "sha256 of the GGUF file"} if model.gguf
                      else folder_hash(model.path))
        adapter_hash = folder_hash(adapter.path) if adapter else None
    fingerprint = _fingerprint(cfg, model_hash["sha256"], adapter_hash and adapter_hash["sha256"], max_length, tasks)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created_at": now(),
        "status": "running",
        "model": {"spec": model.spec, "path": str(model.path), "revision": model.revision, "window": window,
                  "gguf_file": model.gguf and model.gguf["file"], **model_hash},
        "adapter": None if adapter is None else {"spec": cfg.adapter, "path": str(adapter.path),
                                                 "rank": adapter.rank, "base_model": adapter.base_model,
                                                 "modules_to_save": list(adapter.modules_to_save),
                                                 "rope_parameters": adapter.rope_parameters,
                                                 "trained_window": adapter.trained_window, **adapter_hash},
        "rope_parameters": adapter_rope(cfg, adapter),  # applied from the adapter's training record
        "served_adapter": served_adapter_name(cfg),
        "max_length": max_length,
        "tokenizer": {"sha256": tokenizer_hash(model.path),
                      "chat_template_sha256": hash_text(getattr(tokenizer, "chat_template", None)),
                      "stop_token_ids": stops, "class": type(tokenizer).__name__},
        "config": cfg.to_dict(),
        "tasks": {t.name: {"version": t.version, "settings": t.settings(), "n_samples": len(all_ids[t.name])}
                  for t in tasks},
        "fingerprint": fingerprint,
        "software": environment.software(),
        "hardware": environment.hardware(),
        "sessions": [],
    }
    if run.exists():
        old = run.manifest()
        diff = first_difference(old.get("fingerprint"), fingerprint)
        if diff:
            key, before, after = diff
            raise UserError(f"run {run.path} was started with different settings: {key} (was {before!r}, now "
                            f"{after!r}); "
                            "use a new --run-id rather than mix results.")
        manifest.update(created_at=old["created_at"], sessions=old.get("sessions", []), backend=old.get("backend"))
    return Plan(cfg, model, adapter, max_length, tasks, samples, all_ids, run, manifest)


def open_backend(requested: str, settings: BackendSettings, console: Console) -> Backend:
    """The named backend; for `auto`, vLLM where an engine can start, otherwise hf, saying which and why."""
    if requested != "auto":
        return registry.backends.get(requested)(settings)
    try:
        import vllm  # noqa: F401
    except ImportError:
        console.print("[yellow]backend auto: vLLM is not installed; using hf (transformers).[/]")
        return registry.backends.get("hf")(settings)
    try:
        backend = registry.backends.get("vllm")(settings)
    except Exception as err:  # an engine that cannot start, or a model vLLM cannot serve (UserError)
        console.print(f"[yellow]backend auto: the vLLM engine could not start ({type(err).__name__}: "
                      f"{escape(str(err))}); using hf (transformers).[/]")
        return registry.backends.get("hf")(settings)
    console.print("backend auto: using vllm.")
    return backend


def execute(cfg: RunConfig, console: Console, backend: Backend | None = None) -> Path:
    """Run (or continue) a run; returns its folder. A caller may lend an open backend (kept open after)."""
    p = plan(cfg, console)
    run = p.run
    removed = run.repair_samples()
    if removed:
        console.print(f"repaired {run.samples_path}: cut a torn last line of {removed} bytes.")
    done: dict[tuple[str, str], dict[str, Any]] = {(r["task"], r["id"]): r for r in run.records(samples=True)}
    todo: list[tuple[Task, Sample]] = []
    for task in p.tasks:
        for sample in p.samples[task.name]:
            record = done.get((task.name, sample.id))
            if record is None:
                todo.append((task, sample))
            elif record["prompt_hash"] != hash_ids(sample.prompt_ids):
                raise UserError(f"{run.samples_path} holds {task.name} sample {sample.id} with another prompt; "
                                "use a new --run-id rather than mix results.")
    finished = sum(len(v) for v in p.samples.values()) - len(todo)
    if finished:
        console.print(f"resuming {run.path}: {finished} samples already done, {len(todo)} to run.")

    previous = (p.manifest.get("backend") or {}).get("name")
    requested = previous if (cfg.backend == "auto" and previous) else cfg.backend
    session = {"started_at": now(), "samples_run": 0}
    p.manifest["sessions"].append(session)
    if todo:
        settings = BackendSettings(
            model_path=p.model.path, max_length=p.max_length,
            adapter_path=p.adapter.path if p.adapter else None, adapter_rank=p.adapter.rank if p.adapter else None,
            rope_theta=cfg.rope_theta, rope_parameters=adapter_rope(cfg, p.adapter), dtype=cfg.dtype, seed=cfg.seed,
            trust_remote_code=cfg.trust_remote_code,
            batch_size=cfg.batch_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
            extra={"adapter_modules_to_save": list(p.adapter.modules_to_save) if p.adapter else [],
                   **openai_settings(cfg)},
        )
        lent = backend is not None
        try:
            backend = backend or open_backend(requested, settings, console)
        except Exception as err:
            run.remove_if_empty()  # a backend that cannot start leaves no empty run folder behind
            if isinstance(err, UserError):
                raise
            # The model and settings were checked before (lceval.model_checks, RunConfig); what an engine still
            # refuses (too little memory for its cache, more GPUs than there are) is said in one sentence.
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise UserError(f"backend {requested} could not start on model {p.model.spec} ({type(err).__name__}: "
                            f"{reason}); check the backend's settings (--gpu-memory-utilization, "
                            "--tensor-parallel-size, --max-length) or use another --backend.") from err
        try:
            if previous and backend.name != previous:
                raise UserError(f"run {run.path} was run on backend {previous}, not {backend.name}; "
                                "use a new --run-id rather than mix results.")
            p.manifest["backend"] = {"requested": cfg.backend, **backend.identity()}
            session["backend"] = backend.name
            run.write_manifest(p.manifest)
            session["samples_run"] = _generate(backend, todo, run, console)
        finally:
            if not lent:
                backend.close()
    finish(p, console)
    return run.path


def _generate(backend: Backend, todo: list[tuple[Task, Sample]], run: RunFolder, console: Console) -> int:
    """Run each task's samples (all its prompts at once), appending each sample as it finishes."""
    count = 0
    by_task: dict[str, tuple[Task, list[Sample]]] = {}
    for task, sample in todo:
        by_task.setdefault(task.name, (task, []))[1].append(sample)
    with run.open_for_append() as handle, sample_progress(console) as progress:
        for name, (task, samples) in by_task.items():
            started = time.monotonic()
            for outcome in task.run(backend, samples, progress, run.path):
                sample = outcome.sample
                record = {
                    "task": task.name,
                    "task_version": task.version,
                    "id": sample.id,
                    "prompt_hash": hash_ids(sample.prompt_ids),
                    "prompt_tokens": len(sample.prompt_ids),
                    "meta": sample.meta,
                    "target": sample.target,
                    "excerpt": sample.excerpt,
                    "output": outcome.output,
                    "output_tokens": outcome.output_tokens,
                    "finish_reason": outcome.finish_reason,
                    "scores": outcome.scores,
                }
                run.append(record, handle)
                count += 1
            console.print(f"{name}: {len(samples)} samples in {time.monotonic() - started:.1f} s")
    return count


def finish(p: Plan, console: Console) -> dict[str, Any]:
    """Aggregate what samples.jsonl holds for this run's samples, write results.json and the pictures."""
    records = p.run.records(samples=True)
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_id": p.manifest["run_id"], "tasks": {}}
    complete = True
    for task in p.tasks:
        wanted = p.all_ids[task.name]
        mine = [r for r in records if r["task"] == task.name and r["id"] in wanted]
        complete &= len(mine) == len(wanted)
        results["tasks"][task.name] = {"version": task.version, "n_expected": len(wanted), **task.aggregate(mine)}
    p.run.write_results(results)
    files = []
    for task in p.tasks:
        files += [str(f.name) for f in task.after_run(p.run.path, results, p.manifest)]
    p.manifest.update(status="complete" if complete else "partial", finished_at=now(), files=files)
    p.run.write_manifest(p.manifest)
    return results
