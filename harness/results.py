"""The run folder: the contract between running and everything after it.

    manifest.json   what ran: model, adapter, backend, config, versions, hardware (readable without samples)
    samples.jsonl   one record per finished sample, appended and flushed as it finishes
    results.json    aggregates per task, written at the end of a run
    *.png, *.csv    pictures and grids written by the tasks

A run killed at any point continues with the same run id: a torn last line is cut off, finished samples
are skipped, and the rest run. Samples are keyed by (task, sample id) and carry the hash of their prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lceval.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
RESULTS = "results.json"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UserError(f"{path} does not exist; is {path.parent} a run folder?") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore it or start a new run id.") from err


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

    def ensure_writable(self) -> None:
        """Create the folder, or say in one sentence why it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run folder {self.path} ({err.strerror}); choose another --out.") from err

    def remove_if_empty(self) -> None:
        """Remove the folder if nothing was written into it (a run refused before its first file)."""
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def manifest(self) -> dict[str, Any]:
        return read_json_file(self.manifest_path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest)

    def repair_samples(self) -> int:
        """Cut a torn last line (a kill in mid-write) off samples.jsonl; returns the bytes removed."""
        if not self.samples_path.exists():
            return 0
        data = self.samples_path.read_bytes()
        keep = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else len(data)
        if keep < len(data):
            with self.samples_path.open("r+b") as handle:
                handle.truncate(keep)
        return len(data) - keep

    def records(self) -> list[dict[str, Any]]:
        """Every sample record; a malformed line other than a torn last one is an error, not silently dropped."""
        if not self.samples_path.exists():
            return []
        records = []
        with self.samples_path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(
                        f"{self.samples_path} line {number} is not valid JSON; fix or delete that line and rerun."
                    ) from err
        return records

    def append(self, record: dict[str, Any], handle) -> None:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def open_for_append(self):
        return self.samples_path.open("a", encoding="utf-8")

    def results(self) -> dict[str, Any]:
        return read_json_file(self.results_path)

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.results_path, results)
