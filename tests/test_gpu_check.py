"""bench/gpu_check.py runs end to end on CPU with tiny sizes (through bench/gpu_check.sh, as on the GPU machine),
so a GPU minute is never spent finding a broken script; its two hooks into the trainers fail loudly if stale."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from category_classification.core.env import offline_env

REPO = Path(__file__).resolve().parents[1]


def test_tiny_check_measures_every_part_through_the_wrapper(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = offline_env(PYTHON=sys.executable, GPU_CHECK_INPUTS=str(tmp_path / "no_inputs"))
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny", "--work", str(tmp_path / "w"),
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["mode"] == "tiny" and "errors" not in r
    eager, compiled = r["encoder"]["eager"], r["encoder_compiled"]
    assert eager["per_epoch"] and all(e["tokens_per_s"] > 0 for e in eager["per_epoch"])
    assert compiled["torch_compile"] == "eager" and compiled["per_epoch"]
    assert 0 <= eager["test_macro_f1_best_epoch"] <= 1 and eager["test_offers"] == 32
    runs = [x for x in r["lora"]["runs"] if x.get("gradient_checkpointing")]
    assert runs and runs[0]["tokens_per_s"] > 0 and runs[0]["train_tokens"] == r["lora"]["train_tokens"] > 0
    for name in ("encoder_80m", "qwen3_0.6b_lora"):
        rec = r["inference"][name]
        assert rec["batch1_titles_per_s"] > 0 and rec["batch256_titles_per_s"] > 0, rec
    p = r["projections"]
    assert p["note"].startswith("projections, not measurements") and "encoder_lspc_epoch" in p
    assert "TINY SIZES" in res.stdout and "PROJECTION predict_corpus_encoder_80m" in res.stdout


def test_hooks_fail_loudly_when_the_trainers_change(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.gpu_check import compiled_encoder, gradient_checkpointing

    with pytest.raises(RuntimeError, match="update compiled_encoder"):
        with compiled_encoder("eager"):
            pass  # no model built: the hook did nothing
    with pytest.raises(RuntimeError, match="update gradient_checkpointing"):
        with gradient_checkpointing(True):
            pass
    with gradient_checkpointing(True):
        from transformers import TrainingArguments  # as lora.training_arguments() does

        args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    from transformers import TrainingArguments

    assert isinstance(TrainingArguments, type)  # put back after the run


def test_full_sizes_without_a_gpu_stop_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO))
    import torch

    from bench.gpu_check import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--work", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()
