#!/usr/bin/env bash
# lceval-mini from scratch: train both stages, merge, ship the checkpoints inside the package, and evaluate both on
# their grid (the baselines under results/baselines/mini and the README's heatmaps). Run from a checkout of lceval
# after `bash scripts/install-cpu.sh`; about 73 minutes on 2 CPU cores (README, "lceval-mini").
#   bash scripts/build-mini.sh [OUT_DIR]     (default: out)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
export TOKENIZERS_PARALLELISM=false
lceval train --recipe recipes/mini/base.yaml --output-dir "$out/mini-base"
lceval train --recipe recipes/mini/extended.yaml --output-dir "$out/mini-extended-adapter" model.base="$out/mini-base"
lceval export "$out/mini-extended-adapter" --merge --output-dir "$out/mini-extended"
# ship: each stage's top-level files (weights, config, tokenizer, recipe, training record and log), not its
# intermediate checkpoints, trainer state or generated card
for name in mini-base mini-extended-adapter mini-extended; do
    rm -rf "harness/models/checkpoints/$name" && mkdir -p "harness/models/checkpoints/$name"
    find "$out/$name" -maxdepth 1 -type f ! -name training_args.bin ! -name README.md \
        -exec cp {} "harness/models/checkpoints/$name/" \;
done
cp recipes/mini/MODEL_CARD.md harness/models/checkpoints/README.md
for model in base extended; do
    lceval run --config "results/baselines/mini/$model/run.yaml" --out "$out/runs" --run-id "mini-$model"
done
for task in needle passkey; do
    lceval heatmap "$out/runs/mini-base" "$out/runs/mini-extended" --task "$task" --out docs/pictures/mini
done
echo "build-mini: promote the runs with: lceval gate --candidate $out/runs/mini-extended --baseline results/baselines/mini/extended --update-baseline (and the same for base)" >&2
