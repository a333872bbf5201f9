"""Memory per GPU when several GPUs train one model together: ZeRO's partitioning of the model states.

Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models" (SC20),
§3.1 and §5.1, Figure 1. Mixed-precision AdamW keeps, for Ψ parameters, 2Ψ bytes of 16-bit weights, 2Ψ of
16-bit gradients and KΨ of optimizer states (K = 12: fp32 master weights, momentum and variance). Data
parallelism over N_d GPUs holds per GPU:

- DDP (the baseline, "none" here too): (2 + 2 + K)·Ψ
- ZeRO-1 (P_os, optimizer states partitioned): 2Ψ + 2Ψ + K·Ψ/N_d
- ZeRO-2 (P_os+g, and gradients): 2Ψ + (2 + K)·Ψ/N_d
- ZeRO-3 (P_os+g+p, and parameters; PyTorch FSDP's FULL_SHARD is the same partition): (2 + 2 + K)·Ψ/N_d

The paper's example, Ψ = 7.5B on N_d = 64 GPUs: 120 GB, 31.4 GB, 16.6 GB and 1.9 GB (tests/test_sharding.py).
The calculator partitions its own terms the same way: frozen base weights and trainable weights with the
parameters, gradients with the gradients, optimizer states (with fp32 master weights) with the optimizer.

ZeRO-3 and FSDP gather each unit's full weights just before it runs (and its full gradients before the
reduce-scatter): the working set counted here is the largest unit FSDP wraps with the usual transformer
auto-wrap policy, one decoder block, or the embeddings or LM head where those are larger; its weights,
plus its gradients when it trains. Prefetching the next unit (FSDP's default backward prefetch) can hold
two; that is not counted.

Offloading the optimizer (ZeRO-Offload, Ren et al. 2021) keeps its states and master weights in CPU memory.
Activations are per GPU: ``batch_size`` is each GPU's micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARDINGS = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
GPU_SIZES_GB = (24, 40, 48, 80, 141)
GPU_COUNTS = (1, 2, 4, 8)
GIB = 1024 ** 3


@dataclass(frozen=True)
class PerGpu:
    model_states_bytes: float      # weights, gradients and optimizer states this GPU holds (sharded)
    activations_bytes: float
    gathered_bytes: float          # ZeRO-3/FSDP: the largest unit's full weights (and gradients) while it runs
    gathered_unit: str             # which unit that is
    offloaded_bytes: float         # optimizer states kept in CPU memory instead
    num_gpus: int
    sharding: str

    @property
    def total_bytes(self) -> float:
        return self.model_states_bytes + self.activations_bytes + self.gathered_bytes

    def as_dict(self) -> dict:
        return {"model_states_bytes": self.model_states_bytes, "activations_bytes": self.activations_bytes,
                "gathered_bytes": self.gathered_bytes, "gathered_unit": self.gathered_unit,
                "offloaded_bytes": self.offloaded_bytes, "total_bytes": self.total_bytes,
                "num_gpus": self.num_gpus, "sharding": self.sharding}


def model_states(weights: float, gradients: float, optimizer: float, sharding: str, num_gpus: int,
                 offload: str = "none") -> tuple[float, float]:
    """(bytes on each GPU, bytes offloaded to CPU) of the model states under ZeRO's partitioning."""
    n = num_gpus
    on_cpu = optimizer if offload == "optimizer" else 0.0
    optimizer = 0.0 if offload == "optimizer" else optimizer
    if sharding in ("none", "ddp"):
        return weights + gradients + optimizer, on_cpu
    if sharding == "zero1":
        return weights + gradients + optimizer / n, on_cpu / n
    if sharding == "zero2":
        return weights + (gradients + optimizer) / n, on_cpu / n
    if sharding in ("zero3", "fsdp"):
        return (weights + gradients + optimizer) / n, on_cpu / n
    raise ValueError(f"unknown sharding {sharding!r}")


def largest_unit(arch) -> tuple[str, int]:
    """The largest unit ZeRO-3/FSDP gathers at once: a decoder block, or the embeddings or head if larger."""
    units = [(f"one decoder block ({arch.layers_path}.{arch.layer_kind.index(k)})", block.param_count)
             for k, block in enumerate(arch.blocks)]
    units.append((f"the embeddings ({arch.embed})", arch.vocab * arch.hidden))
    if arch.head and not arch.tied:
        units.append((f"the output layer ({arch.head})", arch.params_under(arch.head)))
    return max(units, key=lambda unit: unit[1])


def per_gpu(arch, memory, settings, trains_everything: bool) -> PerGpu:
    """What one GPU holds: its share of the model states, its micro-batch's activations and, under
    ZeRO-3/FSDP with several GPUs, the gathered working set."""
    n, sharding = settings.num_gpus, settings.sharding
    states, offloaded = model_states(memory.weights_bytes + memory.trainable_bytes, memory.gradients_bytes,
                                     memory.optimizer_bytes, sharding, n, settings.offload)
    gathered, unit = 0.0, ""
    if sharding in ("zero3", "fsdp") and n > 1:
        unit, params = largest_unit(arch)
        bytes_per_weight = memory.weights_bytes / max(arch.total_params(), 1)
        gathered = params * bytes_per_weight * (2 if trains_everything else 1)
    return PerGpu(states, memory.activations_bytes, gathered, unit, offloaded, n, sharding)


def fits_table(arch, memory, settings, trains_everything: bool) -> dict[int, dict[int, bool]]:
    """For each GPU size and count: does each GPU hold its share, under the chosen sharding?"""
    import dataclasses

    table = {}
    for count in GPU_COUNTS:
        total = per_gpu(arch, memory, dataclasses.replace(settings, num_gpus=count), trains_everything).total_bytes
        for size in GPU_SIZES_GB:
            table.setdefault(size, {})[count] = total <= size * GIB
    return table
