#!/usr/bin/env bash
# CI: evaluate lceval-mini's extended checkpoint (the default model) with the committed baseline's own config, and
# gate it against that baseline (results/baselines/mini/extended) with the real commands. Exit 0 pass, 1 regression,
# 2 runs not comparable.
#   bash scripts/ci-gate.sh [OUT_DIR]        (default: a temporary folder; the verdict, summary and report land there)
# After an intended change of scores, promote a fresh run and commit it:
#   lceval gate --candidate OUT_DIR/candidate --baseline results/baselines/mini/extended --update-baseline
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=results/baselines/mini/extended
out="${1:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
lceval run --config "$baseline/run.yaml" --out "$out" --run-id candidate
lceval compare "$baseline" "$out/candidate" --format md > "$out/compare.md"
lceval report "$baseline" "$out/candidate" -o "$out/report.html"
status=0
lceval gate --baseline "$baseline" --candidate "$out/candidate" --policy "$baseline/gate.yaml" \
    --json "$out/verdict.json" --summary "${GITHUB_STEP_SUMMARY:-$out/summary.md}" || status=$?
echo "ci-gate: exit $status; verdict, summary, compare table and report in $out" >&2
exit "$status"
