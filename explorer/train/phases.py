"""The phases every kind of training shares (chat fine-tunes in loop.py, classifier and embedding heads in
heads.py): the method's options checked and the model loaded, seeding, the optimizer, the peak memory, and the
summary keys, including the summary of a run stopped before its first step."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..costs import specs
from ..methods import METHODS
from ..models import loading
from . import runs
from .config import TrainConfig


def run_summary(run_dir: Path, config: TrainConfig, losses: list[float], eval_losses: list[tuple]) -> dict:
    """The summary keys every kind of run shares (chat training here, heads in heads.py)."""
    return {
        "run_id": run_dir.name, "run_dir": str(run_dir), "method": config.method, "model": config.model,
        "dataset": config.dataset, "steps": len(losses),
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "eval_loss_first": eval_losses[0][1] if eval_losses else None,
        "eval_loss_last": eval_losses[-1][1] if eval_losses else None,
    }


@dataclass
class Prepared:
    model: object
    tokenizer: object
    spec: specs.ModelSpec
    options: object
    device: str


def prepare(config: TrainConfig, options_values: dict) -> Prepared:
    """The method's options checked, and a fresh base model loaded the way the method needs it."""
    method = METHODS[config.method]
    options = method.parse_options(options_values)
    method.check_training(options)
    loaded = loading.load_fresh(config.model, method, options, config.precision)
    method.validate(loaded.spec, options)
    return Prepared(loaded.model, loaded.tokenizer, loaded.spec, options, loaded.device)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def reset_peak_memory(device: str, collected: bool = False) -> None:
    """Start measuring the peak from here: loading a model (QLoRA quantizes a float copy) peaks higher
    than training, and the Calculator predicts training. ``collected``: the caller has just run a full garbage
    collection (explorer.train.process_memory's baseline does), so it is not repeated: in a long-lived process
    with many objects one full collection takes most of a second."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    import ctypes
    import gc

    if not collected:
        gc.collect()
    try:  # hand memory freed while loading back to the system, so the peak reflects training
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # Linux: "5" resets the peak RSS (VmHWM)
            handle.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: str) -> int:
    """CUDA: max allocated; CPU: this process's peak resident memory since the last reset (libraries
    included), or its lifetime peak where the kernel offers no reset."""
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def optimizer_class(name: str) -> tuple[type, dict]:
    """The optimizer a setting names, with its keyword arguments beside the learning rate."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW, {"weight_decay": 0.0}
    if name == "sgd":
        return torch.optim.SGD, {}
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit, {"weight_decay": 0.0}


def make_optimizer(name: str, params, lr: float):
    optimizer_cls, kwargs = optimizer_class(name)
    return optimizer_cls(params, lr=lr, **kwargs)


def stopped_before_training(config: TrainConfig, run_dir: Path, started: float) -> dict:
    """The summary of a run stopped before its first step: no losses, no scores, no adapter."""
    summary = {"run_id": run_dir.name, "run_dir": str(run_dir), "method": config.method, "model": config.model,
               "dataset": config.dataset, "steps": 0, "train_loss_first": None, "train_loss_last": None,
               "eval_loss_first": None, "eval_loss_last": None, "trainable_params": None,
               "calculator_trainable_params": None, "task_score_base": None, "task_score_adapted": None,
               "tokens_per_second": None, "peak_memory_bytes": None, "predicted_peak_bytes": None,
               "peak_memory_predicted_bytes": None,
               "stopped": True, "diverged": False, "seconds": time.time() - started, "truncated_examples": 0}
    runs.write_json(run_dir / "summary.json", summary)
    return summary
