"""The GS1 hierarchy: one linear model per level (lvl1 > lvl2 > lvl3), decoded together so the three labels
always form a path seen in training. Kind "hierarchical_linear"; trained by train_linear_baseline.py --hierarchy.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from category_classification.core.artifacts import link_identical_files, read_model_info, write_model_info
from category_classification.core.cli import UserError
from category_classification.inference.base import LevelScores, Predictor
from category_classification.models.label_paths import level_marginals, log_softmax, path_posterior, path_problem
from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
from category_classification.models.sentence_embedding import EMBEDDER_DIR

LEVELS = ("lvl1", "lvl2", "lvl3")
KIND = "hierarchical_linear"
PATHS_FILE = "hierarchy_paths.json"
# "paths": the path maximising the sum of the levels' log-probabilities; "lvl3": the level-3 argmax and its
# parents. On the MWPD validation file (3,000 offers) "paths" scored higher: see docs/benchmarks.md.
MODES = ("paths", "lvl3")


class HierarchicalLinear:
    """Per-level `LinearTextClassifier`s and the table of (lvl1, lvl2, lvl3) index paths seen in training."""

    def __init__(self, level_labels: Mapping[str, Sequence[str]], config: LinearConfig | None = None,
                 mode: str = "paths"):
        if mode not in MODES:
            raise UserError(f"unknown hierarchy mode {mode!r} ({', '.join(MODES)})")
        self.level_labels = {lv: list(level_labels[lv]) for lv in LEVELS}
        self.config = config or LinearConfig()
        self.mode = mode
        self.models: dict[str, LinearTextClassifier] = {}
        self.paths = np.zeros((0, 3), dtype=np.int64)

    def fit(self, texts: Sequence[str], y: Mapping[str, Sequence[int]]) -> "HierarchicalLinear":
        texts = list(texts)
        for lv in LEVELS:
            self.models[lv] = LinearTextClassifier(self.level_labels[lv], self.config).fit(texts, y[lv])
        self.paths = np.unique(np.stack([np.asarray(y[lv]) for lv in LEVELS], axis=1), axis=0)
        return self

    def calibrate(self, texts: Sequence[str], y: Mapping[str, Sequence[int]]) -> None:
        for lv in LEVELS:
            self.models[lv].calibrate(texts, y[lv])

    def decode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(chosen path index per text, path posteriors (n, num_paths))."""
        texts = list(texts)
        if not texts:  # an empty split (evaluate.py, build_ensemble.py): the vectorizers refuse zero rows
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.paths)))
        levels = ("lvl3",) if self.mode == "lvl3" else LEVELS
        embedded: dict = {}  # per encoder: the levels share one, so each text is encoded once, not per level
        logp = []
        for lv in levels:
            m = self.models[lv]
            if m.embedder is not None and id(m.embedder) not in embedded:
                embedded[id(m.embedder)] = m.embed(texts)
            emb = embedded.get(id(m.embedder)) if m.embedder is not None else None
            logp.append(log_softmax(m.decision_scores(texts, emb) / m.temperature))
        post = path_posterior(logp, self.paths[:, 2:] if self.mode == "lvl3" else self.paths)
        return post.argmax(axis=1), post

    def predict_levels(self, texts: Sequence[str]) -> dict:
        """level -> (label indices, marginal probability of each chosen label)."""
        return self.chosen_levels(*self.decode(texts))

    def chosen_levels(self, best: np.ndarray, post: np.ndarray) -> dict:
        """predict_levels of one decode's (best path, path posteriors)."""
        out = {}
        for k, lv in enumerate(LEVELS):
            chosen = self.paths[best, k]
            same = self.paths[:, k][None, :] == chosen[:, None]  # paths through the chosen node
            out[lv] = (chosen, (post * same).sum(axis=1))
        return out

    def level_marginals(self, texts: Sequence[str], level: str = "lvl1") -> np.ndarray:
        """(n, num labels of `level`) probabilities summed over the paths through each label."""
        _, post = self.decode(texts)
        return level_marginals(post, self.paths, LEVELS.index(level), len(self.level_labels[level]))

    def save(self, model_dir, results=None, **info) -> Path:
        """Staged inside `model_dir` and moved into place file by file, as LinearTextClassifier.save (with
        `results(stage)` writing the figures beside the model)."""
        from category_classification.core.artifacts import save_staged

        return save_staged(model_dir, lambda stage: self._write(stage, **info), results)

    def _write(self, d: Path, **info) -> None:
        level_files = []  # each level's arrays and vocabulary, so the registry checks them too
        for lv in LEVELS:
            self.models[lv]._write(d / lv)
            level_info = read_model_info(d / lv)
            level_files += [f"{lv}/{level_info[key]}" for key in ("weights", "vocabulary") if key in level_info]
            level_files += [f"{lv}/{level_info['embedder']}/config.json"] if "embedder" in level_info else []
        encoders = [d / lv / EMBEDDER_DIR for lv in LEVELS if (d / lv / EMBEDDER_DIR).is_dir()]
        for other in encoders[1:]:  # the levels share one encoder: its files once on disk, linked
            link_identical_files(encoders[0], other)
        (d / PATHS_FILE).write_text(json.dumps({"mode": self.mode, "paths": self.paths.tolist()}) + "\n",
                                    encoding="utf-8")
        write_model_info(d, KIND, self.level_labels["lvl1"], levels=list(LEVELS), mode=self.mode,
                         level_labels=self.level_labels, config=asdict(self.config), level_files=level_files,
                         **info)


def load_hierarchical(model_dir) -> HierarchicalLinear:
    d = Path(model_dir)
    info = read_model_info(d)
    if info.get("kind") != KIND:
        raise UserError(f"{d} holds a {info.get('kind')} model, not a {KIND} one")
    saved = json.loads((d / PATHS_FILE).read_text(encoding="utf-8"))
    names = info.get("level_labels")
    # category_model.json and the paths file are read as they are: a hand edit or a level folder from another
    # training otherwise surfaces as an IndexError mid-run, or as other class names with no error at all
    if not (isinstance(names, dict) and all(isinstance(names.get(lv), list) and names[lv]
                                            and all(isinstance(x, str) for x in names[lv]) for lv in LEVELS)
            and names["lvl1"] == info["labels"]):
        raise UserError(f"{d}: category_model.json is damaged (level_labels must list the labels of "
                        f"{', '.join(LEVELS)}, those of lvl1 being its labels); retrain the model")
    sizes = [len(names[lv]) for lv in LEVELS]
    problem = "it is not a JSON object" if not isinstance(saved, dict) else path_problem(saved.get("paths"), sizes)
    if problem or saved.get("mode") not in MODES:
        raise UserError(f"{d}: {PATHS_FILE} is damaged ({problem or 'its mode must be one of ' + ', '.join(MODES)})"
                        "; retrain the model")
    model = HierarchicalLinear(names, LinearConfig.from_dict(info.get("config", {})), saved["mode"])
    model.models, shared, key = {}, None, None
    for lv in LEVELS:  # trained with one config, the levels share one encoder: loaded once, not three times
        level = load_linear(d / lv, embedder=shared)
        if shared is not None and (level.config.embed_model, level.config.embed_seq_len) != key:
            level = load_linear(d / lv)  # a level trained with another encoder keeps its own
        if level.labels != names[lv]:
            raise UserError(f"{d}: {lv}/ holds a model of {len(level.labels)} labels that are not the {lv} labels "
                            "of category_model.json (a level folder from another training?); retrain the model")
        model.models[lv] = level
        if shared is None and level.embedder is not None:
            shared, key = level.embedder, (level.config.embed_model, level.config.embed_seq_len)
    model.paths = np.asarray(saved["paths"], dtype=np.int64)
    return model


class HierarchicalPredictor(Predictor):
    """`label` is the level-1 class (the dataset's `label` column); `levels` holds all three, one path."""

    kind = KIND
    runtime = "numpy"

    def __init__(self, model_dir, info, batch_size=64):
        super().__init__(model_dir, info, batch_size)
        self.model = load_hierarchical(model_dir)

    def predict_proba(self, texts):
        return self.model.level_marginals(list(texts), "lvl1").astype(np.float32)

    def scores(self, texts) -> LevelScores:
        m = self.model
        best, post = m.decode(list(texts))  # once: the levels and the lvl1 probabilities come from one decode
        levels = m.chosen_levels(best, post)
        probs = level_marginals(post, m.paths, 0, len(m.level_labels["lvl1"])).astype(np.float32)
        return LevelScores(probs, {
            lv: ([self.model.level_labels[lv][int(i)] for i in idx], p) for lv, (idx, p) in levels.items()})
