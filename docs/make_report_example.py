"""Rebuild docs/report-example.png: `lceval report` on a real demo run turned into two illustrative checkpoints.

The demo model retrieves nothing, so the picture is made honestly from one real run: an "oracle" checkpoint (each
output replaced by its target, rescored by the task's own scorer) and a "long-context regression" (the oracle's
outputs kept up to 512 tokens, the real model's outputs beyond, and at 512 tokens for the deepest needle).

    lceval run --config results/baselines/demo/run.yaml --out /tmp/docs --run-id real
    PYTHONPATH=tests python docs/make_report_example.py /tmp/docs/real
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_gate import copy_run, make_oracle, read_records, rebuild_results, write_records


def long_context_regression(real: Path, oracle: Path, target: Path) -> Path:
    run = copy_run(oracle, target, "long-context-regression")
    real_by_id = {(r["task"], r["id"]): r for r in read_records(real)}
    records = []
    for record in read_records(oracle):
        length = record["meta"].get("length", 0)
        broken = length > 512 or (length == 512 and record["meta"].get("depth") == 100)
        broken |= record["task"] == "topic" and record["meta"]["num_topics"] > 1
        records.append(real_by_id[(record["task"], record["id"])] if broken else record)
    write_records(run, records)
    rebuild_results(run)
    return run


def main(real: Path) -> None:
    work = real.parent / "docs-example"
    oracle = make_oracle(real, work / "oracle")
    candidate = long_context_regression(real, oracle, work / "long-context-regression")
    out = Path(__file__).parent / "report-example.png"
    subprocess.run(["lceval", "report", str(oracle), str(candidate), "-o", str(out)], check=True)
    subprocess.run(["lceval", "report", str(oracle), str(candidate), "-o", str(work / "report.html")], check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
