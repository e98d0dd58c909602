"""MMLU from a local copy, for lm-eval's own MMLU task definitions, which otherwise fetch `cais/mmlu` from the hub.

A local copy comes in one of two official layouts: the hub's (`<subject>/test-*.parquet`, columns question,
subject, choices, answer) or the original release's CSV files (`data/test/<subject>_test.csv`, no header:
question, A, B, C, D, answer letter). Either is rewritten once into a folder `datasets` loads by config name
(one jsonl per subject and split, listed in README.md), and lm-eval's installed MMLU task files are copied
beside it with `dataset_path` pointing there. Prompts, few-shot sampling and metrics stay lm-eval's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lceval.api import files
from lceval.api.errors import UserError

SPLITS = {"test": ("test",), "dev": ("dev",), "validation": ("validation", "val")}  # hub name: names in files
LETTERS = "ABCD"
HUB_DATASET = "cais/mmlu"


def bundled_dir() -> Path:
    return Path(str(resources.files("lceval.tasks").joinpath("data/mmlu")))


def lm_eval_mmlu_dir() -> Path:
    """lm-eval's installed MMLU task files, found without importing lm-eval (its import loads `datasets`, most
    of a second, which `lceval compare` and `gate` need not pay); ImportError where lm-eval is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lm-eval is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks" / "mmlu" / "default"


@cache
def mmlu_categories() -> dict[str, str]:
    """lm-eval's MMLU subject task -> category (its task files' `tag`, e.g. mmlu_stem_tasks -> stem); empty where
    lm-eval is not installed."""
    try:
        mapping = {}
        for path in lm_eval_mmlu_dir().glob("mmlu_*.yaml"):
            tag = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("tag", "")
            if isinstance(tag, str) and tag.startswith("mmlu_"):
                mapping[path.stem] = tag.removeprefix("mmlu_").removesuffix("_tasks").replace("_", " ")
        return mapping
    except (ImportError, OSError):
        return {}


def subjects() -> list[str]:
    """The 57 subjects, as lm-eval's task files name them."""
    return sorted(p.stem.removeprefix("mmlu_") for p in lm_eval_mmlu_dir().glob("mmlu_*.yaml"))


def _csv_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    rows = []
    text = files.read_text(path)
    with io.StringIO(text, newline="") as handle:
        for number, cells in enumerate(csv.reader(handle), start=1):
            if len(cells) != 6 or cells[5].strip() not in LETTERS:
                raise UserError(f"{path} line {number} is not an MMLU row (question, A, B, C, D, answer letter); "
                                "fix or delete it.")
            rows.append({"question": cells[0], "subject": subject, "choices": cells[1:5],
                         "answer": LETTERS.index(cells[5].strip())})
    return rows


def _parquet_rows(path: Path, subject: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()
    missing = {"question", "choices", "answer"} - set(table[0] if table else {"question", "choices", "answer"})
    if missing:
        raise UserError(f"{path} lacks the column {sorted(missing)[0]!r}; is it the hub's cais/mmlu parquet?")
    return [{"question": r["question"], "subject": subject, "choices": list(r["choices"]), "answer": int(r["answer"])}
            for r in table]


def _find(root: Path, subject: str, names: tuple[str, ...]) -> tuple[Path, str] | None:
    """The file holding one subject's split in either layout, and its kind."""
    for name in names:
        for folder in (root / "data" / name, root / name):
            path = folder / f"{subject}_{name}.csv"
            if path.exists():
                return path, "csv"
        found = sorted((root / subject).glob(f"{name}-*.parquet"))
        if found:
            return found[0], "parquet"
    return None


def read_local(root: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """subject -> split -> rows, for every subject lm-eval's MMLU needs; one sentence for what is missing."""
    if not root.is_dir():
        raise UserError(f"MMLU folder {root} does not exist; pass the folder of the hub's cais/mmlu or of the "
                        "original CSV release with -o mmlu.data_dir=DIR.")
    data: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for subject in subjects():
        data[subject] = {}
        for split, names in SPLITS.items():
            found = _find(root, subject, names)
            if found is None:
                if split == "validation":
                    continue  # lm-eval's MMLU reads only test and dev
                raise UserError(f"{root} has no MMLU {split} file for {subject} (looked for "
                                f"data/{names[0]}/{subject}_{names[0]}.csv and {subject}/{split}-*.parquet); "
                                "is it a complete copy of MMLU?")
            path, kind = found
            data[subject][split] = _csv_rows(path, subject) if kind == "csv" else _parquet_rows(path, subject)
    return data


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def prepare(root: Path, cache: Path) -> tuple[Path, str]:
    """lm-eval task files reading the MMLU copy at `root`: (their folder, for TaskManager(include_path), and the
    data's sha256). Written once per distinct data under `cache`."""
    data = read_local(root)
    digest = _digest(data)
    folder = cache / f"mmlu-{digest[:16]}"
    if (folder / "done").exists():
        return folder / "tasks", digest
    shutil.rmtree(folder, ignore_errors=True)
    dataset = folder / "dataset"
    configs = []
    for subject, splits in data.items():
        (dataset / subject).mkdir(parents=True)
        for split, rows in splits.items():
            with (dataset / subject / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        configs.append({"config_name": subject,
                        "data_files": [{"split": split, "path": f"{subject}/{split}.jsonl"} for split in splits]})
    (dataset / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}) + "---\n", encoding="utf-8")
    tasks = folder / "tasks" / "mmlu"
    shutil.copytree(lm_eval_mmlu_dir(), tasks, ignore=shutil.ignore_patterns("__pycache__"))
    template = tasks / "_default_template_yaml"
    text = template.read_text(encoding="utf-8")
    if f"dataset_path: {HUB_DATASET}" not in text:
        raise UserError(f"lm-eval's MMLU template {lm_eval_mmlu_dir()} no longer reads {HUB_DATASET}; "
                        "install the lm-eval version lceval pins.")
    template.write_text(text.replace(f"dataset_path: {HUB_DATASET}", f"dataset_path: {dataset}"), encoding="utf-8")
    (folder / "done").write_text(digest)
    return folder / "tasks", digest
