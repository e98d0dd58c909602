"""`lceval run`: build every sample before any engine starts, then generate, score and write as samples finish."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from lceval.api import registry
from lceval.api.backend import Backend, BackendSettings, GenerationRequest, generation_eos
from lceval.api.errors import UserError
from lceval.api.prompting import hash_ids, hash_text, stop_token_ids
from lceval.api.run_folder import RunFolder, first_difference
from lceval.api.schema import SCHEMA_VERSION, Manifest, Results, SampleRecord, TaskResults
from lceval.api.task import PromptContext, Sample, Task
from lceval.models import DEFAULT_MODEL, NamedModel, named_model
from lceval.running import cost, environment
from lceval.running.config import RunConfig, backend_class, check_backend_options
from lceval.running.model_checks import check_model
from lceval.running.model_files import (
    AdapterInfo,
    ModelRef,
    folder_hash,
    model_window,
    read_adapter,
    resolve_model,
    tokenizer_hash,
)
from lceval.running.progress import sample_progress


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


def model_run_defaults(cfg: RunConfig, named: NamedModel | None) -> dict[str, Any]:
    """The named model's run defaults for the settings the user left unset (None), by flag or config file.

    None apply with --adapter: an adapter's training record brings its own RoPE and window (adapter_rope), which a
    model's default --rope-theta would override.
    """
    if named is None or cfg.adapter:
        return {}
    return {key: value for key, value in named.run_defaults.items() if getattr(cfg, key) is None}


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


def default_run_id(cfg: RunConfig, model: ModelRef, adapter: AdapterInfo | None, max_length: int,
                   tasks: list[Task]) -> str:
    """The model, adapter, tasks, window and RoPE, then a hash of every setting that changes a prompt or a score:
    the same command (with the same files) resumes its run; other settings start another."""
    name = Path(model.spec.rstrip("/")).name
    if adapter is not None:
        name += "+" + adapter.path.name
    elif cfg.adapter:  # a LoRA served by name (--backend openai)
        name += "+" + cfg.adapter
    parts = [name, *(t.name for t in tasks), f"{max_length}tok"]
    if cfg.rope_theta is not None:
        parts.append(f"rope{cfg.rope_theta:g}")
    settings = {"model": model.spec, "revision": model.revision, "adapter": cfg.adapter,
                **_run_settings(cfg, max_length, tasks)}
    parts.append(hash_text(json.dumps(settings, sort_keys=True, default=str))[:8])
    return "-".join(re.sub(r"[^A-Za-z0-9._+=-]", "_", part) for part in parts)


def _run_settings(cfg: RunConfig, max_length: int, tasks: list[Task]) -> dict[str, Any]:
    """The settings of a run that change a prompt or a score, but for the model and adapter themselves: the
    fingerprint's and the default run id's common part."""
    return {
        "max_length": max_length,
        "rope_theta": cfg.rope_theta,
        "dtype": cfg.dtype,
        "chat_template": cfg.chat_template,
        "seed": cfg.seed,
        "tasks": {t.name: {"version": t.version, "settings": t.settings()} for t in tasks},
        **({"backend_options": output} if (output := backend_class(cfg).output_options(cfg.backend_options)) else {}),
    }


def _fingerprint(cfg: RunConfig, model_hash: str, adapter_hash: str | None, max_length: int,
                 tasks: list[Task]) -> dict[str, Any]:
    """What must be equal for two sessions to write into the same run folder; the backend says its own part."""
    return {
        "model_sha256": model_hash,
        "adapter_sha256": adapter_hash,
        **_run_settings(cfg, max_length, tasks),
        "served_adapter": None if adapter_hash else backend_class(cfg).served_adapter(cfg),  # a LoRA by name
    }


def plan(cfg: RunConfig, console: Console, write: bool = True) -> Plan:
    """Validate everything a user can get wrong, and build all samples, before starting an engine.

    `write=False` (--dry-run): the run folder is neither created nor probed; nothing under --out is touched.
    """
    spec = cfg.model or DEFAULT_MODEL
    named = named_model(spec)
    run_defaults = model_run_defaults(cfg, named)
    cfg = replace(cfg, **run_defaults)  # the settings as run, and as the manifest records them
    tasks = _make_tasks(cfg, named)
    backend = backend_class(cfg)  # an unknown backend fails here, naming the known ones
    check_backend_options(cfg)
    model = resolve_model(spec, cfg.revision)
    # Its code (auto_map), architecture and weights, before any engine loads it.
    check_model(model.path, model.spec, cfg.backend, cfg.trust_remote_code)
    adapter = read_adapter(cfg.adapter) if cfg.adapter and not backend.adapter_by_name(cfg) else None
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

    run_id = cfg.run_id or default_run_id(cfg, model, adapter, max_length, tasks)
    run = RunFolder(Path(cfg.out) / run_id)
    if write:
        run.ensure_writable()  # only now: input that fails above leaves no empty run folder behind
    with console.status("hashing the model"):
        # A GGUF model is the file it came from (its dequantised folder is lceval's cache of it).
        model_hash = ({"sha256": model.gguf["sha256"], "method": "sha256 of the GGUF file"} if model.gguf
                      else folder_hash(model.path))
        adapter_hash = folder_hash(adapter.path) if adapter else None
    fingerprint = _fingerprint(cfg, model_hash["sha256"], adapter_hash and adapter_hash["sha256"], max_length, tasks)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
        created_at=now(),
        status="running",
        model={"spec": model.spec, "path": str(model.path), "revision": model.revision, "window": window,
               "gguf_file": model.gguf and model.gguf["file"], **model_hash},
        adapter=None if adapter is None else {"spec": cfg.adapter, "path": str(adapter.path), "rank": adapter.rank,
                                              "base_model": adapter.base_model,
                                              "modules_to_save": list(adapter.modules_to_save),
                                              "rope_parameters": adapter.rope_parameters,
                                              "trained_window": adapter.trained_window, **adapter_hash},
        rope_parameters=adapter_rope(cfg, adapter),
        served_adapter=backend.served_adapter(cfg),
        max_length=max_length,
        tokenizer={"sha256": tokenizer_hash(model.path),
                   "chat_template_sha256": hash_text(getattr(tokenizer, "chat_template", None)),
                   "stop_token_ids": stops, "class": type(tokenizer).__name__},
        config=cfg.to_dict(),
        run_defaults=run_defaults,
        tasks={t.name: {"version": t.version, "settings": t.settings(), "n_samples": len(all_ids[t.name])}
               for t in tasks},
        declarations={t.name: t.declaration().to_dict() for t in tasks},
        fingerprint=fingerprint,
        software=environment.software(),
        hardware=environment.hardware(),
    ).to_dict()
    if run.exists():
        old = run.manifest()
        diff = first_difference(old.fingerprint, fingerprint)
        if diff:
            key, before, after = diff
            raise UserError(f"run {run.path} was started with different settings: {key} (was {before!r}, now "
                            f"{after!r}); "
                            "use a new --run-id rather than mix results.")
        manifest.update(created_at=old.created_at, sessions=old.sessions, backend=old.backend)
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


def start_backend(requested: str, settings: BackendSettings, model_spec: str, console: Console) -> Backend:
    """open_backend, with what an engine refuses said in one sentence."""
    try:
        return open_backend(requested, settings, console)
    except UserError:
        raise
    except Exception as err:
        # The model and settings were checked before (lceval.running.model_checks, RunConfig); what an engine still
        # refuses (too little memory for its cache, more GPUs than there are) is said in one sentence.
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise UserError(f"backend {requested} could not start on model {model_spec} ({type(err).__name__}: "
                        f"{reason}); check the backend's settings (--gpu-memory-utilization, "
                        "--tensor-parallel-size, --max-length) or use another --backend.") from err


def execute(cfg: RunConfig, console: Console, backend: Backend | None = None,
            engine_start_s: float | None = None) -> Path:
    """Run (or continue) a run; returns its folder. A caller may lend an open backend (kept open after), with the
    engine start this run is to be charged (None: it paid none)."""
    p = plan(cfg, console)
    cfg = p.config  # the settings as run: a named model's run defaults applied
    run = p.run
    removed = run.repair_samples()
    if removed:
        console.print(f"repaired {run.samples_path}: cut a torn last line of {removed} bytes.")
    todo = _todo(p, run.records(samples=True))
    finished = sum(len(v) for v in p.samples.values()) - len(todo)
    if finished:
        console.print(f"resuming {run.path}: {finished} samples already done, {len(todo)} to run.")

    previous = (p.manifest.get("backend") or {}).get("name")
    requested = previous if (cfg.backend == "auto" and previous) else cfg.backend
    session = {"started_at": now(), "samples_run": 0}
    p.manifest["sessions"].append(session)
    if todo:
        settings = _backend_settings(p)
        lent = backend is not None
        started = time.monotonic()
        try:
            backend = backend or start_backend(requested, settings, p.model.spec, console)
        except UserError:
            run.remove_if_empty()  # a backend that cannot start leaves no empty run folder behind
            raise
        try:
            if previous and backend.name != previous:
                raise UserError(f"run {run.path} was run on backend {previous}, not {backend.name}; "
                                "use a new --run-id rather than mix results.")
            p.manifest["backend"] = {"requested": cfg.backend, **backend.identity()}
            session["backend"] = backend.name
            # The engine start as this run paid it (none where a caller lent an open backend); each task's cost
            # is added, and the manifest written, as the task finishes (lceval.running.cost).
            engine_start = engine_start_s if lent else time.monotonic() - started
            tasks_cost: dict[str, dict[str, Any]] = {}
            session["cost"] = cost.session_cost(engine_start, tasks_cost)
            run.write_manifest(p.manifest)

            def record_cost(name: str, task_cost: dict[str, Any]) -> None:
                tasks_cost[name] = task_cost
                session["cost"] = cost.session_cost(engine_start, tasks_cost)
                run.write_manifest(p.manifest)

            session["samples_run"] = _generate(backend, todo, run, console, record_cost)
        finally:
            if not lent:
                backend.close()
    finish(p, console)
    return run.path


# ------------------------------------------------------------------------------------- several checkpoints

NO_ADAPTER = "none"  # in a list of --adapter checkpoints: the model alone


def checkpoint_configs(cfg: RunConfig) -> list[RunConfig]:
    """One run's settings per checkpoint of a comma list --adapter (`none`: the model without an adapter)."""
    names = [name.strip() for name in (cfg.adapter or "").split(",")]
    if len(names) < 2:
        return [cfg]
    if any(not name for name in names):
        raise UserError(f"--adapter {cfg.adapter!r} has an empty item; give folders separated by commas, e.g. "
                        "none,out/checkpoint-200,out/checkpoint-400.")
    if len(set(names)) < len(names):
        raise UserError(f"--adapter {cfg.adapter!r} names a checkpoint twice; give each once.")
    if cfg.run_id:
        raise UserError(f"--run-id {cfg.run_id} names one run folder, and --adapter gives {len(names)} checkpoints; "
                        "drop --run-id (each checkpoint gets its own default run id).")
    return [replace(cfg, adapter=None if name == NO_ADAPTER else name) for name in names]


def _shared(settings: BackendSettings) -> BackendSettings:
    """What must be equal for one engine to serve two checkpoints: every setting but the adapter's own."""
    extra = {k: v for k, v in settings.extra.items() if k != "adapter_modules_to_save"}
    return replace(settings, adapter_path=None, adapter_rank=None, extra=extra)


def execute_checkpoints(cfg: RunConfig, console: Console) -> list[Path]:
    """`lceval run --adapter none,A,B`: one run folder per checkpoint, exactly as separate runs would write them,
    with one engine start where the backend can switch adapters (the first run is charged the start).

    Every checkpoint is planned before the engine starts; checkpoints that need different engine settings (an
    adapter trained with another RoPE or window than the others) are refused in one sentence.
    """
    configs = checkpoint_configs(cfg)
    if len(configs) == 1:
        return [execute(configs[0], console)]
    plans = [plan(c, console, write=False) for c in configs]
    settings = [_backend_settings(p) for p in plans]
    for p, s in zip(plans[1:], settings[1:], strict=True):
        first, this = _shared(settings[0]), _shared(s)
        differing = [f.name for f in fields(BackendSettings) if getattr(first, f.name) != getattr(this, f.name)]
        if differing:
            names = [c.adapter or NO_ADAPTER for c in (configs[0], p.config)]
            raise UserError(f"checkpoints {names[0]} and {names[1]} need a different {differing[0]} "
                            f"({getattr(first, differing[0])} and {getattr(this, differing[0])}), so one engine "
                            "cannot serve both; run them one by one, or set --rope-theta and --max-length for all.")
    folders = [p.run.path for p in plans]
    for i, folder in enumerate(folders):
        if folder in folders[:i]:
            raise UserError(f"checkpoints {configs[folders.index(folder)].adapter} and {configs[i].adapter} would "
                            f"share the run folder {folder}; rename one of their folders.")
    adapters = [p.adapter for p in plans if p.adapter is not None]
    trained = sorted({m for a in adapters for m in a.modules_to_save})
    engine = replace(settings[0], adapter_paths=tuple(a.path for a in adapters),
                     adapter_rank=max((a.rank or 0 for a in adapters), default=0) or None,
                     extra={**settings[0].extra, "adapter_modules_to_save": trained})
    requested = plans[0].config.backend
    if requested != "auto" and not registry.backends.get(requested).swaps_adapters:
        console.print(f"backend {requested} cannot switch adapters: one engine start per checkpoint.")
        return [execute(c, console) for c in configs]
    started = time.monotonic()
    backend = start_backend(requested, engine, plans[0].model.spec, console)
    start_s = time.monotonic() - started
    if not backend.swaps_adapters:
        backend.close()
        console.print(f"backend {backend.name} cannot switch adapters: one engine start per checkpoint.")
        return [execute(c, console) for c in configs]
    folders = []
    try:
        for i, (c, p) in enumerate(zip(configs, plans, strict=True)):
            backend.use_adapter(p.adapter.path if p.adapter else None)
            console.print(f"checkpoint {i + 1} of {len(configs)}: {c.adapter or 'the model without an adapter'}")
            folders.append(execute(c, console, backend=backend, engine_start_s=start_s if i == 0 else None))
    finally:
        backend.close()
    return folders


def _todo(p: Plan, records: list[dict[str, Any]]) -> list[tuple[Task, Sample]]:
    """The samples that samples.jsonl does not hold yet; one it holds with another prompt is refused."""
    done: dict[tuple[str, str], dict[str, Any]] = {(r["task"], r["id"]): r for r in records}
    todo: list[tuple[Task, Sample]] = []
    for task in p.tasks:
        for sample in p.samples[task.name]:
            record = done.get((task.name, sample.id))
            if record is None:
                todo.append((task, sample))
            elif record["prompt_hash"] != hash_ids(sample.prompt_ids):
                raise UserError(f"{p.run.samples_path} holds {task.name} sample {sample.id} with another prompt; "
                                "use a new --run-id rather than mix results.")
    return todo


def _backend_settings(p: Plan) -> BackendSettings:
    """The backend's settings from the plan's (a named model's run defaults applied)."""
    cfg = p.config
    return BackendSettings(
        model_path=p.model.path, max_length=p.max_length,
        adapter_path=p.adapter.path if p.adapter else None, adapter_rank=p.adapter.rank if p.adapter else None,
        rope_theta=cfg.rope_theta, rope_parameters=adapter_rope(cfg, p.adapter), dtype=cfg.dtype, seed=cfg.seed,
        trust_remote_code=cfg.trust_remote_code,
        batch_size=cfg.batch_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        extra={**cfg.backend_options,
               "adapter_modules_to_save": list(p.adapter.modules_to_save) if p.adapter else [],
               **backend_class(cfg).settings_from(cfg)},
    )


def _generate(backend: Backend, todo: list[tuple[Task, Sample]], run: RunFolder, console: Console,
              record_cost: Callable[[str, dict[str, Any]], None] | None = None) -> int:
    """Run each task's samples (all its prompts at once), appending each sample as it finishes; each task's cost
    (tokens and time, lceval.running.cost) goes to `record_cost` when the task is done."""
    count = 0
    by_task: dict[str, tuple[Task, list[Sample]]] = {}
    for task, sample in todo:
        by_task.setdefault(task.name, (task, []))[1].append(sample)
    with run.open_for_append() as handle, sample_progress(console) as progress:
        for name, (task, samples) in by_task.items():
            started = time.monotonic()
            finished: list[cost.Finished] = []
            for outcome in task.run(backend, samples, progress, run.path):
                sample = outcome.sample
                finished.append(cost.Finished(time.monotonic() - started, len(sample.prompt_ids),
                                              outcome.output_tokens or 0))
                record = SampleRecord(
                    task=task.name, task_version=task.version, id=sample.id, prompt_hash=hash_ids(sample.prompt_ids),
                    prompt_tokens=len(sample.prompt_ids), meta=sample.meta, target=sample.target,
                    excerpt=sample.excerpt, output=outcome.output, output_tokens=outcome.output_tokens,
                    finish_reason=outcome.finish_reason, scores=outcome.scores)
                run.append(record.to_dict(), handle)
                count += 1
            task_cost = cost.task_cost(finished, time.monotonic() - started)
            rate = task_cost["tokens_per_s"]
            console.print(f"{name}: {len(samples)} samples in {task_cost['generation_s']:.1f} s"
                          + (f" ({rate:,.0f} tokens/s)" if rate else ""))
            if record_cost is not None:
                record_cost(name, task_cost)
    return count


def finish(p: Plan, console: Console) -> Results:
    """Aggregate what samples.jsonl holds for this run's samples, write results.json and the pictures."""
    records = p.run.records(samples=True)
    results = Results(schema_version=SCHEMA_VERSION, run_id=p.manifest["run_id"], tasks={})
    complete = True
    held = 0
    for task in p.tasks:
        wanted = p.all_ids[task.name]
        mine = [r for r in records if r["task"] == task.name and r["id"] in wanted]
        complete &= len(mine) == len(wanted)
        held += len(mine)
        results.tasks[task.name] = TaskResults.from_dict({"version": task.version, "n_expected": len(wanted),
                                                          **task.aggregate(mine)})
    results.cost = cost.run_cost(p.manifest.get("sessions", []), held)  # every session's work, summed
    p.run.write_results(results)
    files = []
    manifest = Manifest.from_dict(p.manifest)
    for task in p.tasks:
        files += [str(f.name) for f in task.after_run(p.run.path, results, manifest)]
    p.manifest.update(status="complete" if complete else "partial", finished_at=now(), files=files)
    p.run.write_manifest(p.manifest)
    return results


# ---------------------------------------------------------------------------------------------------- --dry-run

CALIBRATION_MODEL_BYTES = 2**30  # hf starts a model of at most this much weights in seconds: cheap to calibrate
CALIBRATION_PROMPT_TOKENS = 8192  # per task: the first samples of each length bucket, shortest buckets first
CALIBRATION_MAX_PROMPT = 4096  # no calibration sample is longer (a long prompt takes minutes on a CPU)


@dataclass
class DryRun:
    """What `lceval run --dry-run` found: the plan, what is left to run, and an estimate with its basis."""

    plan: Plan
    todo: list[tuple[Task, Sample]]
    table: dict[str, dict[str, Any]]  # lceval.running.cost.plan_table of the samples to run
    estimate: dict[str, Any] | None  # lceval.running.cost.estimate, None where there is no basis
    engine_start_s: float | None
    basis: str  # one sentence: what the estimate comes from, or why there is none


def dry_run(cfg: RunConfig, console: Console, calibrate_from: Path | None = None) -> DryRun:
    """Build every sample as a run would and estimate its time; writes nothing under --out.

    The estimate comes from the tokens per second recorded in an earlier run folder's cost (`calibrate_from`),
    or else from timing the first samples of each task and length bucket on hf where that is cheap (hf chosen,
    a model of at most CALIBRATION_MODEL_BYTES); otherwise there is none and only counts are given.
    """
    recorded = _read_cost(calibrate_from) if calibrate_from is not None else None  # refused before any work
    p = plan(cfg, console, write=False)
    cfg = p.config  # the settings as run: a named model's run defaults applied
    previous = (p.manifest.get("backend") or {}).get("name")
    if previous and cfg.backend not in ("auto", previous):  # as the run would refuse it
        raise UserError(f"run {p.run.path} was run on backend {previous}, not {cfg.backend}; "
                        "use a new --run-id rather than mix results.")
    todo = _todo(p, p.run.records(samples=True, torn_ok=True))
    items: dict[str, list[tuple[int, int]]] = {task.name: [] for task in p.tasks}
    for task, sample in todo:
        items[task.name].append((len(sample.prompt_ids), sample.max_new_tokens))
    if not todo:
        basis, engine, sentence = None, None, "nothing to run: the run folder holds every sample."
    elif recorded is not None:
        basis, engine, sentence = _recorded_basis(calibrate_from, *recorded, p)
    else:
        basis, engine, sentence = _calibrate(cfg, p, todo, console)
    estimate = cost.estimate(items, basis) if basis is not None and todo else None
    return DryRun(p, todo, cost.plan_table(items), estimate, engine if todo else None, sentence)


def _read_cost(path: Path) -> tuple[dict[str, Any], Manifest | None]:
    """The cost an earlier run recorded (results.json) and its manifest; one sentence where there is none."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise UserError(f"--calibrate-from {path} is not a folder; give the folder of an earlier `lceval run`.")
    if not folder.results_path.exists() and not folder.results_path.is_symlink():
        raise UserError(f"--calibrate-from {path} holds no results.json; give the folder of an earlier `lceval run`.")
    recorded = folder.results().cost
    if not recorded or not recorded.get("generation_s") or not recorded.get("prompt_tokens"):
        raise UserError(f"--calibrate-from {path}: its results.json holds no cost record with generation time (a "
                        "run from before lceval recorded costs, or one that generated nothing); give a newer run "
                        "folder, or leave the flag out.")
    manifest = folder.manifest() if folder.manifest_path.exists() else None
    return recorded, manifest


def _recorded_basis(path: Path, recorded: dict[str, Any], manifest: Manifest | None,
                    p: Plan) -> tuple[dict[str, Any], float | None, str]:
    """An earlier run's cost, its engine start per session, and a sentence naming where it comes from."""
    model = manifest.model.get("spec", "?") if manifest else "?"
    backend = (manifest.backend or {}).get("name", "?") if manifest else "?"
    sessions = recorded.get("sessions") or 0
    start = recorded.get("engine_start_s")
    engine = start / sessions if isinstance(start, int | float) and sessions else None
    other = "" if model == p.model.spec else f"; another model than this run's {p.model.spec}"
    samples = recorded.get("samples") or 0
    answers = f", {recorded.get('generated_tokens', 0) / samples:.0f} generated tokens a sample" if samples else ""
    sentence = (f"tokens/s recorded in {path} ({samples} samples of model {model} on backend {backend}, "
                f"{cost.seconds_text(recorded['generation_s'])} of generation{answers}{other})")
    return recorded, engine, sentence


def _weights_bytes(path: Path) -> int:
    suffixes = {".safetensors", ".bin", ".pt", ".pth", ".gguf"}
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in suffixes)


def _calibrate(cfg: RunConfig, p: Plan, todo: list[tuple[Task, Sample]],
               console: Console) -> tuple[dict[str, Any] | None, float | None, str]:
    """Time the first samples of each task and length bucket on hf, where starting it is cheap."""
    import importlib.util
    import tempfile

    previous = (p.manifest.get("backend") or {}).get("name")
    backend_name = previous if (cfg.backend == "auto" and previous) else cfg.backend
    if backend_name == "auto":  # as open_backend decides, without starting an engine
        backend_name = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    advice = "give --calibrate-from RUN_DIR (an earlier run's folder) for an estimate"
    if backend_name != "hf":
        return None, None, (f"no estimate: backend {backend_name} is not started for a calibration (only hf on a "
                            f"small model is); {advice}.")
    size = _weights_bytes(p.model.path)
    if size > CALIBRATION_MODEL_BYTES:
        return None, None, (f"no estimate: the model's weights are {size / 2**30:.1f} GiB, more than the "
                            f"{CALIBRATION_MODEL_BYTES / 2**30:.0f} GiB a calibration starts hf for; {advice}.")
    by_task: dict[str, tuple[Task, list[Sample]]] = {}
    for task, sample in todo:
        by_task.setdefault(task.name, (task, []))[1].append(sample)
    # Per task, each length bucket's first samples (a batch), shortest buckets first, up to the token budget; each
    # bucket runs on its own, as a run's length-sorted batches mostly do.
    chosen: list[tuple[Task, list[Sample]]] = []
    for task, samples in by_task.values():
        used = 0
        fitting = [s for s in samples if len(s.prompt_ids) <= CALIBRATION_MAX_PROMPT]
        for label in cost.sorted_buckets(cost.length_bucket(len(s.prompt_ids)) for s in fitting):
            picked = []
            for sample in [s for s in fitting if cost.length_bucket(len(s.prompt_ids)) == label][: cfg.batch_size]:
                if (picked or used) and used + len(sample.prompt_ids) > CALIBRATION_PROMPT_TOKENS:
                    break
                picked.append(sample)
                used += len(sample.prompt_ids)
            if picked:
                chosen.append((task, picked))
    if not chosen:
        return None, None, (f"no estimate: every sample is longer than the {CALIBRATION_MAX_PROMPT} tokens a "
                            f"calibration runs; {advice}.")
    started = time.monotonic()
    try:
        backend = open_backend("hf", _backend_settings(p), console)
    except Exception as err:  # the run itself would say why in one sentence; here the plan still prints
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        return None, None, f"no estimate: hf could not start for a calibration ({reason}); {advice}."
    engine = time.monotonic() - started
    parts: dict[str, list[dict[str, Any]]] = {}
    try:
        shortest = min((s for _, samples in chosen for s in samples), key=lambda s: len(s.prompt_ids))
        list(backend.generate([GenerationRequest(shortest.prompt_ids, 1)]))  # warm-up, untimed: first-call costs
        with tempfile.TemporaryDirectory(prefix="lceval-calibration-") as scratch, \
                sample_progress(console) as progress:
            for task, samples in chosen:
                started = time.monotonic()
                finished = [cost.Finished(time.monotonic() - started, len(o.sample.prompt_ids), o.output_tokens or 0)
                            for o in task.run(backend, samples, progress, Path(scratch))]
                parts.setdefault(task.name, []).append(cost.task_cost(finished, time.monotonic() - started))
    finally:
        backend.close()
    tasks_cost = {name: cost.combine(costs) for name, costs in parts.items()}
    measured = cost.session_cost(engine, tasks_cost)
    sentence = (f"a calibration on hf: {measured['samples']} samples ({measured['prompt_tokens']:,} prompt tokens, "
                f"the first of each task and length bucket up to {CALIBRATION_MAX_PROMPT} tokens, each bucket on its "
                f"own after an untimed warm-up) generated in "
                f"{cost.seconds_text(measured['generation_s'])} after an engine start of "
                f"{cost.seconds_text(engine)}")
    return measured, engine, sentence
