#!/usr/bin/env bash
# GPU check: GPT-2 124M tokens/s and MFU, the modern recipe's, peak memory and the loss's kernel on one NVIDIA GPU.
#
#   bash bench/gpu_check.sh              # on the GPU machine, after `make setup`; at most 8 minutes
#   bash bench/gpu_check.sh --dry-run    # on CPU: the same code with a tiny model (CI runs this)
#
# Other flags go to `python -m bench.gpu_check` (`--help`). Uses the project's venv (.venv, or $PYTHON), no network:
# offline switches are set for Hugging Face and W&B, and nothing is installed. Writes bench/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline DVC_NO_ANALYTICS=1
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"  # a single GPU
# The 8-minute limit of the whole check; the script itself starts no phase it cannot finish by --budget-s.
exec timeout --signal=TERM --kill-after=10 480 "$PYTHON" -m bench.gpu_check "$@"
