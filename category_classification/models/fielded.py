"""The MWPD best model: TF-IDF blocks per offer field (title + description, the shop's breadcrumb, URL words)
and one LinearSVC per label level, decoded along the level paths seen in training. Kind "fielded_linear".

The model reads one text per offer, so the fields travel inside it: `fielded_text` appends
" [category] <breadcrumb>" and " [url] <url>" to the offer text, and `split_fields` takes them apart again. A
plain text without markers is a valid input too (both extra fields empty), just with less to go on.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from category_classification.core.artifacts import read_model_info, write_model_info
from category_classification.core.cli import UserError, option
from category_classification.data.text import (BREADCRUMB_FIELDS, DEFAULT_MAX_DESCRIPTION_CHARS, DESCRIPTION_FIELDS,
                                               TITLE_FIELDS, URL_FIELDS, breadcrumb_text, clean, offer_field,
                                               offer_text)
from category_classification.inference.base import LevelScores, Predictor
from category_classification.models.label_paths import level_marginals, log_softmax, path_posterior, path_problem
from category_classification.models.linear import fit_temperature, with_copies
from category_classification.models.tfidf_io import (read_vocabulary, refuse_pickle, tfidf_from_state, tfidf_state,
                                                   write_vocabulary)

KIND = "fielded_linear"
WEIGHTS_FILE = "fielded_weights.npz"  # per level sparse weights, intercepts, paths, each block's idf
VOCABULARY_FILE = "fielded_vocabulary.json.gz"  # each block's vectorizer settings and terms
PICKLE_FILE = "fielded_model.joblib"  # written by older versions; refused (see tfidf_io.refuse_pickle)
CATEGORY_MARK, URL_MARK = " [category] ", " [url] "
_MARKS = re.compile(r"\s*\[(category|url)\]\s*")
_URL_WORD_SPLIT = re.compile(r"[^a-z]+")
# URL words that name no category: scheme, hosts, file types, shop-system path words
_URL_STOP = frozenset("http https www com html htm php aspx asp net org co uk de product products p id index shop "
                      "store item".split())


def url_words(url) -> str:
    """The words of a URL (lower case, letters only), without the ones every URL has."""
    return " ".join(w for w in _URL_WORD_SPLIT.split(clean(url, 500).lower()) if len(w) > 1 and w not in _URL_STOP)


def fielded_text(title, description, breadcrumb=None, url=None,
                 max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS) -> str:
    """One offer as the model's input text: offer text, then the breadcrumb and URL words behind markers (its
    own markers, not offer_text's " | ", since the model splits the fields apart; the breadcrumb is cleaned and
    cut by the same rule, text.breadcrumb_text)."""
    return add_fields(offer_text(clean(title), clean(description), max_description_chars), breadcrumb, url)


def add_fields(text: str, breadcrumb=None, url=None) -> str:
    """`text` (an offer text) with the breadcrumb and URL words behind their markers, as `fielded_text` adds
    them; a field that is blank adds nothing."""
    crumb, words = breadcrumb_text(breadcrumb), url_words(url)
    return text + (CATEGORY_MARK + crumb if crumb else "") + (URL_MARK + words if words else "")


def mwpd_fielded_text(offer: Mapping) -> str:
    """`fielded_text` of an MWPD offer (fields Name, Description, CategoryText, URL, or another spelling of
    each), every field picked by the one rule predict.py reads offers by (text.offer_field)."""
    return fielded_text(*(offer_field(offer, f) for f in (TITLE_FIELDS, DESCRIPTION_FIELDS, BREADCRUMB_FIELDS,
                                                          URL_FIELDS)))


def mwpd_title_text(offer: Mapping) -> str:
    """An MWPD offer's title alone as a model text (no description, breadcrumb or URL), picked by the same
    rule as `mwpd_fielded_text`: the text of its title copy (FieldedConfig.title_copies)."""
    return fielded_text(offer_field(offer, TITLE_FIELDS), None)


def split_fields(text: str) -> tuple[str, str, str]:
    """(offer text, breadcrumb, URL words) of a model input; a field given twice keeps its last value."""
    parts = _MARKS.split(text)
    out = {"text": parts[0], "category": "", "url": ""}
    for name, value in zip(parts[1::2], parts[2::2]):
        out[name] = value
    return out["text"], out["category"], out["url"]


@dataclass
class FieldedConfig:
    # C=0.5 balanced: the plain TF-IDF reference of issue 13; the field weights scale each block's rows,
    # chosen on the MWPD validation file (bench/mwpd_best_search.py)
    C: float = option(0.5, "inverse regularisation strength of the SVMs")
    class_weight: str | None = option("balanced", "balanced or none", choices=("balanced", "none"))
    category_weight: float = option(0.5, "weight of the breadcrumb block")
    url_weight: float = option(0.5, "weight of the URL-words block")
    decode: str = option("paths", "paths: the best path seen in training by summed log-probabilities; "
                                  "flat: each level on its own", choices=("paths", "flat"))
    prune_below: float = option(3e-3, "weights below this magnitude are dropped (a quarter of the size)")
    max_iter: int = option(2000, "LinearSVC iterations")
    seed: int = option(42, "random seed")
    # as LinearConfig.title_copies: offers that arrive as a name only (predict.py --text, a feed of product names)
    # are far shorter than any training text without them (docs/mwpd_best.md)
    title_copies: bool = option(True, "also train on each training offer's title alone (no description, "
                                      "breadcrumb or URL)")

    def __post_init__(self):
        if self.class_weight == "none":  # the flag's spelling of "no weighting"
            self.class_weight = None
        for name in ("C", "category_weight", "url_weight", "prune_below"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or v < 0 or (name == "C" and v == 0):
                raise UserError(f"--{name} must be a {'positive' if name == 'C' else 'non-negative'} number, got {v!r}")
        for name, lo, hi in (("max_iter", 1, 10**9), ("seed", 0, 2**32 - 1)):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                raise UserError(f"--{name} must be a whole number between {lo} and {hi}, got {v!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "FieldedConfig":
        if not isinstance(d, dict):
            raise UserError(f"the fielded model's config must be a JSON object, got {type(d).__name__}")
        try:
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except TypeError as exc:
            raise UserError(f"the fielded model's config is damaged: {exc}") from None


class FieldedVectorizer:
    """TF-IDF per field: offer text (words 1-2 + char_wb 2-5), breadcrumb (same), URL words (1-2)."""

    def __init__(self, config: FieldedConfig):
        from sklearn.feature_extraction.text import TfidfVectorizer

        def words():
            return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)

        def chars():
            return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32)

        # (field index in split_fields, vectorizer, weight)
        self.blocks = [(0, words(), 1.0), (0, chars(), 1.0), (1, words(), config.category_weight),
                       (1, chars(), config.category_weight), (2, words(), config.url_weight)]

    def _columns(self, texts):
        return list(zip(*[split_fields(t) for t in texts])) if texts else [[], [], []]

    def fit_transform(self, texts):
        import scipy.sparse as sp

        cols = self._columns(list(texts))
        blocks = []
        for i, vec, w in self.blocks:
            try:
                blocks.append(vec.fit_transform(cols[i]) * w)
            except ValueError:  # a field empty in every training offer: an empty vocabulary, no columns
                vec.vocabulary_ = {}
                blocks.append(sp.csr_matrix((len(cols[i]), 0), dtype=np.float32))
        return sp.hstack(blocks).tocsr()

    def transform(self, texts):
        import scipy.sparse as sp

        cols = self._columns(list(texts))
        return sp.hstack([vec.transform(cols[i]) * w if vec.vocabulary_ else sp.csr_matrix((len(cols[i]), 0))
                          for i, vec, w in self.blocks]).tocsr()


class FieldedLinear:
    """One vectorizer, one linear SVM per level (weights kept sparse), the label paths seen in training."""

    def __init__(self, level_labels: Mapping[str, Sequence[str]], config: FieldedConfig | None = None):
        self.levels = list(level_labels)  # coarse to fine, e.g. lvl1, lvl2, lvl3; or one level
        self.level_labels = {lv: list(level_labels[lv]) for lv in self.levels}
        self.config = config or FieldedConfig()
        if self.config.decode not in ("paths", "flat"):
            raise UserError(f"unknown decode {self.config.decode!r} (paths or flat)")
        self.vectorizer = None
        self.weights: dict = {}  # level -> (num_features, num_labels) scipy CSR
        self.intercepts: dict = {}
        self.temperatures = {lv: 1.0 for lv in self.levels}
        self.paths = np.zeros((0, len(self.levels)), dtype=np.int64)
        self.title_copy_rows = 0  # title copies the last fit added (FieldedConfig.title_copies)

    def fit(self, texts: Sequence[str], y: Mapping[str, Sequence[int]],
            titles: Sequence[str] | None = None) -> "FieldedLinear":
        """`titles`: each offer's title alone as a model text (`fielded_text(title, None)`); with
        `title_copies` they are fitted too, with the offer's labels."""
        import scipy.sparse as sp
        from sklearn.svm import LinearSVC

        cfg = self.config
        if cfg.title_copies and titles is not None:
            texts, y, (self.title_copy_rows,) = with_copies(texts, [titles], {lv: list(y[lv]) for lv in self.levels})
        else:
            self.title_copy_rows = 0
        for lv in self.levels:
            if len(self.level_labels[lv]) < 2:
                raise UserError(f"{lv}: the training offers hold {len(self.level_labels[lv])} class(es); a "
                                "classifier needs at least two")
            missing = sorted(set(range(len(self.level_labels[lv]))) - set(np.unique(y[lv]).tolist()))
            if missing:  # score columns must line up with labels
                names = ", ".join(self.level_labels[lv][i] for i in missing[:10])
                raise UserError(f"{lv}: classes without training examples: {names}")
        self.vectorizer = FieldedVectorizer(cfg)
        x = self.vectorizer.fit_transform(list(texts))
        for lv in self.levels:
            svm = LinearSVC(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, random_state=cfg.seed)
            svm.fit(x, np.asarray(y[lv]))
            coef, intercept = svm.coef_, svm.intercept_
            if coef.shape[0] == 1:  # two classes: scikit-learn keeps one score column
                coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
            # Dropping weights below prune_below keeps a quarter of them (168 MB -> ~50 MB on MWPD) at the same
            # validation avg weighted F1 (0.9008 kept at 1e-4, 0.9013 at 3e-3, 0.9012 at 1e-2)
            coef = np.where(np.abs(coef) >= cfg.prune_below, coef, 0.0).astype(np.float32)
            self.weights[lv] = sp.csr_matrix(coef.T)
            self.intercepts[lv] = intercept.astype(np.float32)
        self.paths = np.unique(np.stack([np.asarray(y[lv]) for lv in self.levels], axis=1), axis=0)
        return self

    def level_scores(self, texts: Sequence[str]) -> dict:
        """level -> (n, num labels) SVM scores."""
        x = self.vectorizer.transform(list(texts))
        return {lv: np.asarray((x @ self.weights[lv]).todense()) + self.intercepts[lv] for lv in self.levels}

    def calibrate(self, texts: Sequence[str], y: Mapping[str, Sequence[int]]) -> dict:
        """Fit each level's softmax temperature on held-out offers (labels unseen in training are skipped)."""
        scores = self.level_scores(texts)
        for lv in self.levels:
            ok = [i for i, v in enumerate(y[lv]) if 0 <= v < scores[lv].shape[1]]
            if ok:
                self.temperatures[lv] = fit_temperature(scores[lv][ok], np.asarray(y[lv])[ok])
        return dict(self.temperatures)

    def level_log_probs(self, texts: Sequence[str]) -> dict:
        return {lv: log_softmax(s / self.temperatures[lv]) for lv, s in self.level_scores(texts).items()}

    def predict_levels(self, texts: Sequence[str]) -> dict:
        """level -> (n, num labels) probabilities; with decode "paths" they are the marginals of the path
        posterior (the sum of the levels' log-probabilities over the paths seen in training), so the argmax of
        every level lies on one path."""
        logp = self.level_log_probs(texts)
        if self.config.decode == "flat" or len(self.levels) == 1:
            return {lv: np.exp(v) for lv, v in logp.items()}
        post = path_posterior([logp[lv] for lv in self.levels], self.paths)
        return {lv: level_marginals(post, self.paths, k, len(self.level_labels[lv])) for k, lv in enumerate(self.levels)}

    def save(self, model_dir, **info) -> Path:
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        arrays, blocks = {"paths": self.paths}, []
        for b, (_, vec, _) in enumerate(self.vectorizer.blocks):
            state, arrays[f"idf_{b}"] = tfidf_state(vec)
            blocks.append(state)
        for k, lv in enumerate(self.levels):  # by position: level names are the user's
            w = self.weights[lv].tocsr()
            arrays.update({f"w{k}_data": w.data, f"w{k}_indices": w.indices, f"w{k}_indptr": w.indptr,
                           f"w{k}_shape": np.asarray(w.shape, dtype=np.int64), f"b{k}": self.intercepts[lv]})
        write_vocabulary(d / VOCABULARY_FILE, {"blocks": blocks})
        np.savez_compressed(d / WEIGHTS_FILE, **arrays)
        first = self.levels[0]
        write_model_info(d, KIND, self.level_labels[first], levels=self.levels, level_labels=self.level_labels,
                         temperatures=self.temperatures, config=asdict(self.config), weights=WEIGHTS_FILE,
                         vocabulary=VOCABULARY_FILE, **info)
        return d


def load_fielded(model_dir) -> FieldedLinear:
    """Load a folder written by `FieldedLinear.save` (plain arrays and JSON, never a pickle)."""
    import scipy.sparse as sp

    d = Path(model_dir)
    info = read_model_info(d)
    if info.get("kind") != KIND:
        raise UserError(f"{d} holds a {info.get('kind')} model, not a {KIND} one")
    levels = info.get("levels") or ["label"]
    labels = info.get("level_labels") or {levels[0]: info["labels"]}
    model = FieldedLinear({lv: labels[lv] for lv in levels}, FieldedConfig.from_dict(info.get("config", {})))
    if info.get("weights", PICKLE_FILE) == PICKLE_FILE:  # older folders name no weights file
        refuse_pickle(d / PICKLE_FILE)
    vocab = read_vocabulary(d / VOCABULARY_FILE)["blocks"]
    vectorizer = FieldedVectorizer(model.config)
    if len(vocab) != len(vectorizer.blocks):
        raise ValueError(f"{VOCABULARY_FILE} holds {len(vocab)} blocks, the model {len(vectorizer.blocks)}")
    with np.load(d / WEIGHTS_FILE, allow_pickle=False) as z:
        vectorizer.blocks = [(i, tfidf_from_state(state, z[f"idf_{b}"]), w)
                             for b, ((i, _, w), state) in enumerate(zip(vectorizer.blocks, vocab))]
        for k, lv in enumerate(levels):
            model.weights[lv] = sp.csr_matrix((z[f"w{k}_data"], z[f"w{k}_indices"], z[f"w{k}_indptr"]),
                                              shape=tuple(z[f"w{k}_shape"]))
            model.intercepts[lv] = z[f"b{k}"]
        problem = path_problem(z["paths"].tolist(), [len(labels[lv]) for lv in levels])
        if problem:  # as load_hierarchical: an edited or mixed file names other classes, or an IndexError mid-run
            raise UserError(f"{d}: the paths of {WEIGHTS_FILE} are damaged ({problem}); retrain the model")
        model.paths = np.asarray(z["paths"], dtype=np.int64)
    model.vectorizer = vectorizer
    model.temperatures = {lv: float(info.get("temperatures", {}).get(lv, 1.0)) for lv in levels}
    return model


class FieldedPredictor(Predictor):
    """`label` is the first level's class; `levels` holds every level (one path with decode "paths")."""

    kind = KIND
    runtime = "numpy"

    def __init__(self, model_dir, info, batch_size=64):
        super().__init__(model_dir, info, batch_size)
        self.model = load_fielded(model_dir)
        self.labels = self.model.level_labels[self.model.levels[0]]

    def _levels(self, texts) -> dict:
        texts = list(texts)
        parts = [self.model.predict_levels(texts[s:s + self.batch_size]) for s in range(0, len(texts), self.batch_size)]
        return {lv: np.concatenate([p[lv] for p in parts]) if parts else np.zeros((0, len(self.model.level_labels[lv])))
                for lv in self.model.levels}

    def predict_proba(self, texts):
        return self._levels(texts)[self.model.levels[0]].astype(np.float32)

    def scores(self, texts):
        probs = self._levels(texts)
        first = self.model.levels[0]
        if len(self.model.levels) == 1:
            return probs[first].astype(np.float32)
        return LevelScores(probs[first].astype(np.float32), {
            lv: ([self.model.level_labels[lv][i] for i in p.argmax(axis=1)], p.max(axis=1)) for lv, p in probs.items()})
