"""InfiniteBench (12 tasks), following the official create_prompt / truncation / scoring.

Prompt families: `chat` (the official gpt4 templates, wrapped in the model's chat template) and `base` (the
yarn_mistral templates, completion style, no chat template), chosen by -o infinitebench.template=chat|base.
The formatted prompt is middle-truncated to `max_length` tokens (BOS counted); generation is greedy with each
task's official length, cut to what the window leaves. Scoring is lceval.metrics.infinitebench with the
scorer version (`v-a`, the June 2024 snapshot behind the published table, or `v-b`, August 2024) recorded.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from lceval.api.errors import UserError
from lceval.api.prompting import bos_ids, encode, middle_truncate
from lceval.api.registry import register_variant
from lceval.api.settings import CommaList, Count, parse_options, settings_class
from lceval.api.task import Axis, Metric, PromptContext, Sample, Task
from lceval.metrics import infinitebench as infinitebench_metrics
from lceval.tasks.benchmark_data import hub_file, locate, read_jsonl, spec

HUB_REPO = "xinrongzhang2022/InfiniteBench"
FAMILIES = {"chat": "gpt4", "base": "yarn_mistral"}
# The official model whose scoring rule each family follows (math_calc drops GPT-4's echoed first number).
SCORING_MODEL = {"chat": "gpt4", "base": "yarn-mistral"}
TEMPLATE_ROOM = 100  # tokens left for the chat template around the truncated prompt


def tasks_spec() -> dict[str, dict[str, Any]]:
    return spec("infinitebench_spec")


@settings_class
class InfiniteBenchOptions:
    """-o infinitebench.KEY=VALUE (and infinitebench/<task>): each field's type is its range (lceval.api.settings)."""

    tasks: CommaList | None = None
    template: Literal["chat", "base"] = "chat"  # chat (the official gpt4 templates) or base (the yarn_mistral ones)
    chat_template: bool | None = None  # wrap in the model's chat template; default: for the chat family only
    scorer: Literal["v-a", "v-b"] = "v-a"  # infinitebench_metrics.SCORERS
    data_dir: str | None = None  # a folder of the official <task>.jsonl files; default: bundled samples
    hub: bool = False
    revision: str | None = None
    max_length: Count | None = None  # truncation length; default: the window less the answer and template room

    @classmethod
    def from_dict(cls, options: dict[str, Any], task: str = "infinitebench") -> InfiniteBenchOptions:
        opts = parse_options(cls, options, task)
        bad = [t for t in opts.tasks or [] if t not in tasks_spec()]
        if bad:
            raise UserError(f"unknown InfiniteBench task {bad[0]!r}; tasks: {', '.join(tasks_spec())}.")
        return opts


def ground_truth(task: str, row: dict[str, Any]) -> Any:
    """The label the official scorer compares with: [option text, letter] for the choice tasks, else the answer."""
    answer = row["answer"]
    if task not in ("code_debug", "longbook_choice_eng"):
        return answer
    if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
        return answer
    text = answer[0] if isinstance(answer, list) else answer
    return [text, "ABCD"[row["options"].index(text)]]


def template_fields(task: str, row: dict[str, Any]) -> dict[str, str]:
    """Everything the official create_prompt passes to str.format for this task."""
    values = {"context": row["context"], "input": row["input"], "question": row["input"]}
    for letter, option in zip("ABCD", row.get("options") or [], strict=False):
        values[f"OPTION_{letter}"] = option
    if task == "code_run":
        calls = re.findall(r"func_[0-9]+\(\-?[0-9]+\)", row["input"])
        if not calls:
            raise UserError(f"code_run item {row.get('id')} has no func_N(x) call in its input.")
        values.update(func_call=calls[0], func=calls[0].split("(")[0])
    if task == "math_find":
        found = re.findall(r"The .+ of", row["input"])
        if not found:
            raise UserError(f"math_find item {row.get('id')} input does not ask for 'The ... of'.")
        values["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    return values


class InfiniteBenchTask(Task):
    name = "infinitebench"
    version = "1"
    options_class = InfiniteBenchOptions
    description = "InfiniteBench (12 tasks), official chat/base templates, middle truncation, v-a/v-b scorers."
    metrics = (Metric("score", "Official metric of the task (0..1)"),)
    axes = (Axis("subtask", "task"),)
    neutral_settings = frozenset({"data_dir"})

    @classmethod
    def score_predictions(cls, pred_dir: Path, options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
        """compute_scores.py on the preds_<task>.jsonl files, with the scorer version asked for."""
        from lceval.api.settings import ScoreFlags, flags

        chosen = flags(ScoreFlags, **({"scorer": options["scorer"]} if "scorer" in options else {}))
        if options.get("e"):
            raise UserError("--e (LongBench-E) applies to longbench, not infinitebench.")
        return infinitebench_metrics.score_pred_dir(pred_dir, scorer=chosen.scorer)

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self.task_names = self.opts.tasks or list(tasks_spec())
        self.revision: str | None = None

    def settings(self) -> dict[str, Any]:
        return {**asdict(self.opts), "tasks": self.task_names}

    def _limit(self, window: int, task: str) -> int:
        return self.opts.max_length or window - min(tasks_spec()[task]["maxlen"], window // 4) - TEMPLATE_ROOM

    def _rows(self, task: str) -> list[dict[str, Any]]:
        filename = f"{task}.jsonl"
        if self.opts.hub and self.opts.data_dir is None:
            path, self.revision = hub_file(HUB_REPO, filename, self.opts.revision)
        else:
            path = locate("infinitebench", filename, self.opts.data_dir)
        return read_jsonl(path, ("context", "input", "answer"))

    def build_samples(self, ctx: PromptContext) -> list[Sample]:
        family = FAMILIES[self.opts.template]
        n_bos = len(bos_ids(ctx.tokenizer))
        samples = []
        for task in self.task_names:
            info = tasks_spec()[task]
            system = None
            template = info["prompt_by_model_family"][family]
            if family == "gpt4" and task == "math_calc":  # the official GPT-4 run sends the raw context
                template, system = "{context}", spec("infinitebench_meta")["gpt4_math_calc_system"]
            wrap = self.opts.chat_template if self.opts.chat_template is not None else self.opts.template == "chat"
            turn = ctx.user_turn(system, chat=wrap)
            limit = self._limit(ctx.window, task)
            for index, row in enumerate(self._rows(task)):
                content = encode(ctx.tokenizer, template.format(**template_fields(task, row)))
                kept = middle_truncate(content, limit, n_bos)
                prompt = turn.wrap(kept)
                budget = min(info["maxlen"], ctx.window - len(prompt))
                if budget < 1:
                    raise UserError(f"infinitebench {task}: max_length {limit} leaves no room for the answer in the "
                                    f"window of {ctx.window}; lower -o {self.name}.max_length.")
                samples.append(Sample(
                    id=f"{task}/{row.get('id', index)}",
                    prompt_ids=prompt,
                    max_new_tokens=budget,
                    target={"ground_truth": ground_truth(task, row)},
                    meta={"task": task, "truncated": len(kept) < len(content), "prompt_tokens": len(prompt),
                          "answer_budget_cut": budget < info["maxlen"]},
                ))
        return samples

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        task = sample.meta["task"]
        value = infinitebench_metrics.score_sample(task, output, sample.target["ground_truth"], scorer=self.opts.scorer,
                                                   model_name=SCORING_MODEL[self.opts.template])
        return {"score": float(value)}

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        by_task: dict[str, list[float]] = {}
        for record in records:
            by_task.setdefault(record["meta"]["task"], []).append(record["scores"]["score"])
        scores = {t: infinitebench_metrics.percent(infinitebench_metrics.mean_score(v))
                  for t, v in sorted(by_task.items())}
        result: dict[str, Any] = {"n_samples": len(records), "scorer": self.opts.scorer, "by_task": scores}
        if scores:
            result["metrics"] = {"average_over_tasks": round(sum(scores.values()) / len(scores), 2)}
        if self.revision:
            result["data_revision"] = self.revision
        return result


def _register(name: str, description: str, **preset: Any) -> None:
    register_variant(InfiniteBenchTask, name, description, reads_data_dir=True, **preset)


_register("infinitebench", InfiniteBenchTask.description)
for _task, _info in tasks_spec().items():
    _register(f"infinitebench/{_task}", f"InfiniteBench {_info['display_name']} ({_task}).", tasks=[_task])
# The seed paper's preset: LongBookQA-Eng and LongBookSum-Eng truncated to 80,000 tokens, with the yarn_mistral
# (base) templates inside the model's chat template, as its eval_infbench.py ran them.
_register("infinitebench-paper", "The seed paper's InfiniteBench setting (En.QA and En.Sum at 80,000 tokens).",
          tasks=["longbook_qa_eng", "longbook_sum_eng"], max_length=80000, template="base", chat_template=True)


def write_prediction_files(records: list[dict[str, Any]], out_dir) -> list:
    """The run's records as official InfiniteBench prediction files (preds_<task>.jsonl: id, prediction,
    ground_truth), for the official compute_scores.py or `lceval score infinitebench`."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in sorted({r["meta"]["task"] for r in records}):
        path = out / f"preds_{task}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for r in (r for r in records if r["meta"]["task"] == task):
                line = {"id": r["id"].split("/", 1)[1], "prediction": r["output"],
                        "ground_truth": r["target"]["ground_truth"]}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        written.append(path)
    return written
