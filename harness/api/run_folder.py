"""The run folder: the contract between running and everything after it.

    manifest.json   what ran: model, adapter, backend, config, versions, hardware, sessions and what each cost
                    (readable without samples)
    samples.jsonl   one record per finished sample, appended and flushed as it finishes
    results.json    aggregates per task and the run's cost (lceval.running.cost), written at the end of a run
    *.png, *.csv    pictures and grids written by the tasks

Every field is typed and documented in lceval.api.schema (and docs/run-folder.md). A run killed at any point
continues with the same run id: a torn last line is cut off, finished samples are skipped, and the rest run.
Samples are keyed by (task, sample id) and carry the hash of their prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lceval.api import files
from lceval.api.errors import UserError
from lceval.api.schema import Manifest, Results

MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
RESULTS = "results.json"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a kill leaves the old file or the new one, never half of one."""
    files.write_json(path, data)


def read_json_file(path: Path) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        if path.parent.exists() and not path.parent.is_dir():
            raise UserError(f"{path.parent} is a file, not a run folder; give the folder `lceval run` wrote.")
        raise UserError(f"{path} does not exist; is {path.parent} a run folder?")
    data = files.read_json(path, hint="restore it or start a new run id")
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; restore it or start a new run id.")
    return data


def is_control(record: dict[str, Any]) -> bool:
    """A control sample (meta `control: true`, e.g. a needle task's prompt without the needle): scored like the
    others but kept out of its task's scores, and reported on its own."""
    return (record.get("meta") or {}).get("control") is True


def first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, old value, new value) where two settings trees differ (manifests, fingerprints)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            found = first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if old == new else (path, old, new)


class RunFolder:
    def __init__(self, path: Path):
        self.path = path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def ensure_writable(self, flag: str = "--out") -> None:
        """Create the folder, or say in one sentence (naming `flag`) why it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            reason = str(files.os_error(err, self.path, "create")).split(": ", 1)[-1].rstrip(".")
            raise UserError(f"cannot write the run folder {self.path} ({reason}); choose another {flag}.") from None

    def remove_if_empty(self) -> None:
        """Remove the folder if nothing was written into it (a run refused before its first file)."""
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def manifest(self) -> Manifest:
        return Manifest.from_dict(read_json_file(self.manifest_path))

    def write_manifest(self, manifest: Manifest | dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest.to_dict() if isinstance(manifest, Manifest) else manifest)

    def repair_samples(self) -> int:
        """Cut a torn last line (a kill in mid-write) off samples.jsonl; returns the bytes removed."""
        if not self.samples_path.exists():
            return 0
        data = files.read_bytes(self.samples_path)
        keep = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else len(data)
        if keep < len(data):
            with self.samples_path.open("r+b") as handle:
                handle.truncate(keep)
        return len(data) - keep

    def records(self, samples: bool = False, torn_ok: bool = False) -> list[dict[str, Any]]:
        """Every record; a malformed line other than a torn last one is an error, not silently dropped.

        `samples`: each record must also be a sample (task, id, scores), as running, comparing and gating read them.
        `torn_ok`: a torn last line (no newline, not JSON) is left out rather than refused, for a reader that may
        not repair the file (--dry-run).
        """
        if not self.samples_path.exists():
            return []
        records = []
        for number, line in files.text_lines(self.samples_path):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if torn_ok and not line.endswith("\n"):
                    break
                raise UserError(
                    f"{self.samples_path} line {number} is not valid JSON; fix or delete that line and rerun."
                ) from err
            if not isinstance(record, dict) or (samples and (not isinstance(record.get("task"), str)
                                                             or "id" not in record
                                                             or not isinstance(record.get("scores", {}), dict))):
                raise UserError(f"{self.samples_path} line {number} is not a sample record (an object with task, id "
                                "and scores); fix or delete that line and rerun.")
            records.append(record)
        return records

    def append(self, record: dict[str, Any], handle) -> None:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def open_for_append(self):
        return self.samples_path.open("a", encoding="utf-8")

    def results(self) -> Results:
        results = read_json_file(self.results_path)
        tasks = results.get("tasks")
        if not isinstance(tasks, dict) or not all(isinstance(t, dict) for t in tasks.values()):
            raise UserError(f"{self.results_path} holds no `tasks` mapping of task results; restore it, or rerun "
                            "`lceval run` with the same --run-id to write it again.")
        if not isinstance(results.get("cost"), dict | None):
            results = {**results, "cost": None}  # a hand-edited cost is no cost: readers say there is none
        return Results.from_dict(results)

    def write_results(self, results: Results) -> None:
        write_json(self.results_path, results.to_dict())
