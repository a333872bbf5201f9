"""What a run will cost, said before it starts: the Calculator's memory, and a time from this machine's own
measurements.

Time: a run's training steps cost ``steps × tokens per step × training FLOPs per token`` (the Calculator's
exact FLOP formulas). What this machine delivers is measured by the runs it has finished: each one's
tokens/s times its own FLOPs per token is an effective FLOP/s. The estimate uses the median of the newest
runs on the same model (any method), else of any model; with no finished run it says so instead of
guessing. Held-out scoring and model loading come on top and are estimated the same way from those runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache

from .. import calculator
from ..costs import memory, specs
from ..methods import METHODS
from . import runs
from .config import TrainConfig

NEWEST = 12  # finished runs read for the measurement


@dataclass
class Estimate:
    memory_bytes: float                 # the Calculator's training peak at these settings
    train_seconds: float | None         # training steps only; None without a measurement
    other_seconds: float | None         # loading, scoring and saving, from the same runs
    basis: str                          # where the time comes from, in words

    @property
    def total_seconds(self) -> float | None:
        return None if self.train_seconds is None else self.train_seconds + (self.other_seconds or 0.0)


def train_settings(config: TrainConfig) -> memory.TrainSettings:
    return memory.TrainSettings(batch_size=config.batch_size, seq_len=config.seq_len, precision=config.precision,
                                optimizer=config.optimizer, gradient_checkpointing=config.gradient_checkpointing)


@lru_cache(maxsize=256)
def _flops_per_token(model: str, method: str, options: tuple, seq_len: int) -> float:
    spec = specs.resolve(model)
    options_obj = METHODS[method].parse_options(dict(options))
    return calculator.calculate(spec, method, options_obj, memory.TrainSettings(seq_len=seq_len),
                                exact_mode="skip").flops.train_per_token


def _measured(model: str) -> tuple[list[float], list[float], str]:
    """Effective training FLOP/s and seconds outside training steps of the newest finished runs."""
    same, other = [], []
    for run in runs.list_runs():
        summary, config = run.summary, run.config
        if run.state != "done" or config is None or not summary.get("tokens_per_second") or not summary.get("steps"):
            continue
        try:
            flops = _flops_per_token(config.model, config.method, tuple(sorted(run.options.items())), config.seq_len)
        except Exception:  # noqa: BLE001 - a run of a model no longer here says nothing about this machine
            continue
        row = (summary["tokens_per_second"] * flops, summary.get("seconds", 0) - summary.get("train_seconds", 0))
        (same if config.model == model else other).append(row)
        if len(same) >= NEWEST:
            break
    chosen, where = (same, f"the {len(same)} newest finished run(s) of {model} here") if same else \
        (other[:NEWEST], f"the {min(len(other), NEWEST)} newest finished run(s) of other models here")
    return [r[0] for r in chosen], [r[1] for r in chosen if r[1] > 0], where


def estimate(config: TrainConfig, options_values: dict, tokens_per_example: float | None = None) -> Estimate:
    """Memory and time of a run before it starts. ``tokens_per_example``: the dataset's mean length in tokens
    when known (else the sequence length, an upper bound)."""
    method = METHODS[config.method]
    options = method.parse_options(options_values)
    spec = specs.resolve(config.model)
    result = calculator.calculate(spec, config.method, options, train_settings(config), exact_mode="skip")
    rates, others, where = _measured(config.model)
    if not rates:
        return Estimate(result.training.total_bytes, None, None,
                        "no run has finished on this machine yet, so there is no measured speed to go by")
    per_example = min(tokens_per_example or config.seq_len, config.seq_len)
    tokens = config.steps * config.batch_size * config.grad_accum * per_example
    seconds = tokens * result.flops.train_per_token / statistics.median(rates)
    other = statistics.median(others) if others else None
    return Estimate(result.training.total_bytes, seconds, other,
                    f"{statistics.median(rates) / 1e9:.3g} GFLOP/s measured by {where}")
