"""The run folder's schema (lceval.api.schema): its document is current, and a run writes exactly its fields."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from lceval.api import schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "run-folder.md"


def test_the_document_is_generated_from_the_schema():
    assert DOC.read_text(encoding="utf-8") == schema.markdown(), (
        "docs/run-folder.md is stale; regenerate it: python -m lceval.api.schema > docs/run-folder.md")


def test_every_field_is_documented():
    for _, cls in schema.FILES:
        for f in fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no documentation"


def test_a_run_writes_the_schemas_fields(tmp_path, demo_model, offline):
    """A finished run's manifest, sample records and results hold the schema's fields and no others."""
    from rich.console import Console

    from lceval.running.config import RunConfig
    from lceval.running.runner import execute

    cfg = RunConfig(model=str(demo_model), tasks=["passkey"], backend="hf", out=str(tmp_path), run_id="r",
                    task_options={"passkey": {"lengths": [200], "depths": [50]}})
    run_dir = execute(cfg, Console(quiet=True))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest_fields = {f.name for f in fields(schema.Manifest)}
    assert set(manifest) == manifest_fields - {"baseline"}
    assert manifest["schema_version"] == schema.SCHEMA_VERSION
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert records and all(set(r) == {f.name for f in fields(schema.SampleRecord)} for r in records)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) == {f.name for f in fields(schema.Results)}
    passkey = results["tasks"]["passkey"]
    assert {"version", "n_expected", "n_samples", "metrics", "by_length", "cells", "control"} <= set(passkey)
    assert passkey["n_samples"] == passkey["n_expected"] == 2  # the cell and its no-needle control
