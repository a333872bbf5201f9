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
- Activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", §4.1) count the tensors autograd saves per layer; this counts them for this block's shapes and for
  what trains, as measured with torch.autograd.graph.saved_tensors_hooks on the bundled SmolLM2 (2026-12-07,
  every saved tensor listed per layer, docs/benchmarks.md): the two norms' inputs (2h); attention as
  transformers runs it by default (scaled_dot_product_attention: queries, keys and values at the queries'
  width, since transformers repeats grouped keys/values per head when a padding mask is passed, the output,
  one log-sum-exp per head and the mask's row of keys); the MLP's hidden activations (the activation's input,
  and for a gated MLP the activation's output and the up projection's output: 3·I, or I for a GELU MLP); and
  the input of each linear layer whose weight trains (a frozen layer's backward needs only its weight, so a
  frozen base keeps none of them: the saved-tensor list shows no base linear's input under LoRA or prompt
  tuning). MoE: the top-k experts' hidden units and the router's logits, layer kinds counted each as often as
  they occur; plus fp32 logits and their gradient (2·vocab·4 bytes per token). With gradient checkpointing
  only each layer's input (h) is kept, and one layer's activations are rebuilt at a time. LoRA with dropout
  keeps a dropped-out copy of each adapted layer's input and its mask (PEFT applies a separate dropout per
  layer): a one-byte mask on CUDA (torch's fused dropout); on CPU torch multiplies by a noise tensor of the
  input's own dtype (at::native dropout's unfused path), counted apart as a CPU term of the process peak.
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


def block_activations_per_token(arch: Arch, block, keys: int, trains_weights: bool = False) -> int:
    """Elements autograd keeps per token in one block (the module docstring's count): the two norms' inputs (2h),
    scaled_dot_product_attention's queries, keys, values (at the queries' width) and output (4 × the attention
    output's width), its log-sum-exp per head and the mask's keys, the MLP's hidden activations, the experts'
    and router's, and with ``trains_weights`` (full fine-tuning) the input of every linear layer, each distinct
    input once (q, k and v read one)."""
    roles = block.roles
    h = arch.hidden
    core = [op for op in block.ops if op.per_key]
    width = sum(op.out_per_token for op in core)            # P·V's output: heads × head_dim
    heads = max((op.out_per_key for op in core), default=0)  # Q·Kᵀ's output per key: one score per head
    attention = 4 * width + heads + keys if core else 0
    experts = {op.name for op in block.ops if roles[op.name] == "experts"}
    mlp_in = [op for op in block.ops if roles[op.name] == "mlp_in"]
    hidden_units = max((op.out_features for op in mlp_in), default=0)
    # The activation keeps its input; a gated MLP's product keeps both operands (the activation's output and up's).
    mlp = hidden_units * (3 if len(mlp_in) > 1 else 1) if mlp_in else 0
    first_stage = sum(op.out_per_token for op in block.ops if op.name in experts and not set(op.a + op.b) & experts)
    router = sum(op.out_per_token for op in block.ops if roles[op.name] == "router")
    inputs = 0
    if trains_weights:
        inputs = sum(in_features for in_features in {op.a: op.in_features for op in block.ops if op.linear}.values())
    return 2 * h + attention + mlp + 2 * first_stage + router + inputs


def activation_width(s: TrainSettings) -> int:
    if s.mixed_precision != "none" or s.precision == "int8":
        return 2
    return BYTES[s.precision]


def activation_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    act = activation_width(s)
    seq = s.seq_len + a.prompt_tokens
    keys = seq + a.prefix_tokens
    tokens = s.batch_size * seq
    logits = tokens * arch.vocab * 4 * 2
    if a.head:  # frozen backbone runs without autograd: only the head's input and output are kept
        head = s.batch_size * arch.hidden * act if a.pooled_head else logits
        return tokens * arch.hidden * act + head
    per_kind = {kind: block_activations_per_token(arch, arch.blocks[kind], keys, trains_weights=a.full)
                for kind in set(arch.layer_kind)}
    # Blocks below the first one that trains see no tensor that needs a gradient: autograd keeps nothing there.
    layers_total = sum(per_kind[kind] for kind in arch.layer_kind[first_trained_layer(arch, a):])
    extra = 0
    modules = arch.by_name
    for name, rank in a.lora.items():
        if arch.layer_of(name) is None:
            continue
        extra += rank                                                   # LoRA: A's output per adapted layer
        if a.lora_dropout > 0:  # (the mask at one byte, as on CUDA; CPU's wider mask: cpu_dropout_mask_bytes)
            # Each adapted layer has its own dropout: a dropped-out copy of its input (kept for A's
            # weight gradient) and a one-byte mask; DoRA also keeps the base and LoRA outputs.
            m = modules[name]
            extra += m.in_features * (1 + 1 / act) + (2 * m.out_features if a.dora else 0)
    # IA³ scales a layer's output (k, v) or its input (down): the scale's gradient needs the unscaled tensor.
    extra += sum(modules[n].out_features for n in a.ia3_out if n in modules and arch.layer_of(n) is not None)
    extra += sum(modules[n].in_features for n in a.ia3_in if n in modules and arch.layer_of(n) is not None)
    # Other tuners' products (LoHa, LoKr, OFT, ...) build or apply a trained change to the layer's input, and
    # trained copies of linears (modules_to_save) train on it: its gradient needs that input, which the frozen
    # base layer alone would not keep. LoRA without dropout keeps it for A's gradient. Layers that read one
    # tensor (q, k and v; gate and up) keep it once.
    copies = [n for n in a.trainable_modules if n in modules and modules[n].kind in ("linear", "conv1d")]
    undropped = [n for n in a.lora if a.lora_dropout <= 0]
    extra += distinct_inputs(arch, [*a.products, *copies, *undropped])
    for name in a.trainable_modules:  # a trained norm keeps its normalized input for its scale's gradient
        m = modules.get(name)
        if m is not None and arch.layer_of(name) is not None and m.kind not in ("linear", "conv1d"):
            extra += m.own_params
    for name, rank in a.vera.items():  # VeRA keeps A's output (for λ_d's gradient) and B's (for λ_b's)
        extra += rank + modules[name].out_features
    if a.adapter_dim:
        extra += arch.layers * (int(a.adapter_after_attention) + int(a.adapter_after_ffn)) * (
            2 * a.adapter_dim + arch.hidden)
    extra += a.saved_per_token
    if s.gradient_checkpointing:  # one layer's activations (and its share of the per-step tensors) at a time
        one_layer = max(per_kind.values()) + extra / arch.layers
        return tokens * (arch.layers * arch.hidden + one_layer) * act + a.saved_per_step / arch.layers * act + logits
    return tokens * (layers_total + extra) * act + a.saved_per_step * act + logits


def distinct_inputs(arch: Arch, names) -> int:
    """Elements per token of the distinct inputs of these block linears: layers that read one tensor (the same
    operand sources in the block's table: q, k and v; gate and up) share it."""
    seen = {}
    for name in set(names):
        layer, local = arch.locate(name)
        if layer is None or name not in arch.by_name:
            continue
        ops = {op.name: op for op in arch.blocks[arch.layer_kind[layer]].ops}
        op = ops.get(local)
        key = (layer, op.a) if op is not None else (layer, local)
        seen[key] = arch.by_name[name].in_features
    return sum(seen.values())


def first_trained_layer(arch: Arch, a: Adaptation) -> int:
    """The first block whose forward involves something that trains (0 when the embeddings or the input train, or
    the method touches every block): the blocks below it run as in inference."""
    if a.full or a.prompt_tokens or a.prefix_tokens or a.adapter_dim or a.saved_per_token or a.saved_per_step:
        return 0
    names = [*a.lora, *a.products, *a.trainable_modules, *a.ia3_out, *a.ia3_in, *a.vera,
             *(name.rsplit(".", 1)[0] for name in a.lora_params)]
    layers = [arch.layer_of(name) for name in names]
    below = [layer for layer, name in zip(layers, names) if layer is None and name != arch.head]
    if below or not names:  # the embeddings train (they come first), or nothing is known: count every block
        return 0
    inside = [layer for layer in layers if layer is not None]
    return min(inside) if inside else arch.layers


def cpu_dropout_mask_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    """What LoRA's dropout masks take on CPU beyond the one byte per element counted in the activations: torch's
    unfused dropout (every device but CUDA) keeps a noise tensor of the input's dtype as its mask."""
    if a.lora_dropout <= 0:
        return 0.0
    act = activation_width(s)
    inputs = sum(arch.by_name[name].in_features for name in a.lora if arch.layer_of(name) is not None)
    if s.gradient_checkpointing:  # one layer's activations at a time
        inputs /= arch.layers
    return s.batch_size * (s.seq_len + a.prompt_tokens) * inputs * (act - 1)


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
