"""Benchmark data files: the bundled samples, a local folder in the official layout, or the hub.

Rows are read from the raw jsonl with `json`, so numeric answers keep their types (the hub's parquet
conversion and `datasets` features can turn them into strings, which breaks the official scorers).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from lceval.api import files
from lceval.api.errors import UserError


@cache
def data_yaml(name: str) -> Any:
    """A YAML file of tasks/data (needle presets, the judge's rubric, topic prompts, haystacks), read safely."""
    import yaml

    return yaml.safe_load(resources.files("lceval.tasks").joinpath(f"data/{name}.yaml").read_text(encoding="utf-8"))


def spec(name: str) -> dict[str, Any]:
    """A spec file of tasks/data (longbench_spec, longbench_meta, infinitebench_spec, infinitebench_meta)."""
    return json.loads(resources.files("lceval.tasks").joinpath(f"data/{name}.json").read_text(encoding="utf-8"))


def numbered_rows(path: Path, text: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line of a jsonl file (or of `text`, read from inside `path`, such as a
    zip member); a line that is no JSON object is an error."""
    lines = enumerate(io.StringIO(text), start=1) if text is not None else files.text_lines(path)
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where} is not valid JSON ({err.msg}); fix or delete that line.") from None
        if not isinstance(row, dict):
            raise UserError(f"{where} is not a JSON object; each line must hold one record.")
        yield number, row


def read_jsonl(path: Path, required: tuple[str, ...] = (), text: str | None = None) -> list[dict[str, Any]]:
    """Rows of a jsonl file (or of `text` found in it); a bad line is named by file and line number."""
    rows = []
    for number, row in numbered_rows(path, text):
        missing = [field for field in required if field not in row]
        if missing:
            raise UserError(f"{path} line {number} lacks the field {missing[0]!r}; is it an official-format file?")
        rows.append(row)
    return rows


def bundled_file(benchmark: str, filename: str) -> Path:
    return Path(str(resources.files("lceval.tasks").joinpath(f"data/{benchmark}/{filename}")))


def hub_file(repo_id: str, filename: str, revision: str | None) -> tuple[Path, str]:
    """A dataset file from the hub cache (downloaded when the hub is reachable) and the commit it came from."""
    try:
        from huggingface_hub import hf_hub_download

        local = Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))
    except Exception as err:
        raise UserError(
            f"could not get {filename} of the dataset {repo_id} from the hub ({type(err).__name__}); download it "
            "and pass its folder with -o TASK.data_dir=DIR."
        ) from err
    return local, local.parent.name


def locate(benchmark: str, filename: str, data_dir: str | None, candidates: tuple[str, ...] = ("", "data")) -> Path:
    """`filename` in `data_dir` (or its data/ subfolder), else the bundled sample; one sentence when missing."""
    if data_dir is None:
        path = bundled_file(benchmark, filename)
        if not path.exists():
            raise UserError(f"lceval bundles no {benchmark} sample {filename}; pass -o {benchmark}.data_dir=DIR.")
        return path
    root = Path(data_dir).expanduser()
    looked = [root / sub / filename for sub in candidates]
    for path in looked:
        if path.exists():
            return path
    raise UserError(f"{filename} is not in {root} (looked at {', '.join(str(p) for p in looked)}); "
                    f"download the official {benchmark} files there.")
