"""Shared pieces of the training loops: LR schedule, length-bucketed (distributed) batches, padding, class
weights, checkpoint files with RNG state, classes missing from train, and outputs moved into place when complete."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str = "cosine", warmup_steps: int = 0,
          min_scale: float = 0.0) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then none/cosine/exponential decay
    from base_lr down to base_lr * min_scale at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "none":
        return base_lr
    span = max(total_steps - warmup_steps - 1, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "cosine":
        scale = min_scale + (1.0 - min_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "exponential":
        scale = max(min_scale, 1e-8) ** progress
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}")
    return base_lr * scale


class LengthBucketBatchSampler:
    """Batches of similar-length offers (little padding), in a shuffled order fixed by seed and epoch.

    Under DDP every rank builds the same batch list and takes every world_size-th batch, trimmed so all ranks
    run the same number of steps: it is the distributed sampler, and a resumed run sees the same batches.
    """

    def __init__(self, lengths, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, bucket_batches: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.bucket_batches = rank, world_size, bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        chunk = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, n, chunk):
            part = order[start:start + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches += [part[i:i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        batches = self._all_batches()
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[self.rank:usable:self.world_size]
        return iter(batches)

    def __len__(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size) if not self.shuffle else len(self._all_batches())
        return n // self.world_size if self.world_size > 1 else n


def pad_batch(sequences, pad_id: int):
    """Right-pad token id lists to the longest in the batch: (input_ids, attention_mask) tensors."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def class_weights(labels, num_labels: int, mode: str) -> list[float] | None:
    """Loss weights per class from the training labels: "balanced" (inverse frequency), "sqrt" (its square
    root, milder) or "none"; scaled to mean 1 over the classes."""
    if mode == "none":
        return None
    if mode not in ("balanced", "sqrt"):
        raise ValueError(f"class weighting must be none, balanced or sqrt, got {mode!r}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels).astype(float)
    w = counts.sum() / (num_labels * np.maximum(counts, 1.0))
    if mode == "sqrt":
        w = np.sqrt(w)
    return [float(x) for x in w / w.mean()]


def drop_tokens(sequences, p: float):
    """Word dropout for training: each token is removed with probability p, at least one is kept.

    Draws from the global torch generator, so a resumed run (its RNG state restored) drops the same tokens.
    """
    if p <= 0:
        return sequences
    out = []
    for s in sequences:
        keep = torch.rand(len(s)) >= p
        if not keep.any():
            keep[torch.randint(len(s), (1,))] = True
        out.append([t for t, k in zip(s, keep.tolist()) if k])
    return out


def capture_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, payload: dict) -> Path:
    """torch.save to a temporary file, then rename: a run killed mid-write never leaves a torn checkpoint."""
    from category_classification.core.artifacts import written_whole

    with written_whole(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path) -> dict:
    # The checkpoint holds numpy/python RNG states, so it is not a weights-only file.
    return torch.load(path, map_location="cpu", weights_only=False)


def classes_without_training_examples(splits, labels) -> list[str]:
    """Names of the classes that occur in an evaluation split but never in train: the model cannot learn them,
    so they are scored as misses and named in the output instead of stopping the run."""
    seen = set(int(y) for y in splits["train"]["label"])
    evaluated = set()
    for name, split in splits.items():
        if name != "train" and split is not None:
            evaluated.update(int(y) for y in split["label"])
    return [labels[i] for i in sorted(evaluated - seen)]


def report_missing_classes(missing, log=print) -> None:
    if missing:
        log(f"{len(missing)} class(es) occur in validation/test but not in train, so every offer of them counts "
            f"as a miss: {', '.join(missing)}")
