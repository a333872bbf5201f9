"""Training and inference memory, term by term.

Sources:
- Weights, gradients, optimizer states: ZeRO (Rajbhandari et al. 2020, §3.1): AdamW keeps two fp32
  states per trainable parameter (8 bytes); bitsandbytes' 8-bit AdamW (Dettmers et al. 2022) keeps
  two 8-bit states (2 bytes); plain SGD keeps none. PEFT keeps adapter weights in float32 even on a
  16-bit base (autocast_adapter_dtype), so their weights and gradients take 4 bytes each.
- 4-bit NF4 (QLoRA, Dettmers et al. 2023, §3): 0.5 byte per weight of every linear layer plus one
  fp32 absmax per 64-weight block (0.0625 B); double quantization stores that absmax in 8 bits plus
  one fp32 constant per 256 blocks (1/64 + 4/16384 B). Embeddings, norms and the LM head stay in
  the compute dtype. 8-bit (LLM.int8) stores 1 byte per linear weight plus one fp32 scale per row.
- Activations: what autograd keeps for backward, counted per block, stage and method (explorer.costs.activations,
  measured with torch's saved-tensor hooks: tests/test_memory_saved.py), plus fp32 logits and their gradient; on
  CPU, LoRA's dropout masks at the input's width are a term of their own.
- Optimizer step on CPU: torch's AdamW updates one tensor at a time there (its foreach kernels are for CUDA/XPU
  only: torch.optim.optimizer._get_foreach_kernels_supported_devices), and each update makes two temporaries
  the size of the tensor, exp_avg_sq.sqrt() and its quotient by the bias correction (torch/optim/adam.py,
  _single_tensor_adam): 2 × the largest trainable tensor. Measured on the bundled model (2026-12-07): the LM
  head's step (one 49152×576 fp32 tensor, 108 MiB) raised the resident memory by 216 MiB above its states.
- KV cache: the keys and values transformers' cache holds per layer (measured in the derivation pass),
  a sliding-window layer at most its window; prefix tuning adds its virtual tokens to every sequence's cache.
- Several GPUs: explorer.costs.sharding (ZeRO's partitioning, per GPU).
- A CPU training process's peak (process_peak): the terms above, the two CPU terms, plus its runtime baseline,
  the resident memory it holds besides the model's tensors as training starts, measured by each run
  (explorer.train.process_memory). On CUDA the peak is torch's max allocated: no baseline, no CPU terms.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..options import option
from .activations import (  # noqa: F401  (re-exported: the activations term's parts, read by methods and tests)
    activation_bytes,
    activation_width,
    block_activations_per_token,
    block_stages,
    cpu_dropout_mask_bytes,
    distinct_inputs,
    final_norm_per_token,
    first_trained,
    first_trained_layer,
    inputs_without_gradient,
)
from .specs import Arch

if TYPE_CHECKING:  # read field by field; the cost maths never imports the method registry
    from ..methods.base import Adaptation

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ACCELERATORS_GB = (16, 24, 40, 48, 80, 141)
GIB = 1024 ** 3


@dataclass
class TrainSettings:
    batch_size: int = option(1, "Sequences per training step.", min=1, max=4096)
    seq_len: int = option(512, "Tokens per sequence.", min=1, max=1_048_576)
    precision: str = option("bf16", "Precision of the frozen base weights and activations (QLoRA always "
                            "stores its base in 4-bit NF4; int8 stores linear weights in 8 bits).",
                            choices=("fp32", "bf16", "fp16", "int8"))
    optimizer: str = option("adamw", "AdamW (two fp32 states), 8-bit AdamW (two 8-bit states) or plain SGD.",
                            choices=("adamw", "adamw8bit", "sgd"))
    gradient_checkpointing: bool = option(False, "Keep only each layer's input and recompute the rest in "
                                          "backward: far less activation memory for about one more forward pass.")
    padded: bool = option(True, "Batches pad shorter sequences to the longest, as the app's training does: "
                          "transformers then passes attention a mask, and it keeps the mask and the keys and values "
                          "repeated to every query head. Off: every sequence has the same length (packed), no mask.")
    mixed_precision: str = option("none", "Mixed precision (bf16/fp16): 16-bit weights and gradients with fp32 "
                                  "master weights beside the optimizer states (2 + 2 + 12 bytes per trained "
                                  "parameter with AdamW, the ZeRO paper's count). none: weights and gradients at "
                                  "the precision above.", choices=("none", "bf16", "fp16"))
    num_gpus: int = option(1, "GPUs training together (data parallel); batch_size is each GPU's micro-batch.",
                           min=1, max=1024)
    sharding: str = option("none", "How the GPUs split the model states: none/ddp (each holds everything), "
                           "ZeRO-1 (optimizer states), ZeRO-2 (+ gradients), ZeRO-3 or FSDP full-shard "
                           "(+ weights, gathered one block at a time).",
                           choices=("none", "ddp", "zero1", "zero2", "zero3", "fsdp"))
    offload: str = option("none", "Keep the optimizer states (and fp32 master weights) in CPU memory instead "
                          "of GPU memory (ZeRO-Offload).", choices=("none", "optimizer"))


def _expert_params(block) -> list[tuple[str, int]]:
    """The expert matrices of a MoE block: parameters read by its expert products (not nn.Linear)."""
    names = {x[6:] for op in block.ops if block.roles[op.name] == "experts" for x in op.a + op.b
             if x.startswith("param:")}
    return [(n, size) for n, size, _ in block.params if n in names]


def linear_weight_count(arch: Arch) -> int:
    """Weights of the block linear layers and experts: what bitsandbytes quantizes (not the LM head)."""
    total = 0
    for kind, count in Counter(arch.layer_kind).items():
        block = arch.blocks[kind]
        total += count * (sum(op.in_features * op.out_features for op in block.ops if op.linear)
                          + sum(size for _, size in _expert_params(block)))
    return total


def linear_rows(arch: Arch) -> int:
    total = 0
    for kind, count in Counter(arch.layer_kind).items():
        block = arch.blocks[kind]
        total += count * (sum(op.out_features for op in block.ops if op.linear)
                          + sum(size // arch.hidden for _, size in _expert_params(block)))
    return total


def base_weight_bytes(arch: Arch, precision: str, nf4: bool = False, double_quant: bool = True) -> float:
    total = arch.total_params()
    linear = linear_weight_count(arch)
    if nf4:
        constants = (1 / 64 + 4 / (64 * 256)) if double_quant else 4 / 64
        # What bitsandbytes leaves un-quantized (embeddings, norms, LM head) keeps the load's dtype.
        rest_dtype = "bf16" if precision == "int8" else precision
        return linear * (0.5 + constants) + (total - linear) * BYTES[rest_dtype]
    if precision == "int8":
        return linear * 1 + linear_rows(arch) * 4 + (total - linear) * BYTES["bf16"]
    return total * BYTES[precision]


def largest_trainable_tensor(arch: Arch, a: Adaptation) -> int:
    """Elements of the largest tensor that trains: the embedding matrix (or a larger block weight) when everything
    trains, the LM head, a trained module copy, one LoRA factor (r × the wider side), the soft prompt."""
    modules = arch.by_name
    sizes = [a.prompt_tokens * arch.hidden]
    if a.full:
        sizes += [arch.vocab * arch.hidden] + [size for block in arch.blocks for _, size, _ in block.params]
    if a.head == "lm":
        sizes.append(arch.vocab * arch.hidden)
    elif a.pooled_head:
        sizes.append(arch.hidden * a.num_classes)
    sizes += [modules[name].own_params for name in a.trainable_modules if name in modules]
    sizes += [rank * max(modules[name].in_features, modules[name].out_features)
              for name, rank in a.lora.items() if name in modules]
    return max(sizes)


def cpu_optimizer_step_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    """AdamW's two temporaries on CPU, each the size of the tensor it updates (module docstring): 2 × the largest
    trainable tensor, at the width its states have (fp32 for adapters and master weights). SGD without momentum
    updates in place; bitsandbytes' 8-bit AdamW is not measured here (0)."""
    if s.optimizer != "adamw":
        return 0.0
    width = BYTES["bf16"] if s.precision == "int8" else BYTES[s.precision]
    width = width if a.full and s.mixed_precision == "none" else 4
    return 2 * largest_trainable_tensor(arch, a) * width


@dataclass(frozen=True)
class Memory:
    weights_bytes: float
    trainable_bytes: float   # adapter weights beside a frozen base (0 for full: they are the weights)
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    # On CPU only (in a CPU process's peak, not in the GPU figure total_bytes): AdamW's per-tensor temporaries
    # and LoRA's dropout masks at full width.
    optimizer_step_cpu_bytes: float = 0.0
    dropout_masks_cpu_bytes: float = 0.0

    @property
    def total_bytes(self) -> float:
        return (self.weights_bytes + self.trainable_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.activations_bytes)

    def as_dict(self) -> dict:
        return {"weights_bytes": self.weights_bytes, "trainable_bytes": self.trainable_bytes,
                "gradients_bytes": self.gradients_bytes, "optimizer_bytes": self.optimizer_bytes,
                "activations_bytes": self.activations_bytes, "total_bytes": self.total_bytes,
                "optimizer_step_cpu_bytes": self.optimizer_step_cpu_bytes,
                "dropout_masks_cpu_bytes": self.dropout_masks_cpu_bytes}


def training_memory(arch: Arch, a: Adaptation, trainable: int, s: TrainSettings) -> Memory:
    states = {"adamw": 8, "adamw8bit": 2, "sgd": 0}[s.optimizer]
    activations = activation_bytes(arch, a, s)
    cpu = (cpu_optimizer_step_bytes(arch, a, s), cpu_dropout_mask_bytes(arch, a, s))
    if a.full:
        if s.mixed_precision != "none":
            # ZeRO §3.1: 16-bit weights (2Ψ) and gradients (2Ψ); the optimizer keeps fp32 master weights
            # beside its states (KΨ, K = 4 + 8 = 12 for AdamW).
            return Memory(arch.total_params() * 2, 0, trainable * 2, trainable * (4 + states), activations, *cpu)
        width = BYTES["bf16"] if s.precision == "int8" else BYTES[s.precision]
        weights = arch.total_params() * width
        return Memory(weights, 0, trainable * width, trainable * states, activations, *cpu)
    # PEFT keeps adapter weights in fp32 (autocast_adapter_dtype): they are their own master copy, so mixed
    # precision changes only the frozen base's activations, not the adapter's 4 + 4 + states bytes.
    weights = base_weight_bytes(arch, s.precision, nf4=a.quantized_base, double_quant=a.double_quant)
    weights += a.vera_shared * 4  # VeRA's shared random matrices: frozen float32 buffers
    kept = trainable * states + a.training_state * 4  # a method's own fp32 state across steps beside AdamW's
    return Memory(weights, trainable * 4, trainable * 4, kept, activations, *cpu)


# Each term of a training prediction: (label, Memory field, where it comes from).
TERM_SOURCES = [
    ("base weights", "weights_bytes", "parameters × bytes per weight at the precision; NF4: 0.5 B + block "
     "constants (QLoRA §3); int8: 1 B + a fp32 scale per row"),
    ("trainable weights", "trainable_bytes", "trainable parameters × 4 B: PEFT keeps adapters in fp32 "
     "(autocast_adapter_dtype); 0 for full fine-tuning, where they are the base weights"),
    ("gradients", "gradients_bytes", "one per trainable parameter at its precision (ZeRO §3.1)"),
    ("optimizer states", "optimizer_bytes", "AdamW: two fp32 states, 8 B per trainable parameter; 8-bit AdamW "
     "2 B; SGD none (ZeRO §3.1; Dettmers et al. 2022); plus a method's own state across steps (AdaLoRA's three "
     "importance scores per trainable parameter, peft.tuners.adalora.RankAllocator.update_ipt)"),
    ("activations", "activations_bytes", "what autograd keeps per token and layer (Korthikanti et al. 2022, "
     "§4.1) for this block's shapes and what trains, as measured with torch's saved-tensor hooks, + fp32 "
     "logits and their gradient"),
]
# Terms of a CPU process only (torch's CPU code paths): (label, Memory field, where it comes from).
CPU_TERM_SOURCES = [
    ("optimizer step (CPU)", "optimizer_step_cpu_bytes", "torch's AdamW on CPU updates one tensor at a time, with "
     "two temporaries its size (sqrt of the second moment and its quotient, torch/optim/adam.py "
     "_single_tensor_adam): 2 × the largest trainable tensor"),
    ("dropout masks (CPU)", "dropout_masks_cpu_bytes", "LoRA's dropout on CPU keeps a mask as wide as its input "
     "(torch's unfused dropout), beyond the one byte per element the activations count"),
]
RUNTIME_SOURCE = ("what a CPU training process holds besides the model's tensors (Python, torch, transformers, the "
                  "tokenizer, the data, what the allocator kept from loading and scoring): its resident memory as "
                  "training starts less the model's tensors, measured by each run (explorer.train.process_memory); "
                  "0 on CUDA, where the peak is torch's max allocated")


@dataclass(frozen=True)
class ProcessPeak:
    """A training process's predicted peak: the Calculator's terms plus its runtime baseline."""
    training: Memory
    runtime_baseline_bytes: float
    on_cpu: bool = True

    @property
    def total_bytes(self) -> float:
        return sum(value for _, value, _ in self.terms())

    def terms(self) -> list[tuple[str, float, str]]:
        """(term, bytes, where it comes from): they add up to total_bytes."""
        parts = self.training.as_dict()
        cpu = CPU_TERM_SOURCES if self.on_cpu else []
        return ([(label, parts[key], source) for label, key, source in TERM_SOURCES + cpu]
                + [("runtime baseline", self.runtime_baseline_bytes, RUNTIME_SOURCE)])


def process_peak(training: Memory, runtime_baseline_bytes: float, device: str = "cpu") -> ProcessPeak:
    """On CUDA the measured peak is torch's max allocated: no baseline and no CPU terms."""
    return ProcessPeak(training, float(runtime_baseline_bytes), on_cpu=device != "cuda")


def kv_cache_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    """Keys and values transformers' cache keeps per layer; a sliding-window layer keeps at most its window
    (DynamicSlidingWindowLayer keeps the last window - 1 tokens)."""
    act = 2 if s.precision in ("bf16", "fp16", "int8") else 4
    cached_tokens = s.seq_len + a.prompt_tokens + a.prefix_tokens
    elements = sum(per_token * (min(cached_tokens, window - 1) if window else cached_tokens)
                   for per_token, window in zip(arch.kv_per_token, arch.windows))
    return elements * s.batch_size * act


def fits(total_bytes: float) -> dict[int, bool]:
    return {gb: total_bytes <= gb * GIB for gb in ACCELERATORS_GB}
