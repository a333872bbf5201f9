"""What a run will cost, said before it starts: the Calculator's memory, and a time from this machine's own
measurements.

Time: a run's training steps cost ``steps × tokens per step × training FLOPs per token`` (the Calculator's
exact FLOP formulas). What this machine delivers is measured by the runs of the same model it has finished:
each one's tokens/s times its own FLOPs per token is an effective FLOP/s, and the estimate uses the median of
the newest. Other models are no guide (a tiny model's steps are almost all overhead, so its effective FLOP/s says
nothing about a larger model's), so with no finished run of this model the estimate says so instead of
guessing. Runs of the same method are preferred where there are any (a method's effective FLOP/s differs:
DoRA recomputes its weight norms, small adapters are overhead-bound), then any run of the model.

What comes on top of the steps (loading, scoring the base and the fine-tuned model, saving) is taken from runs
that asked the same questions (held-out examples, probe questions, new tokens, base scored or not): a race's
entrant scores far less than a Fine-tune run that also says what it learned. The watch-it-learn snapshots are
counted apart, as the planned number of snapshots times a snapshot's measured time, since their number grows
with the steps. An estimate was 40 s where the run took 64 s before these two (issue 23).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import calculator
from ..costs import memory
from ..methods import METHODS
from ..models import specs as model_specs
from . import runs, timeline
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
    spec = model_specs.resolve(model)
    options_obj = METHODS[method].parse_options(dict(options))
    return calculator.calculate(spec, method, options_obj, memory.TrainSettings(seq_len=seq_len),
                                exact_mode="skip").flops.train_per_token


def questions_asked(config: TrainConfig) -> tuple:
    """What a run asks outside its steps, apart from the watch: runs with the same tuple spend the same time."""
    return (config.eval_examples, config.eval_loss_examples, config.probe_examples, config.max_new_tokens,
            config.score_base)


@dataclass
class Measured:
    """One finished run of the model, as the estimate reads it."""

    method: str
    rate: float                  # effective training FLOP/s
    outside: float | None        # seconds outside the steps and the watch
    snapshot: float | None       # seconds per watch snapshot (None: the watch was off)
    questions: tuple


@lru_cache(maxsize=1024)
def _read(folder: str, stamp: float) -> Measured | None:
    """A finished run's figures (cached by its summary's time, ``stamp``: a finished run's files do not change)."""
    run = runs.read_run(Path(folder))
    summary, config = run.summary, run.config
    if (run.state != "done" or config is None or not summary.get("tokens_per_second")
            or not summary.get("steps") or summary.get("feature_seconds") is not None):
        return None  # (a head run's speed is one forward per text, not training steps: no guide to a step's time)
    try:
        flops = _flops_per_token(config.model, config.method, tuple(sorted(run.options.items())), config.seq_len)
    except Exception:  # noqa: BLE001 - a run whose settings no longer parse says nothing about this machine
        return None
    snapshots = [e["seconds"] for e in runs.read_log(run.folder) if e.get("event") == "replies" and "seconds" in e]
    outside = summary.get("seconds", 0) - summary.get("train_seconds", 0) - sum(snapshots)
    return Measured(config.method, summary["tokens_per_second"] * flops, outside if outside > 0 else None,
                    statistics.median(snapshots) if snapshots else None, questions_asked(config))


def _measured(model: str) -> list[Measured]:
    """The newest finished runs of ``model`` on this machine (at most NEWEST)."""
    found = []
    for run in runs.list_runs():
        if run.config is None or run.config.model != model or run.state != "done":
            continue
        try:
            stamp = (run.folder / "summary.json").stat().st_mtime
        except OSError:
            continue
        measured = _read(str(run.folder), stamp)
        if measured:
            found.append(measured)
        if len(found) >= NEWEST:
            break
    return found


@lru_cache(maxsize=64)
def mean_tokens(model: str, dataset: str, seq_len: int) -> float | None:
    """Mean tokens per training example of a chat dataset as the run will encode it (cut at ``seq_len``), or
    None when it cannot be read here. Padding is not counted: neither is it in a run's tokens/s. Without it
    the estimate took every example as ``seq_len`` long: the default race was estimated at 26 minutes and
    took 16.3 (pirate rows are shorter than 96 tokens)."""
    try:
        from transformers import AutoTokenizer

        from ..data import chat, sources
        from ..models import registry

        if sources.dataset_kind(dataset) != "chat":
            return None
        tokenizer = AutoTokenizer.from_pretrained(registry.resolve(model).location, trust_remote_code=False)
        encoded, _ = chat.encode_dataset(tokenizer, sources.load_dataset(dataset)[0], seq_len)
        return statistics.mean(len(e.input_ids) for e in encoded) if encoded else None
    except Exception:  # noqa: BLE001 - an estimate falls back to the sequence length, an upper bound
        return None


def estimate(config: TrainConfig, options_values: dict, tokens_per_example: float | None = None) -> Estimate:
    """Memory and time of a run before it starts. ``tokens_per_example``: the dataset's mean length in tokens
    (by default measured with the model's tokenizer; else the sequence length, an upper bound)."""
    method = METHODS[config.method]
    options = method.parse_options(options_values)
    spec = model_specs.resolve(config.model)
    result = calculator.calculate(spec, config.method, options, train_settings(config), exact_mode="skip")
    measured = _measured(config.model)
    if not measured:
        return Estimate(result.training.total_bytes, None, None, f"no run of {config.model} has finished on this "
                        "machine yet, so there is no measured speed to go by")
    same_method = [m for m in measured if m.method == config.method]
    speed_from = same_method or measured
    rate = statistics.median(m.rate for m in speed_from)
    where = (f"the {len(speed_from)} newest finished {method.title} run(s) of {config.model} here" if same_method
             else f"the {len(speed_from)} newest finished run(s) of {config.model} here (none of {method.title} yet)")
    tokens_per_example = tokens_per_example or mean_tokens(config.model, config.dataset, config.seq_len)
    per_example = min(tokens_per_example or config.seq_len, config.seq_len)
    tokens = config.steps * config.batch_size * config.grad_accum * per_example
    seconds = tokens * result.flops.train_per_token / rate
    asked = questions_asked(config)
    outside = ([m.outside for m in measured if m.questions == asked and m.outside is not None]
               or [m.outside for m in measured if m.outside is not None])
    other = statistics.median(outside) if outside else None
    snapshots = timeline.snapshot_steps(config.steps, config.watch_every)
    per_snapshot = [m.snapshot for m in measured if m.snapshot is not None]
    if snapshots and per_snapshot:
        other = (other or 0.0) + len(snapshots) * statistics.median(per_snapshot)
    return Estimate(result.training.total_bytes, seconds, other, f"{rate / 1e9:.3g} GFLOP/s measured by {where}")
