"""FLOPs per token of a forward and a training step, for the base model and every method.

Convention (PaLM appendix B; nanoGPT's ``estimate_mfu``; torch.utils.flop_counter): a matmul of
(m×k)·(k×n) costs 2·m·k·n FLOPs; element-wise work (norms, activations, IA³ scaling, softmax) is
not counted. So a forward pass costs 2 FLOPs per weight of every linear layer per token, plus the
attention core: Q·Kᵀ and P·V, each 2·s_q·s_k·q_dim per layer and sequence.

Backward, exactly as autograd does it: for every matmul, one input-gradient product when its input
depends on something trainable, and one weight-gradient product when its weight is trainable, each
costing as much as the forward product. Frozen layers below the first trainable parameter cost
nothing in backward; frozen layers above it still pay the input-gradient product. That is why
LoRA training costs about 2× a forward, not the 3× of full fine-tuning (the usual "6N").

Tests compare these formulas with FlopCounterMode on meta-device models, for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .specs import Arch

if TYPE_CHECKING:  # the cost maths reads an Adaptation's fields; it never imports the method registry
    from ..methods.base import Adaptation


class _Counter:
    def __init__(self):
        self.forward = 0
        self.backward = 0

    def matmul(self, flops: int, input_requires_grad: bool, weight_trainable: bool) -> None:
        self.forward += flops
        self.backward += flops * (int(input_requires_grad) + int(weight_trainable))


def _linear(count: _Counter, a: Adaptation, tokens: int, name: str, fan_in: int, fan_out: int,
            rg_in: bool, training: bool) -> bool:
    """Count one (possibly adapted) linear layer; return whether its output requires grad."""
    count.matmul(2 * tokens * fan_in * fan_out, rg_in, a.full)
    rank = a.lora.get(name, 0)
    if rank:
        count.matmul(2 * tokens * fan_in * rank, rg_in, True)       # lora_A
        count.matmul(2 * tokens * rank * fan_out, True, True)       # lora_B (its input depends on A)
        if a.dora:
            # PEFT builds B·A for DoRA's weight norm by pushing an identity matrix through A and B,
            # once per forward and without backward (the norm is detached, DoRA §4.3) ...
            count.matmul(2 * fan_in * fan_in * rank + 2 * fan_in * rank * fan_out, False, False)
            if training and a.lora_dropout > 0:  # ... and with dropout it re-runs W on the dropped-out input
                count.matmul(2 * tokens * fan_in * fan_out, rg_in, False)
    vera_rank = a.vera.get(name, 0)
    if vera_rank:  # λ_b ⊙ (B·(λ_d ⊙ (A·x))): A and B are frozen shared buffers, only the vectors train
        count.matmul(2 * tokens * fan_in * vera_rank, rg_in, False)
        count.matmul(2 * tokens * vera_rank * fan_out, True, False)  # its input depends on λ_d
    return rg_in or a.full or bool(rank) or bool(vera_rank) or name in a.ia3_out or name in a.ia3_in


def _adapter(count: _Counter, a: Adaptation, tokens: int, hidden: int, rg_in: bool) -> bool:
    count.matmul(2 * tokens * hidden * a.adapter_dim, rg_in, True)  # down
    count.matmul(2 * tokens * a.adapter_dim * hidden, True, True)   # up
    return True


def count_flops(arch: Arch, a: Adaptation, seq_len: int, batch: int = 1, training: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of one pass over ``batch`` sequences of ``seq_len`` user tokens.

    ``training``: the model is in training mode (dropout active), which changes DoRA's cost."""
    s = seq_len + a.prompt_tokens              # prompt tuning lengthens every sequence
    keys = s + a.prefix_tokens                 # prefix tuning lengthens only the keys/values
    tokens = batch * s
    count = _Counter()
    if a.prefix_mlp_hidden:  # the reparameterization MLP runs once per forward
        n, t, e = a.prefix_tokens, a.prefix_token_dim, a.prefix_mlp_hidden
        count.matmul(2 * n * t * e, True, True)
        count.matmul(2 * n * e * arch.layers * 2 * t, True, True)
    rg = a.full or a.prompt_tokens > 0 or "attn_in" in a.norms  # a trained norm before the first attention
    # Every layer costs the same given whether its input requires grad, so at most two distinct
    # layers need counting (this keeps a 126-layer model as fast as a 2-layer one).
    per_state: dict[bool, tuple[int, int, bool]] = {}
    for _ in range(arch.layers):
        if rg not in per_state:
            layer = _Counter()
            per_state[rg] = (*_count_layer(layer, arch, a, batch, s, keys, tokens, rg, training),)
        forward, backward, rg_next = per_state[rg]
        count.forward += forward
        count.backward += backward
        rg = rg_next
    if a.pooled_head:  # mean-pooled hidden state -> linear (classes or embedding width), once per sequence
        count.matmul(2 * batch * arch.hidden * a.num_classes, False, True)
    else:
        head_trainable = a.full or a.head == "lm"
        rg = rg or "final" in a.norms
        count.matmul(2 * tokens * arch.hidden * arch.vocab, rg, head_trainable)
        if a.lora.get("lm_head"):
            r = a.lora["lm_head"]
            count.matmul(2 * tokens * arch.hidden * r, rg, True)
            count.matmul(2 * tokens * r * arch.vocab, True, True)
    return count.forward, count.backward


def _count_layer(count: _Counter, arch: Arch, a: Adaptation, batch: int, s: int, keys: int, tokens: int,
                 rg: bool, training: bool) -> tuple[int, int, bool]:
    """(forward, backward, output requires grad) of one decoder block."""
    rg_x = rg
    rg_attn = {}
    for lin in arch.linears:
        if lin.reads == "attn_in":
            rg_attn[lin.name] = _linear(count, a, tokens, lin.name, lin.in_features, lin.out_features, rg_x, training)
    rg_q, rg_k, rg_v = _qkv_requires_grad(arch, rg_attn)
    rg_k = rg_k or a.prefix_tokens > 0
    rg_v = rg_v or a.prefix_tokens > 0
    rg_p = rg_q or rg_k
    core = 2 * batch * s * keys * arch.q_dim
    count.forward += 2 * core
    count.backward += core * (int(rg_q) + int(rg_k) + int(rg_p) + int(rg_v))
    rg_core = rg_p or rg_v
    o = next(lin for lin in arch.linears if lin.reads == "attn_core")
    rg_out = _linear(count, a, tokens, o.name, o.in_features, o.out_features, rg_core, training)
    rg_out = rg_out or "attn_out" in a.norms  # Gemma-2's norm after attention
    if a.adapter_dim and a.adapter_after_attention:
        rg_out = _adapter(count, a, tokens, arch.hidden, rg_out)
    rg_h = rg_x or rg_out or "mlp_in" in a.norms  # the MLP reads the normed stream
    if arch.experts:
        rg_mlp = _moe(count, arch, a, tokens, rg_h)
    else:
        rg_mid = False
        for lin in arch.linears:
            if lin.reads == "mlp_in":
                rg_mid |= _linear(count, a, tokens, lin.name, lin.in_features, lin.out_features, rg_h, training)
        down = next(lin for lin in arch.linears if lin.reads == "mlp_mid")
        rg_mlp = _linear(count, a, tokens, down.name, down.in_features, down.out_features, rg_mid, training)
    if a.adapter_dim and a.adapter_after_ffn:
        rg_mlp = _adapter(count, a, tokens, arch.hidden, rg_mlp)
    return count.forward, count.backward, rg_h or rg_mlp or "mlp_out" in a.norms


def _qkv_requires_grad(arch: Arch, rg: dict) -> tuple[bool, bool, bool]:
    if "q_proj" in rg:
        return rg["q_proj"], rg["k_proj"], rg["v_proj"]
    fused = next(iter(rg.values()))  # qkv_proj / c_attn: one tensor, split afterwards
    return fused, fused, fused


def _moe(count: _Counter, arch: Arch, a: Adaptation, tokens: int, rg_in: bool) -> bool:
    """Mixtral: a router, then each token through ``experts_per_token`` experts (3 matrices each)."""
    count.matmul(2 * tokens * arch.router_params, rg_in, a.full)
    count.forward += 2 * tokens * arch.experts_per_token * arch.expert_params
    count.backward += 2 * tokens * arch.experts_per_token * arch.expert_params * (int(rg_in) + int(a.full))
    return rg_in or a.full


@dataclass(frozen=True)
class FlopReport:
    base_forward_per_token: float
    forward_per_token: float           # the adapted model, unmerged
    train_per_token: float             # forward + backward of the adapted model
    train_per_token_checkpointing: float
    inference_overhead_per_token_unmerged: float
    inference_overhead_per_token_merged: float
    elementwise_overhead_per_token: float  # IA³'s scalings: real work, not matmul FLOPs


def flop_report(arch: Arch, a: Adaptation, seq_len: int, mergeable: bool) -> FlopReport:
    base_fwd, _ = count_flops(arch, type(a)(), seq_len, training=False)  # the same model, nothing adapted
    fwd, bwd = count_flops(arch, a, seq_len)
    inference_fwd, _ = count_flops(arch, a, seq_len, training=False)
    per = float(seq_len)
    overhead = (inference_fwd - base_fwd) / per
    elementwise = arch.layers * sum(
        arch.linear(n).out_features for n in a.ia3_out if n != "lm_head") + arch.layers * sum(
        arch.linear(n).in_features for n in a.ia3_in)
    merged = 0.0 if mergeable else overhead
    if a.pooled_head:
        merged = overhead
    return FlopReport(base_fwd / per, inference_fwd / per, (fwd + bwd) / per, (2 * fwd + bwd) / per,
                      overhead, merged, float(elementwise))
