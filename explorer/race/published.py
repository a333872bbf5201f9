"""Published results at scale, shown beside a race as published figures, never as this machine's: Hugging Face
PEFT's own method comparison (Llama-3.2-3B fine-tuned on MetaMathQA, tested on GSM8K; one NVIDIA L40S).

The numbers are copied unchanged from PEFT's result files (explorer/race/data/peft_method_comparison.json
names each file and the commit it was read at). They answer the race's question at a scale this app cannot
train on a CPU: which method buys how much accuracy for what cost.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data" / "peft_method_comparison.json"


@lru_cache(maxsize=1)
def published() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


def table() -> pd.DataFrame:
    rows = [[r["label"], f"{r['test_accuracy']:.3f}", f"{r['trainable_params']:,}",
             f"{r['peak_memory_bytes'] / 1e9:.1f} GB", f"{r['train_seconds'] / 60:.0f} min",
             f"{r['learning_rate']:g}"] for r in published()["results"]]
    return pd.DataFrame(rows, columns=["method (published)", "GSM8K test accuracy", "trainable parameters",
                                       "peak GPU memory", "training time", "learning rate"])


def caption() -> str:
    source = published()["source"]
    return (f"**Published figures, not this machine's:** {source['benchmark']}. From "
            f"[{source['repository']}](https://github.com/{source['repository']}/tree/"
            f"{source['results_commit']}/{source['folder']}) at commit `{source['results_commit'][:10]}`.")
