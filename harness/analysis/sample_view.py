"""Reading a run's samples as a person does: pick them by task and meta values, and lay out what the model was
asked, what it said and how that was scored. `lceval show --samples` and the HTML report both use this; every
model output is untrusted text, escaped by whoever renders it.
"""

from __future__ import annotations

import json
from typing import Any

from lceval.api.errors import UserError
from lceval.api.run_folder import is_control
from lceval.api.schema import TaskResults

MAX_OUTPUT_CHARS = 2000  # longer outputs are cut for display (the run folder keeps them whole)


def parse_where(conditions: list[str]) -> dict[str, str]:
    """`KEY=VALUE` conditions on a sample's meta (length=4000, depth=50, dataset=qasper)."""
    parsed = {}
    for text in conditions:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--where {text!r} is not of the form KEY=VALUE, e.g. --where length=4000.")
        parsed[key.strip()] = value.strip()
    return parsed


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):  # control=true
        return str(value).lower() == wanted.lower()
    if str(value) == wanted:
        return True
    try:
        return float(value) == float(wanted)  # depth 50 matches 50.0
    except (TypeError, ValueError):
        return False


def select(records: list[dict[str, Any]], task: str | None = None, where: dict[str, str] | None = None,
           failed_only: bool = False) -> list[dict[str, Any]]:
    """The records of `task` (every task if None) whose meta holds every `where` value; with `failed_only`, those
    that failed (`verdict`)."""
    where = where or {}
    tasks = {r["task"] for r in records}
    if task is not None and task not in tasks:
        raise UserError(f"the run has no samples of task {task!r}; it has {', '.join(sorted(tasks)) or 'none'}.")
    chosen = []
    for record in records:
        if task is not None and record["task"] != task:
            continue
        meta = record.get("meta") or {}
        if not all(key in meta and _matches(meta[key], value) for key, value in where.items()):
            continue
        if failed_only and not failed(record):
            continue
        chosen.append(record)
    if where and not chosen and records:
        keys = sorted({k for r in records for k in (r.get("meta") or {})})
        raise UserError(f"no sample matches --where {', '.join(f'{k}={v}' for k, v in where.items())}; "
                        f"meta keys: {', '.join(keys)}.")
    return chosen


def headline(record: dict[str, Any]) -> tuple[str, float] | None:
    """The first score of a record that is a number (tasks list their pass/fail metric first)."""
    for name, value in (record.get("scores") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            return name, float(value)
    return None


def verdict(record: dict[str, Any]) -> str:
    """'pass', 'fail', or '' where no score is a number. The first score passes at 1; a control sample (no needle)
    fails where it passes, since the model then answered what the prompt did not hold."""
    head = headline(record)
    if head is None:
        return ""
    return "pass" if (head[1] >= 1) != is_control(record) else "fail"


def failed(record: dict[str, Any]) -> bool:
    return verdict(record) == "fail"


def control_line(task_results: TaskResults) -> tuple[str, bool] | None:
    """One sentence on a task's no-needle controls (results' `control`), and whether it is a warning; None for a
    task that is neither a grid (`cells`) nor has controls."""
    control = task_results.control
    if not isinstance(control, dict):
        return ("no-needle control: none in this run", False) if task_results.cells else None
    found, lengths = control.get("found_without_needle", 0), control.get("by_length") or {}
    text = f"no-needle control: {found} of {len(lengths)} lengths answered without the needle"
    if not found:
        return text, False
    named = ", ".join(str(n) for n in control.get("found_lengths") or [])
    return (f"{text}: length {named} ({control.get('metric', 'the first metric')} passed with the needle left out; "
            "the heatmap measures memory there, not retrieval)"), True


def shorten(text: str | None, limit: int = MAX_OUTPUT_CHARS) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def meta_text(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (record.get("meta") or {}).items())


def scores_text(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in (record.get("scores") or {}).items())


def target_text(target: Any) -> str:
    """What a correct answer looks like, on one line (strings as JSON, so that blank lines show as \\n)."""
    if isinstance(target, dict):
        return "; ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in target.items())
    return json.dumps(target, ensure_ascii=False)


def excerpt_parts(record: dict[str, Any]) -> tuple[str, str, str] | None:
    """The prompt excerpt split around its highlighted span (before, highlighted, after), if the task gave one."""
    excerpt = record.get("excerpt")
    if not excerpt:
        return None
    text = excerpt.get("text", "")
    start, end = excerpt.get("highlight") or (0, 0)
    return text[:start], text[start:end], text[end:]
