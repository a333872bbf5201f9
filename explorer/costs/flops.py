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

The products and what feeds them come from the model itself (explorer.costs.derive); MoE layers count
top-k experts per token (the routing assumption stated there). A norm's scale is a parameter feeding the
products that read its output, so a trained norm (LN tuning) makes them, and everything above, pay the
input-gradient products. Tests compare these formulas with
FlopCounterMode on meta-device models, for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .specs import Arch

if TYPE_CHECKING:  # the cost maths reads an Adaptation's fields; it never imports the method registry
    from ..methods.base import Adaptation


class Product(NamedTuple):
    """One matmul (or a fixed group of them) that a tuner adds to a linear layer, as its PEFT layer runs it:
    forward FLOPs, backward FLOPs always paid (its trained operands' gradients, and any recomputation of a
    custom autograd function), backward FLOPs paid only when the layer's input requires grad; per token, or
    once per forward (a weight built from trained factors: LoHa's, LoKr's, OFT's). ``feeds_base``: its output is
    the frozen layer's input (OFT, BOFT and HRA transform the input), so the frozen product pays its input
    gradient whatever the layer's input needed."""

    forward: int
    backward: int = 0
    backward_if_input: int = 0
    per_token: bool = True
    feeds_base: bool = False


class _Counter:
    def __init__(self):
        self.forward = 0
        self.backward = 0

    def matmul(self, flops: int, input_requires_grad: bool, weight_trainable: bool) -> None:
        self.forward += flops
        self.backward += flops * (int(input_requires_grad) + int(weight_trainable))


@dataclass(frozen=True)
class LayerAdaptation:
    """What a method changes in one layer, by the modules' names inside the block (hashable: layers that
    are adapted alike are counted once)."""

    lora: tuple = ()          # (local name, rank)
    vera: tuple = ()          # (local name, rank of VeRA's shared matrices)
    ia3: tuple = ()           # local names scaled by IA³
    trainable: tuple = ()     # local module names whose own weights train (modules_to_save)
    params: tuple = ()        # (local parameter name, rank): LoRA on parameters (target_parameters)
    products: tuple = ()      # (local name, Products): what another PEFT tuner adds to a linear layer


def layer_adaptations(arch: Arch, a: Adaptation) -> list[LayerAdaptation]:
    buckets: dict[int, dict[str, list]] = {}

    locate = arch.locate
    for kind, items in (("lora", a.lora.items()), ("vera", a.vera.items()),
                        ("ia3", ((n, None) for n in a.ia3_out | a.ia3_in)),
                        ("trainable", ((n, None) for n in a.trainable_modules)), ("params", a.lora_params.items()),
                        ("products", a.products.items())):
        for name, rank in items:
            layer, local = locate(name)
            if layer is not None:
                buckets.setdefault(layer, {}).setdefault(kind, []).append(local if rank is None else (local, rank))
    empty = LayerAdaptation()
    made: dict[tuple, LayerAdaptation] = {}
    out = []
    for i in range(arch.layers):
        bucket = buckets.get(i)
        if not bucket:
            out.append(empty)
            continue
        key = tuple((k, tuple(sorted(v))) for k, v in sorted(bucket.items()))
        if key not in made:
            made[key] = LayerAdaptation(**dict(key))
        out.append(made[key])
    return out


def _linear(count: _Counter, a: Adaptation, tokens: int, op, rg_in: bool, weight_trainable: bool, rank: int,
            scaled: bool, training: bool, vera_rank: int = 0, products: tuple = ()) -> bool:
    """Count one (possibly adapted) linear layer; return whether its output requires grad."""
    fan_in, fan_out = op.in_features, op.out_features
    count.matmul(tokens * op.per_token, rg_in or any(p.feeds_base for p in products), weight_trainable)
    if rank:
        count.matmul(2 * tokens * fan_in * rank, rg_in, True)       # lora_A
        count.matmul(2 * tokens * rank * fan_out, True, True)       # lora_B (its input depends on A)
        if a.dora:
            # PEFT builds B·A for DoRA's weight norm by pushing an identity matrix through A and B,
            # once per forward and without backward (the norm is detached, DoRA §4.3) ...
            count.matmul(2 * fan_in * fan_in * rank + 2 * fan_in * rank * fan_out, False, False)
            if training and a.lora_dropout > 0:  # ... and with dropout it re-runs W on the dropped-out input
                count.matmul(tokens * op.per_token, rg_in, False)
    if vera_rank:
        # λ_b ⊙ (B·(λ_d ⊙ (A·x))) (peft.tuners.vera.layer.Linear.forward): A and B are frozen shared buffers,
        # only the vectors train, so neither product has a weight gradient
        count.matmul(2 * tokens * fan_in * vera_rank, rg_in, False)
        count.matmul(2 * tokens * vera_rank * fan_out, True, False)  # its input depends on λ_d
    for product in products:
        times = tokens if product.per_token else 1
        count.forward += product.forward * times
        count.backward += (product.backward + (product.backward_if_input if rg_in else 0)) * times
    return rg_in or weight_trainable or bool(rank) or bool(vera_rank) or scaled or bool(products)


def _adapter(count: _Counter, a: Adaptation, tokens: int, hidden: int, rg_in: bool) -> None:
    count.matmul(2 * tokens * hidden * a.adapter_dim, rg_in, True)  # down
    count.matmul(2 * tokens * a.adapter_dim * hidden, True, True)   # up


def count_flops(arch: Arch, a: Adaptation, seq_len: int, batch: int = 1, training: bool = True,
                per_layer: list[LayerAdaptation] | None = None) -> tuple[int, int]:
    """(forward, backward) FLOPs of one pass over ``batch`` sequences of ``seq_len`` user tokens.

    ``training``: the model is in training mode (dropout active), which changes DoRA's cost.
    ``per_layer``: ``layer_adaptations(arch, a)`` when the caller has it already."""
    s = seq_len + a.prompt_tokens              # prompt tuning lengthens every sequence
    keys = s + a.prefix_tokens                 # prefix tuning lengthens only the keys/values
    tokens = batch * s
    count = _Counter()
    if a.prefix_mlp_hidden:  # the reparameterization MLP runs once per forward
        n, t, e = a.prefix_tokens, a.prefix_token_dim, a.prefix_mlp_hidden
        count.matmul(2 * n * t * e, True, True)
        count.matmul(2 * n * e * a.prefix_layers * 2 * t, True, True)
    for product in a.prompt_encoder:  # p-tuning's encoder runs on each sequence's copy of the virtual tokens
        count.forward += product.forward * batch
        count.backward += product.backward * batch
    for side_arch, side in a.side_models:  # a network beside the model on the same tokens (ShadowPEFT's backbone)
        forward, backward = count_flops(side_arch, side, seq_len, batch, training)
        count.forward += forward
        count.backward += backward
    embed_rank = a.lora.get(arch.embed, 0)
    if embed_rank:  # LoRA on the embeddings: a lookup in A, then its rows times B
        count.matmul(2 * tokens * embed_rank * arch.hidden, True, True)
    rg = a.full or a.prompt_tokens > 0 or bool(embed_rank) or arch.embed in a.trainable_modules
    # Layers cost the same given their kind, their adaptation and whether their input requires grad, so
    # a 126-layer model counts as few distinct layers as it has kinds.
    memo: dict[tuple, tuple[int, int, bool]] = {}
    for layer, adapted in enumerate(per_layer if per_layer is not None else layer_adaptations(arch, a)):
        key = (arch.layer_kind[layer], adapted, rg)
        if key not in memo:
            memo[key] = _count_block(arch.block(layer), arch, a, adapted, batch, s, keys, tokens, rg, training)
        forward, backward, rg = memo[key]
        count.forward += forward
        count.backward += backward
    # A trained module outside the blocks that is neither an embedding nor the head sits between the last block
    # and the head (the final norm, which LN tuning or modules_to_save trains): the head's input requires grad.
    modules = arch.by_name
    rg = rg or any(arch.layer_of(n) is None and n != arch.head and modules[n].kind != "embedding"
                   and arch.params_under(n) for n in a.trainable_modules)
    if a.pooled_head:  # mean-pooled hidden state -> linear (classes or embedding width), once per sequence
        count.matmul(2 * batch * arch.hidden * a.num_classes, False, True)
    elif arch.head:
        head_trainable = a.full or a.head == "lm" or arch.head in a.trainable_modules
        count.matmul(tokens * arch.head_flops_per_token, rg, head_trainable)
        r = a.lora.get(arch.head, 0)
        if r:
            count.matmul(2 * tokens * arch.hidden * r, rg, True)
            count.matmul(2 * tokens * r * arch.vocab, True, True)
    return count.forward, count.backward


def _count_block(block, arch: Arch, a: Adaptation, adapted: LayerAdaptation, batch: int, s: int, keys: int,
                 tokens: int, rg_in: bool, training: bool) -> tuple[int, int, bool]:
    """(forward, backward, output requires grad) of one decoder block, walking its products in order: an
    operand requires grad when anything that feeds it does (autograd's rule)."""
    count = _Counter()
    rg = {"input": rg_in}
    lora, vera, ia3 = dict(adapted.lora), dict(adapted.vera), set(adapted.ia3)
    trainable, lora_params, products = adapted.trainable, dict(adapted.params), dict(adapted.products)

    def param_trainable(local: str) -> bool:
        module = local.rpartition(".")[0]
        return a.full or local in lora_params or any(module == m or module.startswith(m + ".") for m in trainable)

    def requires_grad(sources) -> bool:
        return any(rg[x] if x in rg else x.startswith("param:") and param_trainable(x[6:]) for x in sources)

    last_op = block.last_op
    shapes = {name: shape for name, _, shape in block.params}
    for name, rank in adapted.params:
        # LoRA on a parameter (PEFT's ParamWrapper): W + B·A folded in once per forward, one baddbmm per
        # expert stack (peft.tuners.lora.layer._LoraFactorsProxy), both factors trained. Read from PEFT's
        # code, not checked against torch's counter: that path does not run on meta tensors (its autocast
        # guard rejects the meta device).
        experts, rows, cols = shapes[name] if len(shapes[name]) == 3 else (1, *shapes[name])
        count.matmul(2 * experts * rows * rank * cols, True, True)
    adapters = {block.attention: a.adapter_dim and a.adapter_after_attention,
                block.ffn: a.adapter_dim and a.adapter_after_ffn}
    for index, op in enumerate(block.ops):
        rg_a, rg_b = requires_grad(op.a), requires_grad(op.b)
        if op.per_key and a.prefix_tokens:
            rg_b = True  # the keys and values of prefix tuning are trainable
        if op.linear:
            module = op.module
            weight_trainable = rg_b or any(module == m or module.startswith(m + ".") for m in trainable)
            rg[op.name] = _linear(count, a, tokens, op, rg_a, weight_trainable, lora.get(op.name, 0),
                                  op.name in ia3, training, vera.get(op.name, 0), products.get(op.name, ()))
        else:
            flops = tokens * op.per_token + batch * s * keys * op.per_key
            count.forward += flops
            count.backward += flops * (int(rg_a) + int(rg_b))
            rg[op.name] = rg_a or rg_b
        for child, sources in block.children:
            if last_op.get(child) == index and adapters.get(child):
                _adapter(count, a, tokens, arch.hidden, requires_grad(sources))
                for source in sources:  # what reads the child's output now reads the (trainable) adapter's
                    rg[source] = True
    return count.forward, count.backward, requires_grad(block.output)


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
    per_layer = layer_adaptations(arch, a)
    fwd, bwd = count_flops(arch, a, seq_len, per_layer=per_layer)
    inference_fwd, _ = count_flops(arch, a, seq_len, training=False, per_layer=per_layer)
    per = float(seq_len)
    overhead = (inference_fwd - base_fwd) / per
    modules = arch.by_name
    elementwise = (sum(modules[n].out_features for n in a.ia3_out if n != arch.head)
                   + sum(modules[n].in_features for n in a.ia3_in))
    merged = 0.0 if mergeable else overhead
    if a.pooled_head:
        merged = overhead
    return FlopReport(base_fwd / per, inference_fwd / per, (fwd + bwd) / per, (2 * fwd + bwd) / per,
                      overhead, merged, float(elementwise))
