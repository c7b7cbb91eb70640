"""The fast default classifier: word and character n-gram features with a linear SVM.

Features are scikit-learn's TF-IDF vectorizers (the default) or hashed n-grams computed in numpy
(`ngram_features.py`). Probabilities are a softmax over the SVM scores with one
temperature fitted on validation data, so thresholds mean the same here as for the other models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from category_classification.core.artifacts import read_model_info, write_model_info
from category_classification.core.cli import UserError, option
from category_classification.data.text import text_problem
from category_classification.models.ngram_features import HashedTfidf, NgramSpec
from category_classification.models.tfidf_io import (read_vocabulary, refuse_pickle, tfidf_from_state, tfidf_state,
                                                   write_vocabulary)

CONFIG_FILE = "linear_config.json"
WEIGHTS_FILE = "linear_weights.npz"  # plain arrays (weights, idf), no pickle
VOCABULARY_FILE = "linear_vocabulary.json.gz"  # features "tfidf": each vectorizer's settings and terms
PICKLE_FILE = "linear_model.joblib"  # written by older versions; refused (see tfidf_io.refuse_pickle)
TFIDF_PARTS = ("word", "char")  # the FeatureUnion's vectorizers, in column order
OTHER_BIAS_GRID = np.round(np.arange(-1.0, 1.01, 0.05), 2)  # the Other offsets choose_bias tries
ABSENT_SCORE = -1e4  # the score of a class no training offer has: never predicted, probability 0


@dataclass
class LinearConfig:
    # "tfidf" (scikit-learn's vectorizers; with char_min_df=1 exactly the plain reference of issue 13)
    # is the default: hashed n-grams ("hashed", ~10x faster to predict) scored 0.912 against the
    # reference's 0.934 6-class macro-F1 on held-out offers. See docs/benchmarks.md.
    features: str = option("tfidf", "tfidf: scikit-learn vectorizers (default); hashed: numpy n-gram hashing, "
                                    "faster to predict", choices=("tfidf", "hashed"))
    word_ngrams: tuple[int, int] = option((1, 2), "word n-gram range", nargs=2, metavar=("MIN", "MAX"))
    char_ngrams: tuple[int, int] = option((2, 5), "character n-gram range (inside word boundaries)", nargs=2,
                                          metavar=("MIN", "MAX"))
    char_min_df: int = option(1, "documents a character n-gram needs (1: the reference keeps every one)")
    hash_bits: int = option(19, "2**bits columns per block (hashed)")
    C: float = option(0.5, "inverse regularisation strength of the SVM")
    # "balanced" weighs rare classes up; it raised 5-fold macro-F1 on MWPD 6 classes from 0.901 to 0.922.
    class_weight: str | None = option("balanced", "balanced or none", choices=("balanced", "none"))
    max_iter: int = option(5000, "LinearSVC iterations")
    seed: int = option(42, "random seed")
    # The out-of-scope class (datasets built with --other_label): its class weight is multiplied by
    # other_weight, and an offset chosen on validation is added to its score (see choose_other_bias).
    other_label: str | None = option(None, "the out-of-scope class (default: the dataset's, from its "
                                           "build_report.json)")
    other_weight: float = option(1.0, "multiplies the out-of-scope class's weight in training")
    # "source": Other is trained as one sub-class per source category (the dataset's source_category
    # column) holding at least other_min_size training offers, the rest pooled; their probabilities are
    # summed back into Other, so nothing outside the model sees them. "none": one Other class. Grouped
    # 5-fold CV on the MWPD train file: min(accepted precision, in-scope recall) 0.961 against 0.957,
    # target macro-F1 0.921 against 0.862 (docs/benchmarks.md, open set).
    other_split: str = option("source", "source: one Other sub-class per source category (the dataset's "
                                        "source_category column), summed back at prediction; none: one class",
                              choices=("source", "none"))
    other_min_size: int = option(20, "training rows a source (or fine) category needs to be its own sub-class; "
                                      "bare and title copies count as rows")
    # "fine": each target class is trained as sub-classes, one per fine category (the dataset's
    # fine_category column: GS1 level 3 on MWPD 6-class datasets) holding at least other_min_size training
    # offers, the rest in the class's own column; summed back like Other's. A target class is many kinds of
    # product (MWPD Clothing: nine level-3 classes), each bordering its own out-of-scope neighbours. Grouped
    # 5-fold CV on the MWPD train file, with Other: accepted precision / in-scope recall 0.9747 / 0.9716
    # against 0.9704 / 0.9670, target macro-F1 0.934 against 0.925; 6 classes alone (7,185 offers):
    # macro-F1 0.9329 against 0.9320 with the breadcrumb, 0.9291 against 0.9155 on the same offers without
    # it, higher in all 5 folds (docs/benchmarks.md).
    class_split: str = option("fine", "fine: each target class trained as one sub-class per fine category "
                                      "(the dataset's fine_category column, where it has one), summed back; "
                                      "none: one column per target class", choices=("fine", "none"))
    # Breadcrumb datasets (the MWPD default): a model fitted on texts ending in " | <breadcrumb>" only scored
    # 0.899 macro-F1 on the same offers without it (bare titles typed in, feeds without one); also fitting on
    # the bare copies kept 0.933 with it and gave 0.921 without (grouped 5-fold CV, docs/benchmarks.md).
    breadcrumb_copies: bool = option(True, "also train on each training offer's text without its breadcrumb "
                                           "(the dataset's text_bare column, where it differs from text), so "
                                           "offers without one score as well; calibration and metrics use text")
    # Datasets with a text_title column (built since it exists): a model fitted on title + description (+
    # breadcrumb) scored 0.861 macro-F1 on the same offers given as their title alone (predict.py --text, a
    # feed of names); also fitting each offer's title kept 0.933 on whole offers and gave 0.889 on titles
    # (grouped 5-fold CV over the 7,185 MWPD six-class offers, docs/benchmarks.md, "Titles alone").
    title_copies: bool = option(True, "also train on each training offer's title alone (the dataset's "
                                      "text_title column, where it differs from the text and the bare text), "
                                      "so offers that arrive as a title only score as well")
    # Frozen sentence embeddings appended to the n-grams (models/sentence_embedding.py): grouped 5-fold CV on
    # the 7,185 MWPD six-class offers, the MWPD default (breadcrumb, bare copies, level-3 sub-classes) 0.9329
    # -> 0.9470 macro-F1 with all-MiniLM-L6-v2; but every offer then goes through the encoder (tens of offers
    # per second per CPU core instead of thousands): an option for a catalog, not the default for a whole
    # crawl (docs/benchmarks.md, "Sentence embeddings").
    embed_model: str | None = option(None, "a sentence-embedding encoder (local folder or hub id, e.g. "
                                           "sentence-transformers/all-MiniLM-L6-v2) whose mean-pooled vectors "
                                           "of each text are appended to the n-gram features; the model folder "
                                           "keeps a copy")
    embed_weight: float = option(1.0, "scale of the unit-length embedding against the n-gram features")
    embed_seq_len: int = option(128, "tokens of each text the embedding encoder reads")

    def __post_init__(self):
        if self.class_weight == "none":  # the flag's spelling of "no weighting"
            self.class_weight = None
        self.word_ngrams, self.char_ngrams = tuple(self.word_ngrams), tuple(self.char_ngrams)
        if self.embed_model and not (np.isfinite(self.embed_weight) and self.embed_weight > 0):
            raise UserError(f"--embed_weight must be a positive number, got {self.embed_weight}")
        self._check()

    def _check(self) -> None:
        """Settings the model cannot work with, from flags or a damaged linear_config.json, as one line."""
        def whole(v, lo, hi):
            return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

        for name in ("word_ngrams", "char_ngrams"):
            lo_hi = getattr(self, name)
            if not (len(lo_hi) == 2 and all(whole(v, 1, 20) for v in lo_hi) and lo_hi[0] <= lo_hi[1]):
                raise UserError(f"--{name} must be two whole numbers MIN <= MAX between 1 and 20, got {lo_hi}")
        for name, lo, hi in (("hash_bits", 8, 26), ("char_min_df", 1, 10**9), ("max_iter", 1, 10**9),
                             ("other_min_size", 0, 10**9), ("embed_seq_len", 1, 10**6), ("seed", 0, 2**32 - 1)):
            if not whole(getattr(self, name), lo, hi):
                raise UserError(f"--{name} must be a whole number between {lo} and {hi}, got {getattr(self, name)!r}")
        for name in ("C", "other_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0):
                raise UserError(f"--{name} must be a positive number, got {v!r}")
        for name, choices in (("features", ("tfidf", "hashed")), ("class_weight", ("balanced", None)),
                              ("other_split", ("source", "none")), ("class_split", ("fine", "none"))):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} must be one of {choices}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "LinearConfig":
        """A saved config (linear_config.json); a damaged one is a UserError, never a wrong model."""
        if not isinstance(d, dict):
            raise UserError(f"{CONFIG_FILE} must hold a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        try:
            for key in ("word_ngrams", "char_ngrams"):
                if key in d:
                    d[key] = tuple(d[key])
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{CONFIG_FILE} is damaged: {exc}") from None


def with_copies(texts: Sequence[str], variants: Sequence[Sequence], columns: dict) -> tuple[list, dict, list]:
    """`texts` followed, for each variant (a text per offer: the offer without its breadcrumb, its title
    alone), by each offer's variant text that differs from its text and from its earlier variants;
    `columns` (name -> per-offer values: labels, source categories) with those rows repeated; and the number
    of copies per variant: the training rows of `LinearConfig.breadcrumb_copies` and `title_copies`."""
    texts = list(texts)
    seen = [{t} for t in texts]
    extra, counts = [], []
    for variant in variants:
        added = 0
        for i, v in enumerate(variant):
            # a hand-made text_bare or text_title may hold None, numbers or blanks: only a text that prediction
            # could be given is a copy
            if isinstance(v, str) and v not in seen[i] and text_problem(v) is None:
                seen[i].add(v)
                extra.append((i, v))
                added += 1
        counts.append(added)
    columns = {k: list(vals) + [vals[i] for i, _ in extra] for k, vals in columns.items()}
    return texts + [v for _, v in extra], columns, counts


COPY_KINDS = ("breadcrumb", "title")  # the order copies are added in (with_copies: a title equal to the bare text is not)


def copy_variants(cfg: LinearConfig, available: dict) -> dict:
    """The variant texts of `available` ({"breadcrumb": bare texts, "title": title texts}, either missing)
    that `cfg` asks copies of (breadcrumb_copies, title_copies), in COPY_KINDS order."""
    wanted = {"breadcrumb": cfg.breadcrumb_copies, "title": cfg.title_copies}
    return {k: available[k] for k in COPY_KINDS if wanted[k] and available.get(k) is not None}


def _vectorizer(cfg: LinearConfig):
    if cfg.features == "hashed":
        return HashedTfidf(NgramSpec(word_ngrams=cfg.word_ngrams, char_ngrams=cfg.char_ngrams,
                                     bits=cfg.hash_bits, char_min_df=cfg.char_min_df))
    if cfg.features == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        return FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=cfg.word_ngrams, sublinear_tf=True, dtype=np.float32)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngrams, sublinear_tf=True,
                                     min_df=cfg.char_min_df, dtype=np.float32)),
        ])
    raise UserError(f"unknown features {cfg.features!r} (hashed or tfidf)")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, labels: Sequence[int], merge=None) -> float:
    """The softmax temperature that minimises the negative log-likelihood (a 1-D grid search); `merge`
    maps column probabilities to label probabilities (Other sub-classes summed)."""
    labels = np.asarray(labels)
    best_t, best_nll = 1.0, np.inf
    for t in np.geomspace(0.02, 5.0, 120):
        p = _softmax(scores / t) if merge is None else merge(_softmax(scores / t))
        nll = -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean()
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


class LinearTextClassifier:
    """n-gram features + LinearSVC, with calibrated softmax probabilities."""

    def __init__(self, labels: Sequence[str], config: LinearConfig | None = None):
        self.labels = list(labels)
        self.config = config or LinearConfig()
        self.vectorizer = None
        # (num_features, num_columns) float32, C order: fast x @ w. One column per label, then one per
        # Other sub-class (other_subclasses); predict_proba sums a sub-class column into Other.
        self.weights: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.temperature = 1.0
        self.other_bias = 0.0  # added to the out-of-scope class's score(s); chosen on validation
        self.other_subclasses: list[str] = []  # source categories trained as their own Other column
        self.class_subclasses: list[list[str]] = []  # [target label, fine category]: a column of that label
        self.classes_without_training_examples: list[str] = []
        self.embedder = None  # models/sentence_embedding.SentenceEmbedder with config.embed_model

    def _other_index(self) -> int | None:
        other = self.config.other_label
        return self.labels.index(other) if other in self.labels else None

    @property
    def column_labels(self) -> np.ndarray:
        """The label index of every score column: the labels, then Other for each of its sub-class columns,
        then the target label of each target sub-class column."""
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array(list(range(len(self.labels))) + [self._other_index()] * len(self.other_subclasses)
                        + [index[label] for label, _ in self.class_subclasses], dtype=np.int64)

    @property
    def has_subclasses(self) -> bool:
        return bool(self.other_subclasses or self.class_subclasses)

    def training_columns(self, y: np.ndarray, sources, fine=None) -> np.ndarray:
        """Training column per offer: with other_split "source", Other offers of a source category with at
        least other_min_size of them get that category's column; with class_split "fine" (and `fine`, each
        offer's fine category) the same for the target classes; the others keep their label's own column."""
        other, cfg = self._other_index(), self.config
        self.other_subclasses, self.class_subclasses = [], []
        cols = y.copy()

        def split(rows, keys, first_column):
            names, counts = np.unique(keys[rows], return_counts=True)
            kept = [n for n, c in zip(names.tolist(), counts.tolist()) if c >= cfg.other_min_size and n]
            column = {n: first_column + k for k, n in enumerate(kept)}
            for i in rows:
                cols[i] = column.get(keys[i], cols[i])
            return kept

        if other is not None and cfg.other_split == "source" and sources is not None:
            # a missing source (None) pools with the rest, as a missing fine category does, never "None"
            src = np.array(["" if s is None else str(s) for s in sources], dtype=object)
            self.other_subclasses = split(np.flatnonzero(y == other), src, len(self.labels))
        if cfg.class_split == "fine" and fine is not None:
            keys = np.array([str(f or "") for f in fine], dtype=object)
            for label in range(len(self.labels)):
                if label != other:
                    first = len(self.labels) + len(self.other_subclasses) + len(self.class_subclasses)
                    kept = split(np.flatnonzero(y == label), keys, first)
                    self.class_subclasses += [[self.labels[label], n] for n in kept]
        return cols

    def fit(self, texts: Sequence[str], y: Sequence[int], sources: Sequence[str] | None = None,
            fine: Sequence[str] | None = None) -> "LinearTextClassifier":
        """Fit on `texts`; a label without training offers keeps a score far below every other (never
        predicted, listed in `classes_without_training_examples`) instead of stopping the run. `sources`
        (each offer's source category) splits Other into sub-classes, `fine` (each offer's fine category)
        the target classes, when the config asks for it."""
        from sklearn.svm import LinearSVC

        cfg = self.config
        texts, y = list(texts), np.asarray(y)
        seen = set(np.unique(y).tolist())
        self.classes_without_training_examples = [name for i, name in enumerate(self.labels) if i not in seen]
        cols = self.training_columns(y, sources, fine)
        present = np.unique(cols)
        self.vectorizer = _vectorizer(cfg)
        x = self.vectorizer.fit_transform(texts)
        if cfg.embed_model:
            import scipy.sparse as sp

            from category_classification.models.sentence_embedding import load_embedder

            self.embedder = load_embedder(cfg.embed_model, cfg.embed_seq_len)
            x = sp.hstack([x, sp.csr_matrix(cfg.embed_weight * self.embedder.encode(texts))], format="csr")
        if len(present) == 1:  # nothing to separate: the one class always wins
            coef, intercept = np.zeros((1, x.shape[1])), np.zeros(1)
        else:
            svm = LinearSVC(C=cfg.C, class_weight=self._class_weight(cols), max_iter=cfg.max_iter,
                            random_state=cfg.seed)
            svm.fit(x, cols)
            coef, intercept = svm.coef_, svm.intercept_
            if coef.shape[0] == 1:  # two classes: scikit-learn keeps one score column
                coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        n_columns = len(self.labels) + len(self.other_subclasses) + len(self.class_subclasses)
        weights = np.zeros((x.shape[1], n_columns), dtype=np.float32)
        self.intercept = np.full(n_columns, ABSENT_SCORE, dtype=np.float32)
        weights[:, present] = coef.T
        self.intercept[present] = intercept
        self.weights = np.ascontiguousarray(weights)
        return self

    def _class_weight(self, cols: np.ndarray):
        """"balanced" (or None), with every out-of-scope column's weight multiplied by `other_weight`."""
        cfg = self.config
        other = self._other_index()
        if other is None or cfg.other_weight == 1.0:
            return cfg.class_weight
        classes, counts = np.unique(cols, return_counts=True)
        base = len(cols) / (len(classes) * counts) if cfg.class_weight == "balanced" else np.ones(len(classes))
        is_other = self.column_labels[classes] == other
        return dict(zip(classes.tolist(), np.where(is_other, base * cfg.other_weight, base).tolist()))

    def embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """The sentence embeddings this model appends to its features (None without an embedder): computed
        once, they can be given to several models sharing the encoder (the GS1 levels)."""
        return None if self.embedder is None else self.embedder.encode(list(texts))

    def column_scores(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """SVM scores per column (labels, then Other sub-classes), the Other offset added. `embeddings`:
        `embed(texts)` already computed."""
        texts = list(texts)
        x = self.vectorizer.transform(texts)
        if self.embedder is None:
            scores = np.asarray(x @ self.weights) + self.intercept
        else:  # the n-gram rows, then the embedding's dense rows
            n_gram = self.weights.shape[0] - self.embedder.dim
            emb = self.embed(texts) if embeddings is None else embeddings
            scores = (np.asarray(x @ self.weights[:n_gram]) + self.intercept
                      + (self.config.embed_weight * emb) @ self.weights[n_gram:])
        other = self._other_index()
        if self.other_bias and other is not None:
            scores[:, self.column_labels == other] += self.other_bias
        return scores

    def _merge(self, column_probs: np.ndarray) -> np.ndarray:
        """Column probabilities -> label probabilities (sub-class columns summed into their label)."""
        if not self.has_subclasses:
            return column_probs
        merged = np.zeros((column_probs.shape[0], len(self.labels)))  # float64: the log of a tiny sum stays finite
        np.add.at(merged.T, self.column_labels, column_probs.T)
        return merged

    def decision_scores(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """Per-label scores with softmax(scores / temperature) == predict_proba (the SVM scores themselves
        unless there are sub-classes; then temperature x log of the summed probabilities)."""
        scores = self.column_scores(texts, embeddings)
        if not self.has_subclasses:
            return scores
        return self.temperature * np.log(np.clip(self._merge(_softmax(scores / self.temperature)), 1e-300, None))

    def choose_other_bias(self, texts: Sequence[str], y: Sequence[int], objective: str = "min") -> float:
        """The offset on the out-of-scope score(s) that maximises min(accepted precision, in-scope recall)
        on these (validation) offers ("sum": their sum): trading the two equally is what a crawl user
        needs. With Other sub-classes, decisions use the summed probabilities at the current temperature."""
        self.other_bias = 0.0
        part = (np.arange(len(texts)), self.column_scores(texts), self.temperature, self.column_labels)
        self.other_bias, _ = choose_bias([part], y, self.labels, self._other_index(), objective)
        return self.other_bias

    def calibrate(self, texts: Sequence[str], y: Sequence[int]) -> float:
        self.temperature = fit_temperature(self.column_scores(texts), y, self._merge)
        return self.temperature

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._merge(_softmax(self.column_scores(texts) / self.temperature))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.decision_scores(texts).argmax(axis=1)

    def save(self, model_dir, results=None, **info) -> Path:
        """Write the model into a folder inside `model_dir`, then move each file into place by a rename
        (core/artifacts.staged_folder): a run killed while saving leaves the previous model whole, and files
        of `model_dir` that are not the model's are left alone. `results(stage)` writes the trainer's
        figures beside the model, so they are moved in with it."""
        from category_classification.core.artifacts import save_staged

        return save_staged(model_dir, lambda stage: self._write(stage, **info), results)

    def _write(self, d: Path, **info) -> None:
        """The model's files in folder `d` (a stage: see save)."""
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n", encoding="utf-8")
        # Most hashed columns never occur in training: store the weights sparse (tfidf ones all do: no loss).
        nz = np.flatnonzero(np.any(self.weights != 0, axis=1))
        arrays = {"rows": nz, "weights": self.weights[nz], "intercept": self.intercept,
                  "num_features": np.int64(self.weights.shape[0])}
        if self.config.features == "hashed":
            arrays["idf"] = self.vectorizer.idf
        else:
            vocab = {}
            for name, vec in self.vectorizer.transformer_list:
                vocab[name], arrays[f"idf_{name}"] = tfidf_state(vec)
            write_vocabulary(d / VOCABULARY_FILE, vocab)
            info = {"vocabulary": VOCABULARY_FILE, **info}
        np.savez_compressed(d / WEIGHTS_FILE, **arrays)
        weights = WEIGHTS_FILE
        if self.embedder is not None:
            from category_classification.models.sentence_embedding import EMBEDDER_DIR

            self.embedder.save(d / EMBEDDER_DIR)
            info = {"embedder": EMBEDDER_DIR, **info}
        if self.config.other_label:
            info = {"other_label": self.config.other_label, "other_bias": self.other_bias,
                    "other_subclasses": self.other_subclasses, **info}
        if self.config.other_label or self.class_subclasses:  # a closed model has them too (class_split)
            info = {"class_subclasses": self.class_subclasses, **info}
        write_model_info(d, "linear", self.labels, temperature=self.temperature, weights=weights,
                         classes_without_training_examples=self.classes_without_training_examples, **info)


def decide(parts, n: int, n_labels: int, other: int, bias: float) -> np.ndarray:
    """Label per offer at this Other offset: the label with the highest summed probability. `parts`: (offer
    index, column scores, temperature, column -> label index) per model, together covering offers 0..n-1
    (one part: a validation split; several: the folds of training/open_set.out_of_fold)."""
    pred = np.zeros(n, dtype=np.int64)
    for idx, scores, temperature, columns in parts:
        shifted = scores + bias * (columns == other)
        probs = np.zeros((len(idx), n_labels))
        np.add.at(probs.T, columns, _softmax(shifted / temperature).T)
        pred[idx] = probs.argmax(axis=1)
    return pred


def choose_bias(parts, y: Sequence[int], labels: Sequence[str], other: int, objective: str = "min"):
    """(offset, open-set metrics at it): the offset of OTHER_BIAS_GRID that maximises min(accepted
    precision, in-scope recall) over the parts' offers ("sum": their sum); ties go to the one nearest 0."""
    from category_classification.evaluation.metrics import open_set_metrics

    best = None
    for bias in OTHER_BIAS_GRID:
        m = open_set_metrics(y, decide(parts, len(y), len(labels), other, bias), labels, labels[other])
        pair = (m["accepted_precision"], m["in_scope_recall"])
        value = sum(pair) if objective == "sum" else min(pair)
        if best is None or value > best[0] + 1e-9 or (abs(value - best[0]) <= 1e-9 and abs(bias) < abs(best[1])):
            best = (value, float(bias), m)
    return best[1], best[2]


def load_linear(model_dir, embedder=None) -> LinearTextClassifier:
    """Load a directory written by `LinearTextClassifier.save` (plain arrays and JSON, never a pickle).
    `embedder`: an encoder already loaded for the same embed_model (the GS1 levels share one) instead of
    loading the folder's copy."""
    d = Path(model_dir)
    info = read_model_info(d)
    if info.get("kind") != "linear":
        raise UserError(f"{d} holds a {info.get('kind')} model, not a linear one")
    cfg = LinearConfig.from_dict(json.loads((d / CONFIG_FILE).read_text(encoding="utf-8")))
    model = LinearTextClassifier(info["labels"], cfg)
    if info.get("weights") == PICKLE_FILE:
        refuse_pickle(d / PICKLE_FILE)
    with np.load(d / WEIGHTS_FILE, allow_pickle=False) as w:
        if cfg.features == "hashed":
            model.vectorizer = _vectorizer(cfg)
            model.vectorizer.idf = w["idf"]
        else:
            from sklearn.pipeline import FeatureUnion

            vocab = read_vocabulary(d / VOCABULARY_FILE)
            model.vectorizer = FeatureUnion([(name, tfidf_from_state(vocab[name], w[f"idf_{name}"]))
                                             for name in TFIDF_PARTS])
        # one column per label, then one per Other sub-class (other_subclasses), then per class_subclasses
        model.weights = np.zeros((int(w["num_features"]), w["weights"].shape[1]), dtype=np.float32)
        model.weights[w["rows"]] = w["weights"]
        model.intercept = w["intercept"]
    try:
        model.temperature = float(info.get("temperature", 1.0))
        model.other_bias = float(info.get("other_bias", 0.0))
    except (TypeError, ValueError):
        model.temperature = model.other_bias = float("nan")
    if not (np.isfinite(model.temperature) and model.temperature > 0 and np.isfinite(model.other_bias)):
        raise UserError(f"{d}: the model info's temperature must be a positive number and other_bias a number "
                        f"(got {info.get('temperature')!r}, {info.get('other_bias')!r}); retrain the model")
    model.other_subclasses = list(info.get("other_subclasses", []))
    pairs = info.get("class_subclasses", [])
    if not isinstance(pairs, list) or any(
            not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) for v in pair)
            or pair[0] not in model.labels or pair[0] == cfg.other_label for pair in pairs):
        raise UserError(f"{d}: class_subclasses in the model info must be [target label, fine category] pairs "
                        "of the model's labels")
    model.class_subclasses = [list(pair) for pair in pairs]
    if len(model.column_labels) != model.weights.shape[1]:
        raise UserError(f"{d}: {WEIGHTS_FILE} has {model.weights.shape[1]} score columns, the model info names "
                        f"{len(model.column_labels)}")
    model.classes_without_training_examples = list(info.get("classes_without_training_examples", []))
    if cfg.embed_model or info.get("embedder"):
        from category_classification.models.sentence_embedding import EMBEDDER_DIR, load_embedder

        folder = info.get("embedder")
        if not cfg.embed_model or folder != EMBEDDER_DIR or not (d / folder / "config.json").is_file():
            raise UserError(f"{d}: a linear model with sentence embeddings needs embed_model in "
                            f"{CONFIG_FILE} and its encoder's folder (\"embedder\" in the model info); "
                            "retrain it")
        model.embedder = embedder or load_embedder(d / folder, cfg.embed_seq_len, saved_copy=True)
    expected = model.vectorizer.transform([""]).shape[1] + (model.embedder.dim if model.embedder else 0)
    if model.weights.shape[0] != expected:
        raise UserError(f"{d}: {WEIGHTS_FILE} has {model.weights.shape[0]} feature rows, its features make "
                        f"{expected}; retrain the model")
    return model
