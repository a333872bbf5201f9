"""Which accelerate configuration a recipe launches with, chosen by the Calculator's memory per GPU.

One GPU: the plain single-process config. Several: DDP when every GPU can hold the whole training state (the
fastest: no gathering of weights), else FSDP (full shard) or DeepSpeed ZeRO-3, which split the weights,
gradients and optimizer states across the GPUs (Rajbhandari et al. 2020, "ZeRO", §5.1), else none fits.

The per-GPU figure is the Calculator's. ``per_gpu_bytes`` is the one hook: when the Calculator's
TrainSettings have ``num_gpus`` and ``sharding`` (the per-GPU memory model of explorer.costs.sharding), it asks
for each strategy's share; before that, every strategy is charged the single-GPU total (DDP's replica is exact;
for FSDP and ZeRO-3 it is an upper bound, and the recipe says so).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ExplorerError

STRATEGIES = ("single", "ddp", "fsdp", "zero3")
CONFIG_FILES = {"single": "single_gpu.yaml", "ddp": "ddp.yaml", "fsdp": "fsdp.yaml", "zero3": "zero3.yaml"}
GIB = 1024 ** 3
TITLES = {"single": "one GPU", "ddp": "DDP (each GPU holds a full replica)",
          "fsdp": "FSDP full shard (weights, gradients and optimizer states split)",
          "zero3": "DeepSpeed ZeRO-3 (weights, gradients and optimizer states split)"}


@dataclass(frozen=True)
class Choice:
    strategy: str                  # one of STRATEGIES
    gpus: int
    gpu_memory_gb: float
    per_gpu_bytes: dict[str, float]  # strategy -> the Calculator's bytes per GPU
    sharded_model: bool            # whether the Calculator modelled sharding (else: single-GPU totals)
    fits: bool
    reason: str

    @property
    def config_file(self) -> str:
        return CONFIG_FILES[self.strategy]


def _sharding_supported(settings_type) -> bool:
    names = {f.name for f in dataclasses.fields(settings_type)}
    return {"num_gpus", "sharding"} <= names


def per_gpu_bytes(spec, method: str, options, train_settings, gpus: int, strategy: str) -> tuple[float, bool]:
    """(the Calculator's training memory on each GPU, whether sharding was modelled). The hook for the
    Calculator's per-GPU model: see the module docstring."""
    from .. import calculator

    if gpus > 1 and _sharding_supported(type(train_settings)):
        sharding = {"single": "none", "ddp": "ddp", "fsdp": "fsdp", "zero3": "zero3"}[strategy]
        shared = dataclasses.replace(train_settings, num_gpus=gpus, sharding=sharding)
        result = calculator.calculate(spec, method, options, shared, exact_mode="skip")
        return float(result.per_gpu.total_bytes), True
    result = calculator.calculate(spec, method, options, train_settings, exact_mode="skip")
    return float(result.training.total_bytes), False


def choose(spec, method: str, options, train_settings, gpus: int, gpu_memory_gb: float,
           strategy: str | None = None) -> Choice:
    """The strategy for ``gpus`` GPUs of ``gpu_memory_gb`` each: the one asked for, or the cheapest that fits."""
    if gpus < 1 or gpus > 1024:
        raise ExplorerError(f"gpus must be between 1 and 1024, got {gpus}.")
    if not 0 < gpu_memory_gb < 10_000:
        raise ExplorerError(f"gpu_memory_gb must be a positive number of GiB per GPU, got {gpu_memory_gb}.")
    if strategy is not None and strategy not in STRATEGIES:
        raise ExplorerError(f"strategy must be one of {', '.join(STRATEGIES[1:])}, got {strategy!r}.")
    candidates = ["single"] if gpus == 1 else ["ddp", "fsdp", "zero3"]
    if strategy == "single" and gpus > 1:
        raise ExplorerError("strategy 'single' is for one GPU; with several choose ddp, fsdp or zero3.")
    if strategy is not None and gpus == 1 and strategy != "single":
        candidates = [strategy]  # one GPU: sharding splits nothing, but the user may want the config anyway
    sizes, modelled = {}, False
    for name in candidates:
        sizes[name], modelled = per_gpu_bytes(spec, method, options, train_settings, gpus, name)
    limit = gpu_memory_gb * GIB
    if strategy is not None:
        chosen = strategy
        fits = sizes.get(chosen, sizes[candidates[0]]) <= limit
        reason = f"asked for {TITLES[chosen]}"
    else:
        fitting = [name for name in candidates if sizes[name] <= limit]
        chosen = fitting[0] if fitting else candidates[-1]
        fits = bool(fitting)
        reason = (f"the cheapest that fits {gpu_memory_gb:g} GiB per GPU: {TITLES[chosen]}" if fits else
                  f"nothing fits {gpu_memory_gb:g} GiB per GPU; {TITLES[chosen]} needs the least")
    return Choice(chosen, gpus, gpu_memory_gb, sizes, modelled, fits, reason)
