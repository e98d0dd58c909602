"""lm-eval's tasks on lceval's backends: `mmlu` (the seed paper's protocol) and `lm-eval:<name>` for any other.

lm-eval builds the prompts and scores the answers with its own task definitions; the backend is reached through
`lceval.tasks.lm_eval_bridge.BackendLM`. Each document becomes one lceval sample, so a run folder holds one line per
document with lm-eval's per-document metrics, resumes by document, and is compared and gated like any other
run. Results are lm-eval's own aggregation (its pooled, size-weighted group scores and standard errors) plus the
plain mean over the subtasks of each group, which is how the seed paper reports MMLU's categories.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from lceval.api.errors import UserError
from lceval.api.registry import tasks
from lceval.api.settings import NonNegativeInt, settings_class
from lceval.api.task import Axis, Declaration, Outcome, PromptContext, Sample, Task

CACHE_FILE = "lm_eval_cache.db"  # lm-eval's request cache inside the run folder: what a killed run already has
MMLU_DESCRIPTION = ("MMLU through lm-eval's task definitions: zero-shot answer-letter log-likelihood under the chat "
                    "template (the seed paper's protocol); category scores as subject means and lm-eval's pooled acc")


@settings_class
class LmEvalOptions:
    """-o mmlu.KEY=VALUE and -o lm-eval:<name>.KEY=VALUE: each field's type is its range (lceval.api.settings)."""

    num_fewshot: NonNegativeInt | None = None  # None: the task's own default (lm-eval's rule)
    chat_template: bool = False  # wrap prompts in the model's chat template (and the run's --chat-template)
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    include_path: str | None = None  # a folder of extra lm-eval task YAML files
    data_dir: str | None = None  # mmlu only: a local copy (hub parquet or original CSV); default: bundled sample
    hub: bool = False  # mmlu only: lm-eval's own download of cais/mmlu instead of the bundled sample
    fewshot_seed: int = 1234  # lm-eval's default
    bootstrap_iters: NonNegativeInt = 100000  # lm-eval's default, for metrics whose standard error is bootstrapped


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval and datasets talk at INFO level and draw tqdm bars of their own; lceval shows its own progress."""
    import datasets
    import lm_eval.api.model
    import lm_eval.api.task

    for name in ("lm_eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    modules = (lm_eval.api.model, lm_eval.api.task)
    originals = [module.tqdm for module in modules]
    for module, original in zip(modules, originals, strict=True):
        module.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.tqdm = original


def _plain(value: Any) -> Any:
    """A metric value as JSON holds it (numpy scalars and tuples become floats and lists)."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(value, default=handle_non_serializable))


def _score_key(metric: str, filter_name: str) -> str:
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def _metric_key(key: str) -> tuple[str, str]:
    metric, _, filter_name = key.partition(",")
    return metric, filter_name or "none"


class LmEvalTask(Task):
    """One lm-eval task or group, run on an lceval backend."""

    version = "1"
    options_class = LmEvalOptions
    # Where the data and task files live; lm-eval's bootstrap count changes its stderr, not a sample's score.
    neutral_settings = frozenset({"data_dir", "include_path", "bootstrap_iters"})

    @classmethod
    def declaration(cls) -> Declaration:
        """MMLU's subjects grouped by lm-eval's categories (stem, humanities, ...); other tasks' have no category."""
        from lceval.tasks.mmlu_data import mmlu_categories

        return Declaration(axes=(Axis("category", "subtask", labels=mmlu_categories()),),
                           neutral_settings=cls.neutral_settings)

    def __init__(self, lm_eval_name: str, options: dict[str, Any] | None = None, name: str | None = None):
        self.lm_eval_name = lm_eval_name
        self.name = name or f"lm-eval:{lm_eval_name}"
        super().__init__(options)
        self._data_sha256: str | None = None
        self._chat_used = False

    # --- lm-eval's task objects ---
    def _include_paths(self) -> list[str]:
        paths = [self.opts.include_path] if self.opts.include_path else []
        if self.opts.data_dir is not None or (self.lm_eval_name == "mmlu" and not self.opts.hub):
            if self.lm_eval_name != "mmlu":
                raise UserError(f"{self.name} cannot read data_dir: lceval reads local copies for mmlu only; other "
                                "lm-eval tasks read their data as lm-eval does (hub or HF_DATASETS_CACHE).")
            from lceval.running.demo import cache_dir
            from lceval.tasks import mmlu_data

            root = Path(self.opts.data_dir).expanduser() if self.opts.data_dir else mmlu_data.bundled_dir()
            folder, self._data_sha256 = mmlu_data.prepare(root, cache_dir() / "lm_eval")
            paths.insert(0, str(folder))
        return paths

    @cached_property
    def loaded(self) -> dict[str, Any]:
        """lm-eval's {"tasks", "groups"} for this name, with few-shot settings applied as lm-eval's CLI does."""
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=self._include_paths() or None)
        try:
            with _quiet():
                loaded = manager.load([self.lm_eval_name])
        except KeyError as err:
            raise UserError(f"lm-eval has no task, group or tag {self.lm_eval_name!r}; `python -m lm_eval ls tasks` "
                            "lists them.") from err
        except (ConnectionError, FileNotFoundError, ValueError, OSError) as err:
            raise UserError(f"lm-eval could not load the data of {self.lm_eval_name} ({type(err).__name__}: "
                            f"{str(err)[:200]}); make it available offline (HF_DATASETS_CACHE) or, for mmlu, pass "
                            "-o mmlu.data_dir=DIR.") from err
        for task in loaded["tasks"].values():
            if self.opts.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=self.opts.num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=self.opts.fewshot_seed)
        return loaded

    def settings(self) -> dict[str, Any]:
        import lm_eval

        versions = {name: task.VERSION for name, task in sorted(self.loaded["tasks"].items())}
        shots = {name: task.get_config("num_fewshot") for name, task in sorted(self.loaded["tasks"].items())}
        return {**asdict(self.opts), "lm_eval": lm_eval.__version__, "task_versions": versions, "num_fewshot": shots,
                "data_sha256": self._data_sha256}

    # --- samples: one per document ---
    def _chat(self, ctx_chat: bool) -> bool:
        return self.opts.chat_template and ctx_chat

    def _build_requests(self, lm: Any, chat: bool) -> None:
        for task in self.loaded["tasks"].values():
            task.build_all_requests(
                rank=0, world_size=1,
                system_instruction=self.opts.system_instruction, apply_chat_template=chat,
                fewshot_as_multiturn=self.opts.fewshot_as_multiturn,
                chat_template=lm.apply_chat_template if chat else None,
                tokenizer_name=lm.tokenizer_name if chat else "",
            )

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        from lceval.tasks.lm_eval_bridge import BackendLM

        lm = BackendLM(ctx.tokenizer, ctx.window)
        self._chat_used = self._chat(ctx.chat_template)
        with _quiet():
            self._build_requests(lm, self._chat_used)
        built = []
        for name in sorted(self.loaded["tasks"]):
            task = self.loaded["tasks"][name]
            by_doc: dict[int, list[Any]] = defaultdict(list)
            for instance in task.instances:
                by_doc[instance.doc_id].append(instance)
            for doc_id in sorted(by_doc):
                instances = sorted(by_doc[doc_id], key=lambda i: i.idx)
                first = instances[0]
                budget = int(first.args[1].get("max_gen_toks", 256)) if first.request_type == "generate_until" else 0
                prompt = lm.tok_encode(first.args[0])[-(ctx.window - budget):]
                built.append(Sample(
                    id=f"{name}/{doc_id}", prompt_ids=prompt, max_new_tokens=budget,
                    target=_plain(task.doc_to_target(first.doc)),
                    meta={"subtask": name, "doc_id": doc_id, "request_type": first.request_type,
                          "requests": len(instances)},
                ))
        return built

    # --- running: lm-eval's evaluator on the pending documents ---
    def run(self, backend: Any, samples: list[Sample], progress: Any, run_dir: Path) -> Iterator[Outcome]:
        from lm_eval.api.model import CachingLM
        from lm_eval.evaluator import evaluate

        from lceval.tasks.lm_eval_bridge import BackendLM

        bars: dict[str, Any] = {}

        def show(kind: str, done: int, total: int) -> None:
            if kind not in bars:
                bars[kind] = progress.add_task(f"{self.name} {kind} on {backend.name}", total=total)
            progress.update(bars[kind], completed=done, total=total)

        chat = self._chat_used
        lm = BackendLM(backend.tokenizer, backend.settings.max_length, backend, samples[0].stop_token_ids, show)
        wanted: dict[str, list[int]] = defaultdict(list)
        for sample in samples:
            wanted[sample.meta["subtask"]].append(sample.meta["doc_id"])
        pending = {name: self.loaded["tasks"][name] for name in wanted}
        with _quiet():
            results = evaluate(
                lm=CachingLM(lm, str(run_dir / CACHE_FILE)), task_dict={"tasks": pending, "groups": {}},
                samples={name: sorted(ids) for name, ids in wanted.items()}, bootstrap_iters=0, log_samples=True,
                system_instruction=self.opts.system_instruction, apply_chat_template=chat,
                fewshot_as_multiturn=self.opts.fewshot_as_multiturn,
            )
        by_id = {sample.id: sample for sample in samples}
        for name, logged in results["samples"].items():
            yield from self._outcomes(name, logged, by_id)

    def _outcomes(self, name: str, logged: list[dict[str, Any]], by_id: dict[str, Sample]) -> Iterator[Outcome]:
        """One outcome per document, with the metrics of every filter lm-eval applied."""
        task = self.loaded["tasks"][name]
        merged: dict[int, dict[str, Any]] = {}
        for example in logged:
            entry = merged.setdefault(example["doc_id"], {"example": example, "scores": {}})
            for metric in example["metrics"]:
                entry["scores"][_score_key(metric, example["filter"])] = _plain(example[metric])
        for doc_id, entry in sorted(merged.items()):
            example = entry["example"]
            responses = example["filtered_resps"]
            if task.OUTPUT_TYPE == "multiple_choice":
                choices = task.doc_to_choice(example["doc"])
                best = max(range(len(responses)), key=lambda i: responses[i][0])
                output = str(choices[best]) if best < len(choices) else str(best)
            else:
                output = str(responses[0]) if len(responses) == 1 else json.dumps(_plain(responses))
            yield Outcome(by_id[f"{name}/{doc_id}"], output, entry["scores"])

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        raise NotImplementedError("lm-eval scores its documents in run(); there is no per-output rule to call")

    # --- aggregation: lm-eval's own, from the run folder's per-document metrics ---
    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from lm_eval.evaluator_utils import _process_results

        leaves = self.loaded["tasks"]
        accumulated: dict[str, dict[str, Any]] = {}
        for record in sorted(records, key=lambda r: (r["meta"]["subtask"], r["meta"]["doc_id"])):
            name = record["meta"]["subtask"]
            acc = accumulated.setdefault(name, {"task": leaves[name], "raw_metrics": defaultdict(list),
                                                "logged_samples": []})
            for key, value in record["scores"].items():
                acc["raw_metrics"][_metric_key(key)].append(value)
        if not accumulated:
            return {"n_samples": 0}
        complete = set(accumulated) == set(leaves)
        groups = self.loaded["groups"] if complete else {}  # a group's score needs all of its subtasks
        evaluated = _process_results(accumulated, groups, self.opts.bootstrap_iters)._to_eval_results()
        metrics = {name: _clean(values) for name, values in evaluated["results"].items()}
        headline = metrics.get(self.lm_eval_name) or (metrics[next(iter(metrics))] if len(metrics) == 1 else {})
        result: dict[str, Any] = {"n_samples": len(records), "metrics": dict(headline)}
        if groups:
            by_group = {name: {**metrics.get(name, {}), **_subtask_means(group, metrics)}
                        for name, group in groups.items()}
            result["metrics"].update(by_group.pop(self.lm_eval_name, {}))
            result["by_category"] = {_alias(groups[name]): values for name, values in sorted(by_group.items())}
        result["by_subtask"] = {name: metrics[name] for name in sorted(accumulated) if name in metrics}
        shots = {evaluated.get("n-shot", {}).get(name) for name in accumulated}
        result["num_fewshot"] = shots.pop() if len(shots) == 1 else sorted(shots, key=str)
        return result


def _alias(group: Any) -> str:
    return group.alias or group.name


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `acc,none` keys as lceval's score keys; the alias and sample counts dropped."""
    cleaned = {}
    for key, value in values.items():
        if "," not in key:
            continue
        metric, filter_name = key.split(",", 1)
        if isinstance(value, int | float):
            cleaned[_score_key(metric, filter_name)] = value
    return cleaned


def _subtask_means(group: Any, metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The plain mean over a group's leaf subtasks of each metric (the seed paper's MMLU category scores)."""
    leaves = [task.task_name for task in group.get_all_tasks()]
    keys = {k for leaf in leaves for k in metrics.get(leaf, {}) if not k.split(",")[0].endswith("_stderr")}
    means = {}
    for key in sorted(keys):
        values = [metrics[leaf][key] for leaf in leaves if key in metrics.get(leaf, {})]
        if values:
            means[f"{key}_subtask_mean"] = sum(values) / len(values)
    return means


@tasks.register_prefix("lm-eval:")
def lm_eval_task(lm_eval_name: str):
    def factory(options=None) -> LmEvalTask:
        return LmEvalTask(lm_eval_name, options)

    factory.description = f"lm-eval's task {lm_eval_name} through the lceval backend"
    factory.takes_num_fewshot = True
    factory.options_class = LmEvalOptions
    factory.task_class = LmEvalTask
    return factory


def _mmlu(options=None) -> LmEvalTask:
    return LmEvalTask("mmlu", {"num_fewshot": 0, "chat_template": True, **(options or {})}, name="mmlu")


_mmlu.description = MMLU_DESCRIPTION
_mmlu.reads_data_dir = True
_mmlu.takes_num_fewshot = True
_mmlu.options_class = LmEvalOptions
_mmlu.task_class = LmEvalTask
tasks.register("mmlu")(_mmlu)
