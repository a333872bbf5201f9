"""Settings read from environment variables (documented in the README).

Read at call time, not import time, so tests and the CLI can change them per process.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def host() -> str:
    """EXPLORER_HOST: address the web app listens on (default 127.0.0.1: this machine only)."""
    return os.environ.get("EXPLORER_HOST", "127.0.0.1")


def port() -> int:
    """EXPLORER_PORT: port of the web app (default 7860)."""
    raw = os.environ.get("EXPLORER_PORT", "7860")
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"EXPLORER_PORT must be a port number, got {raw!r}")
    if not 1 <= value <= 65535:
        raise SystemExit(f"EXPLORER_PORT must be between 1 and 65535, got {value}")
    return value


def models_cache() -> Path:
    """EXPLORER_MODELS_CACHE: folder for converted models and training runs (default ./models_cache)."""
    return Path(os.environ.get("EXPLORER_MODELS_CACHE", REPO_ROOT / "models_cache")).resolve()


def runs_dir() -> Path:
    """EXPLORER_RUNS_DIR: where training runs are saved (default: models_cache/runs)."""
    override = os.environ.get("EXPLORER_RUNS_DIR")
    return Path(override).resolve() if override else models_cache() / "runs"


def model_memory_budget_bytes() -> int:
    """EXPLORER_MODEL_MEMORY_GB: memory for loaded models (base models and Compare's adapted and merged
    copies); past it the least recently used are dropped (default 6 GB). One model is always kept."""
    raw = os.environ.get("EXPLORER_MODEL_MEMORY_GB", "6")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"EXPLORER_MODEL_MEMORY_GB must be a number of gigabytes, got {raw!r}")
    if not 0 < value < 1e6:
        raise SystemExit(f"EXPLORER_MODEL_MEMORY_GB must be a positive number of gigabytes, got {raw!r}")
    return int(value * 1e9)
