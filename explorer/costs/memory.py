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
  Models", §4.1) count the tensors autograd saves per layer. We count the same way for this
  block's shapes: 4h + q_dim + 2·kv_dim + heads·keys (eager attention probabilities) for
  attention, 2h + 4·I (gated MLP) or 2h + 2·I (GELU MLP), per token; plus fp32 logits and their
  gradient (2·vocab·4 bytes per token). With gradient checkpointing only each layer's input (h) is
  kept, and one layer's activations are rebuilt at a time. LoRA with dropout keeps a dropped-out copy
  of each adapted layer's input and its mask (PEFT applies a separate dropout per layer).
- KV cache: 2 (keys and values)·layers·kv_dim per cached token; prefix tuning adds its virtual
  tokens to every sequence's cache.
"""

from __future__ import annotations

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


def linear_weight_count(arch: Arch) -> int:
    """Weights of the block linear layers and experts: what bitsandbytes quantizes (not the LM head)."""
    per_layer = sum(lin.in_features * lin.out_features for lin in arch.linears) + arch.experts * arch.expert_params
    return arch.layers * per_layer


def linear_rows(arch: Arch) -> int:
    per_layer = sum(lin.out_features for lin in arch.linears)
    if arch.experts:
        per_layer += arch.experts * (3 * arch.intermediate)
    return arch.layers * per_layer


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


def activation_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    act = BYTES.get(s.precision, 2) if s.precision != "int8" else 2
    seq = s.seq_len + a.prompt_tokens
    keys = seq + a.prefix_tokens
    tokens = s.batch_size * seq
    logits = tokens * arch.vocab * 4 * 2
    if a.head:  # frozen backbone runs without autograd: only the head's input and output are kept
        head = s.batch_size * arch.hidden * act if a.pooled_head else logits
        return tokens * arch.hidden * act + head
    mlp = 2 * arch.hidden + (2 if arch.model_type == "gpt2" else 4) * arch.intermediate
    if arch.experts:
        mlp = 2 * arch.hidden + arch.experts_per_token * 4 * arch.intermediate + arch.experts
    per_token = 4 * arch.hidden + arch.q_dim + 2 * arch.kv_dim + arch.heads * keys + mlp
    per_token += sum(a.lora.values())                                 # LoRA: A's output per adapted layer
    for name, rank in a.vera.items():  # VeRA keeps A's output (for λ_d's gradient) and B's (for λ_b's)
        per_token += rank + arch.linear(name).out_features
    for name in a.lora:
        if name == "lm_head" or a.lora_dropout <= 0:
            continue
        lin = arch.linear(name)
        # Each adapted layer has its own dropout: a dropped-out copy of its input (kept for A's
        # weight gradient) and a one-byte mask; DoRA also keeps the base and LoRA outputs.
        per_token += lin.in_features * (1 + 1 / act) + (2 * lin.out_features if a.dora else 0)
    if a.adapter_dim:
        per_token += (int(a.adapter_after_attention) + int(a.adapter_after_ffn)) * (2 * a.adapter_dim + arch.hidden)
    if s.gradient_checkpointing:
        return tokens * (arch.layers * arch.hidden + per_token) * act + logits
    return tokens * arch.layers * per_token * act + logits


@dataclass(frozen=True)
class Memory:
    weights_bytes: float
    trainable_bytes: float   # adapter weights beside a frozen base (0 for full: they are the weights)
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float

    @property
    def total_bytes(self) -> float:
        return (self.weights_bytes + self.trainable_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.activations_bytes)

    def as_dict(self) -> dict:
        return {"weights_bytes": self.weights_bytes, "trainable_bytes": self.trainable_bytes,
                "gradients_bytes": self.gradients_bytes, "optimizer_bytes": self.optimizer_bytes,
                "activations_bytes": self.activations_bytes, "total_bytes": self.total_bytes}


def training_memory(arch: Arch, a: Adaptation, trainable: int, s: TrainSettings) -> Memory:
    optimizer = {"adamw": 8, "adamw8bit": 2, "sgd": 0}[s.optimizer] * trainable
    if a.full:
        width = BYTES["bf16"] if s.precision == "int8" else BYTES[s.precision]
        weights = arch.total_params() * width
        return Memory(weights, 0, trainable * width, optimizer, activation_bytes(arch, a, s))
    weights = base_weight_bytes(arch, s.precision, nf4=a.quantized_base, double_quant=a.double_quant)
    weights += a.vera_shared * 4  # VeRA's shared random matrices: frozen float32 buffers
    return Memory(weights, trainable * 4, trainable * 4, optimizer, activation_bytes(arch, a, s))


def kv_cache_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    act = 2 if s.precision in ("bf16", "fp16", "int8") else 4
    cached_tokens = s.seq_len + a.prompt_tokens + a.prefix_tokens
    return 2 * arch.layers * arch.kv_dim * cached_tokens * s.batch_size * act


def fits(total_bytes: float) -> dict[int, bool]:
    return {gb: total_bytes <= gb * GIB for gb in ACCELERATORS_GB}
