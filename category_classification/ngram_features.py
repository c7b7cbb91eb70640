"""Hashed word and character n-gram features computed with numpy, for the linear classifier.

scikit-learn's analyzers build every n-gram as a Python string, which caps prediction at a few
thousand titles/s on two cores; here character n-grams are rolling hashes over code points of a
whole batch at once, and words cost one crc32 each. No vocabulary: memory is fixed by `bits`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads the bits before the shift
_BASE = np.uint64(1_000_003)


@dataclass
class NgramSpec:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    bits: int = 19  # per block: 2**19 word columns + 2**19 character columns
    char_min_df: int = 2  # character buckets seen in fewer training texts get weight 0 (noise)


def _normalise(text: str) -> str:
    return " " + " ".join(text.lower().split()) + " "


def _bucket(h: np.ndarray, bits: int) -> np.ndarray:
    return ((h * _MULT) >> np.uint64(64 - bits)).astype(np.int64)


def char_ngrams(texts: Sequence[str], lo: int, hi: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(document, bucket) of every hashed character n-gram (lo..hi) of lower-cased, padded texts."""
    docs = [_normalise(t) for t in texts]
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    codes = np.frombuffer("".join(docs).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    doc_of = np.repeat(np.arange(len(docs)), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    room = np.repeat(starts + lengths, lengths) - np.arange(len(codes))  # chars left in the doc
    # Like scikit-learn's char_wb: an n-gram may start or end on a space but never span two words.
    spaces = np.concatenate(([0], np.cumsum(codes == 32)))
    rows, cols = [], []
    for n in range(lo, hi + 1):
        m = len(codes) - n + 1
        if m <= 0:
            break
        h = np.full(m, n, dtype=np.uint64)  # seeding with n keeps "ab" and " ab" hashes apart
        for k in range(n):
            h = h * _BASE + codes[k:k + m]
        ok = room[:m] >= n
        if n > 2:
            ok &= spaces[n - 1:n - 1 + m] == spaces[1:1 + m]
        rows.append(doc_of[:m][ok])
        cols.append(_bucket(h[ok], bits))
    return _cat(rows), _cat(cols)


def word_ngrams(texts: Sequence[str], lo: int, hi: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(document, bucket) of every hashed word n-gram (lo..hi) of lower-cased texts."""
    tokens = [_WORD.findall(t.lower()) for t in texts]
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    h1 = np.fromiter((zlib.crc32(w.encode("utf-8")) for ts in tokens for w in ts), dtype=np.uint64,
                     count=int(lengths.sum()))
    doc_of = np.repeat(np.arange(len(tokens)), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    room = np.repeat(starts + lengths, lengths) - np.arange(len(h1))
    rows, cols = [], []
    for n in range(lo, hi + 1):
        m = len(h1) - n + 1
        if m <= 0:
            break
        h = np.full(m, 7919 * n, dtype=np.uint64)
        for k in range(n):
            h = h * _BASE + h1[k:k + m]
        ok = room[:m] >= n
        rows.append(doc_of[:m][ok])
        cols.append(_bucket(h[ok], bits))
    return _cat(rows), _cat(cols)


def _cat(parts) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class HashedTfidf:
    """Word and character blocks, each sublinear-tf x idf and L2-normalised, side by side."""

    def __init__(self, spec: NgramSpec | None = None):
        self.spec = spec or NgramSpec()
        self.idf: np.ndarray | None = None  # (2 * 2**bits,) float32, fitted

    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """n-gram counts: word buckets in the first 2**bits columns, characters in the next."""
        s = self.spec
        texts = [t if isinstance(t, str) else "" for t in texts]
        wr, wc = word_ngrams(texts, *s.word_ngrams, s.bits)
        cr, cc = char_ngrams(texts, *s.char_ngrams, s.bits)
        rows = np.concatenate([wr, cr])
        cols = np.concatenate([wc, cc + (1 << s.bits)])
        x = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                          shape=(len(texts), 2 << s.bits))
        x.sum_duplicates()
        return x

    def fit(self, texts: Sequence[str]) -> "HashedTfidf":
        x = self.counts(texts)
        df = np.bincount(x.indices, minlength=x.shape[1])
        idf = np.log((1 + x.shape[0]) / (1 + df)) + 1
        chars = np.arange(len(idf)) >= (1 << self.spec.bits)
        idf[chars & (df < self.spec.char_min_df)] = 0
        self.idf = idf.astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        x = self.counts(texts)
        x.data = (1 + np.log(x.data)) * self.idf[x.indices]
        x.eliminate_zeros()
        # L2-normalise each block of a row on its own, as a FeatureUnion of two TF-IDFs would
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        key = 2 * rows + (x.indices >> self.spec.bits)
        norms = np.sqrt(np.bincount(key, weights=x.data.astype(np.float64) ** 2, minlength=2 * x.shape[0]))
        norms[norms == 0] = 1
        x.data /= norms[key].astype(np.float32)
        return x

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.fit(texts).transform(texts)
