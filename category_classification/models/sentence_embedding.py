"""Frozen sentence embeddings (mean-pooled, L2-normalised token vectors of a pretrained encoder) as extra
features for the linear model (LinearConfig.embed_model).

The encoder is never trained here; its vectors carry what n-grams miss (a word never seen in training
that means a seen one). One loaded encoder per (folder, max_length) is shared in a process; in training it
remembers the texts it encoded, so cross-validation folds, the three GS1 levels and a refit encode each text
once. A loaded model's encoder remembers nothing: a service's memory does not grow with what it is sent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from category_classification.core.cli import UserError

MEMO_LIMIT = 200_000  # texts remembered per encoder (384 floats each: about 300 MB), then no more are added
EMBEDDER_DIR = "embedder"  # the copy a saved linear model keeps, so its folder runs offline anywhere


class SentenceEmbedder:
    """`encode(texts)` -> (n, dim) float32 unit vectors; `save(folder)` writes the encoder and its tokenizer."""

    def __init__(self, name_or_path, max_length: int = 128, batch_size: int = 64, memo_limit: int = MEMO_LIMIT,
                 safetensors_only: bool = False):
        import torch

        from category_classification.models.hf import check_tokenizer_fits, load_model, position_limit
        from category_classification.models.tokenization import load_tokenizer

        if max_length < 1:
            raise UserError(f"--embed_seq_len must be at least 1, got {max_length}")
        self.name = str(name_or_path)
        self.max_length, self.batch_size, self.memo_limit = int(max_length), int(batch_size), int(memo_limit)
        self.tokenizer = load_tokenizer(self.name)
        # a saved model's copy is read as safetensors only: never a pickled weights file put beside it
        extra = {"use_safetensors": True} if safetensors_only else {}
        self.model = load_model(self.name, dtype=torch.float32, base=True, **extra).eval()
        check_tokenizer_fits(self.model, self.tokenizer, self.name)
        # longer texts are cut where the encoder's positions end (a longer input crashes inside it)
        self.max_length = min(self.max_length, position_limit(self.model) or self.max_length)
        self._memo: dict[str, np.ndarray] = {}
        try:  # a model whose forward pass gives no token vectors (an encoder-decoder, a head-only config)
            self.dim = int(self._vectors(["a product"]).shape[1])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{self.name!r} does not give token vectors to embed with: {first}") from None

    def _vectors(self, batch: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(batch, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # an empty text: its special tokens
        return torch.nn.functional.normalize(mean, dim=-1).numpy()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = sorted({t for t in texts if t not in self._memo}, key=len)  # similar lengths pad little
        fresh = {}
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            fresh.update(zip(batch, self._vectors(batch)))
        for i, t in enumerate(texts):
            out[i] = self._memo[t] if t in self._memo else fresh[t]
        room = self.memo_limit - len(self._memo)
        if room > 0:
            self._memo.update(list(fresh.items())[:room])
        return out

    def save(self, folder) -> Path:
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        return folder


@functools.lru_cache(maxsize=4)
def _shared(name: str, max_length: int, saved_copy: bool) -> SentenceEmbedder:
    return SentenceEmbedder(name, max_length, memo_limit=0 if saved_copy else MEMO_LIMIT,
                            safetensors_only=saved_copy)


def check_embed_model(name_or_path, max_length: int = 128) -> SentenceEmbedder:
    """--embed_model checked before any fitting (a bad one used to fail only after the n-gram fit): a local path
    must be a Hugging Face model folder, and the encoder must load and embed (SentenceEmbedder's checks). The
    loaded encoder is the one the fit then uses (load_embedder keeps it)."""
    p = Path(str(name_or_path)).expanduser()
    looks_local = p.is_absolute() or str(name_or_path).startswith((".", "~")) or len(p.parts) > 2
    if p.exists() or looks_local:  # a hub id is "name" or "owner/name"
        if not p.exists():
            raise UserError(f"--embed_model {name_or_path}: no such folder")
        if not p.is_dir():
            raise UserError(f"--embed_model {name_or_path} is a file; it takes a sentence-encoder folder or hub id")
        if not (p / "config.json").is_file():
            raise UserError(f"--embed_model {name_or_path} is not a Hugging Face model folder (no config.json); it "
                            "takes a sentence encoder such as sentence-transformers/all-MiniLM-L6-v2")
    return load_embedder(name_or_path, max_length)


def load_embedder(name_or_path, max_length: int = 128, saved_copy: bool = False) -> SentenceEmbedder:
    """The process's encoder for this folder (or hub id) and length, loaded once. For training it remembers
    what it encoded; a model folder's copy (`saved_copy`) remembers nothing and is read from safetensors."""
    p = Path(str(name_or_path)).expanduser()
    name = str(p.resolve()) if p.exists() else str(name_or_path)
    return _shared(name, int(max_length), bool(saved_copy))
