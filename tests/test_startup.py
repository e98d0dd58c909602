"""Commands that need no model start without the engines: `import lceval.cli`, `lceval tasks`, `lceval models`
and `lceval compare` (of a run with MMLU samples) import none of torch, vLLM, transformers, lm-eval, datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "vllm", "transformers", "lm_eval", "datasets")
BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "demo"  # holds mmlu samples
SCRIPT = """
import json, sys
heavy = {heavy!r}
seen = {{}}
import lceval.cli
seen["import lceval.cli"] = [m for m in heavy if m in sys.modules]
from lceval.cli import run_cli
for argv in (["tasks"], ["models"], ["compare", {baseline!r}, {baseline!r}, "-f", "json", "-o", {out!r}]):
    assert run_cli(argv) == 0, argv
    seen["lceval " + argv[0]] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""


def test_commands_without_a_model_import_no_engine(cli_env, tmp_path):
    script = SCRIPT.format(heavy=HEAVY, baseline=str(BASELINE), out=str(tmp_path / "compare.json"))
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"import lceval.cli": [], "lceval tasks": [], "lceval models": [], "lceval compare": []}
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    # lm-eval's MMLU categories were still found (its task files located without importing it).
    assert any(row["task"] == "mmlu" and row["breakdown"] == "category" for row in rows)
