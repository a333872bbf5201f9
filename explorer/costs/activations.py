"""Activations: what autograd keeps for backward in one training forward, per token and per forward.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", §4.1) count the tensors
autograd saves per layer; this counts them for this block's shapes and for what trains, as measured with
torch.autograd.graph.saved_tensors_hooks (tests/test_memory_saved.py: every saved tensor of a two-block SmolLM2, per
method, still held at the forward's end):
- per block (block_stages): each norm's input and its per-token statistics (float32 in transformers' RMSNorms,
  whatever the model's width); attention as transformers runs it by default without a padding mask
  (scaled_dot_product_attention with grouped keys/values as they are: queries, keys, values, the output, a float32
  log-sum-exp per head); the MLP's hidden activations (the activation's input, and for a gated MLP the
  activation's output and the up projection's output: 3·I, or I for a GELU MLP); MoE: the top-k experts' hidden
  units and the router's logits;
- the input of each linear layer whose weight trains (a frozen layer's backward needs only its weight, so a frozen
  base keeps none), each distinct input once, the attention's output (o_proj's input) being the attention's own;
  PEFT's LoRA layers cast their input to their float32 first, so on a 16-bit model each keeps its own copy;
- nothing in the blocks below the first one that trains, nor in the first one's stages before the first thing
  that trains in it (first_trained);
- the final norm, fp32 logits and their gradient (2·vocab·4 bytes per token) and the int64 labels;
- LoRA with dropout: a dropped-out copy of each adapted layer's input and its mask (one dropout per layer), where
  the input needs a gradient: a one-byte mask on CUDA (torch's fused dropout); on CPU torch multiplies by a noise
  tensor of the input's dtype (at::native dropout's unfused path), counted apart (cpu_dropout_mask_bytes);
- a mask, passed for a padded batch (TrainSettings.padded, as the app's training pads) or prefix tuning's virtual
  keys: attention keeps it and the keys and values repeated to the queries' heads (masked_attention_bytes).
A method's own tensors beyond these are its Adaptation's saved_per_token and saved_per_step (explorer.methods.base).
With gradient checkpointing only each layer's input (h) is kept, and one layer's activations are rebuilt at a time.
Not counted: the rotary cos/sin (2·head_dim per position, once per forward: under 0.2% on SmolLM2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .specs import Arch

if TYPE_CHECKING:  # read field by field; the cost maths never imports the method registry
    from ..methods.base import Adaptation
    from .memory import TrainSettings


# The stages of a block's forward, in the order it runs them: what feeds the attention (its input norm), the
# attention, what feeds the MLP (its norms), the MLP. In the first block that trains, the stages before the first
# thing that trains see no tensor that needs a gradient: autograd keeps nothing there.
STAGES = ("attention_norm", "attention", "mlp_norm", "mlp")
# The stage a trained op starts, by its role in the block (explorer.costs.arch.Block.roles): a trained q/k/v makes
# the attention keep its operands; a trained o_proj makes its output, and so the MLP's norm input, need a gradient.
ROLE_STAGE = {"attn_in": 1, "attn_core_product": 1, "attn_core": 2, "mlp_in": 3, "router": 3, "experts": 3,
              "mlp_mid": 4}


def norm_stats(cls: str) -> int:
    """Per-token statistics a norm keeps beside its input: RMSNorm its 1/rms (transformers' LlamaRMSNorm.forward,
    ``hidden_states * torch.rsqrt(variance + eps)``), LayerNorm its mean and 1/std (torch's native_layer_norm)."""
    return 1 if "RMS" in cls else 2


def norm_elements(cls: str, h: int, trained: bool, act: int) -> int:
    """Elements (at the activations' width ``act``) one norm keeps per token: its input and statistics, and its
    normalized input where its weight trains. transformers' RMSNorms compute in float32
    (``hidden_states.to(torch.float32)``), so a 16-bit model's RMSNorm keeps its input and 1/rms at 4 bytes; torch's
    LayerNorm keeps its input at the model's width and its statistics in float32. The normalized input the weight's
    gradient reads is cast back to the model's width first."""
    wide = 4 // act  # float32 elements, counted in elements of the activations' width
    kept = (h + norm_stats(cls)) * wide if "RMS" in cls else h + norm_stats(cls) * wide
    return kept + (h if trained else 0)


def block_norms(block) -> dict[str, list]:
    """The block's hidden-width norms (norms inside the attention, such as Qwen3's per-head q_norm, left out), by the
    stage whose input they make: the norm whose weight the attention's input projections read, the norm(s) the
    MLP's read, and the others (applied to an output, as OLMo-2's and Gemma-2's post norms), with the MLP's."""
    attention = next((op.module for op in block.ops if op.per_key), "")
    reads = {role: {x[6:].rsplit(".", 1)[0] for op in block.ops if block.roles[op.name] == role for x in op.a
                    if x.startswith("param:")} for role in ("attn_in", "mlp_in", "router")}
    out = {"attention_norm": [], "mlp_norm": []}
    for m in block.modules:
        if "Norm" not in m.cls or (attention and m.name.startswith(attention + ".")):
            continue
        out["attention_norm" if m.name in reads["attn_in"] else "mlp_norm"].append(m)
    return out


def attention_widths(arch: Arch, kind: int) -> tuple[int, int, int]:
    """(the queries' and the output's width: heads × head_dim, the keys' and values' width together as cached,
    the heads) of a block kind's attention; zeros without one."""
    block = arch.blocks[kind]
    core = [op for op in block.ops if op.per_key]
    if not core:
        return 0, 0, 0
    width = sum(op.out_per_token for op in core)            # P·V's output: heads × head_dim, as the queries
    heads = max((op.out_per_key for op in core), default=0)  # Q·Kᵀ's output per key: one score per head
    layer = arch.layer_kind.index(kind)
    kv = arch.kv_per_token[layer] if len(arch.kv_per_token) > layer else 2 * width
    return width, kv, heads


def masked_attention_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    """What a mask changes in what autograd keeps, per forward. A padded batch (TrainSettings.padded), or prefix
    tuning's virtual keys and values, whose queries no longer line up with the keys, make transformers pass
    scaled_dot_product_attention a mask (at the activations'
    dtype, batch × queries × keys, one per layer) and repeats grouped keys and values to the queries' heads
    (integrations/sdpa_attention.py: use_gqa_in_sdpa needs no mask), over every key: 2 × width × keys per sequence
    instead of the KV width per token; plus the virtual tokens' int64 indices that PEFT's prompt encoder embeds
    (peft.tuners.prefix_tuning.model.PrefixEncoder), and with its reparameterization MLP the MLP's input and its
    tanh's output (token_dim + hidden per virtual token and sequence)."""
    padded = s.padded and s.batch_size > 1  # a batch of one has nothing to pad: transformers passes no mask then
    if not a.prefix_tokens and not padded:
        return 0.0
    act = activation_width(s)
    seq = s.seq_len + a.prompt_tokens
    keys = seq + a.prefix_tokens
    total = 0
    # Padding alone: the blocks that keep anything (from the first that trains); virtual keys: prefix_layers.
    kinds = arch.layer_kind[:a.prefix_layers or arch.layers] if a.prefix_tokens else arch.layer_kind[
        first_trained_layer(arch, a):]
    for kind in kinds:
        width, kv, _ = attention_widths(arch, kind)
        total += s.batch_size * (keys * 2 * width + seq * keys - seq * kv)
    if a.prefix_mlp_hidden:
        total += s.batch_size * a.prefix_tokens * (a.prefix_token_dim + a.prefix_mlp_hidden)
    return total * act + s.batch_size * a.prefix_tokens * 8


def block_stages(arch: Arch, kind: int, trains_weights: bool = False, act: int = 4) -> dict[str, int]:
    """Elements autograd keeps per token in one block of this kind, by stage (STAGES), as transformers runs it
    without a padding mask (the module docstring's count):
    - each norm's input and its statistics (norm_stats; with a trained weight also its normalized input, which
      activation_bytes counts with the method's trained modules);
    - scaled_dot_product_attention's queries, keys and values, its output and one float32 log-sum-exp per head (torch's
      _scaled_dot_product_flash_attention_for_cpu / efficient attention keep these five). Without a mask,
      transformers passes grouped keys and values as they are (enable_gqa, integrations/sdpa_attention.py
      use_gqa_in_sdpa), so they take the KV cache's width (arch.kv_per_token), not the queries';
    - the MLP's hidden activations (the activation's input, and for a gated MLP the activation's output and the up
      projection's output: 3·I, or I for a GELU MLP), the experts' and router's;
    - with ``trains_weights`` (full fine-tuning) the input of every linear layer, each distinct input once (q, k
      and v read one), counted with the MLP."""
    block = arch.blocks[kind]
    roles = block.roles
    h = arch.hidden
    # A norm whose weight trains also keeps its normalized input, for the weight's gradient.
    norms = {stage: sum(norm_elements(m.cls, h, trains_weights, act) for m in found)
             for stage, found in block_norms(block).items()}
    width, kv, heads = attention_widths(arch, kind)
    attention = 2 * width + kv + heads * (4 // act)
    for m in attention_norms(block):  # Qwen3's, OLMo-2's, Gemma-3's q_norm and k_norm, in float32 as the others
        normalized = kv // 2 if "k_norm" in m.name else width
        attention += (normalized + normalized // max(m.own_params, 1)) * (4 // act) + normalized * trains_weights
    experts = {op.name for op in block.ops if roles[op.name] == "experts"}
    mlp_in = [op for op in block.ops if roles[op.name] == "mlp_in"]
    hidden_units = max((op.out_features for op in mlp_in), default=0)
    mid = max((op.in_features for op in block.ops if roles[op.name] == "mlp_mid"), default=hidden_units)
    # The activation keeps its input; a gated MLP's product keeps both operands (the activation's output and up's).
    # A fused gate_up projection (Phi-3) is gated too: its 2·I output is kept whole (gate is a view of it), and the
    # activation's output beside it.
    gated = len(mlp_in) > 1 or hidden_units == 2 * mid
    mlp = (3 * mid if gated else hidden_units) if mlp_in else 0
    first_stage = sum(op.out_per_token for op in block.ops if op.name in experts and not set(op.a + op.b) & experts)
    router = sum(op.out_per_token for op in block.ops if roles[op.name] == "router")
    inputs = 0
    if trains_weights:
        distinct = {op.a: op.in_features for op in block.ops if op.linear and not reads_attention_output(block, op)}
        inputs = sum(distinct.values())
    return {"attention_norm": norms["attention_norm"], "attention": attention, "mlp_norm": norms["mlp_norm"],
            "mlp": mlp + 2 * first_stage + router + inputs}


def reads_attention_output(block, op) -> bool:
    """A linear whose input is the attention's output (o_proj) where that tensor is already kept, as the output
    scaled_dot_product_attention saves: sdpa lays its output out as its queries are, and queries made by their own
    projection are a transposed view of (batch, tokens, heads, head_dim), which rotary embeddings and per-head
    norms keep, so transformers' ``.transpose(1, 2).contiguous()`` is a view of that same storage. Queries sliced
    from a fused projection (Phi-3's qkv_proj, GPT-2's c_attn) are not: there o_proj's input is a copy of its own."""
    if not op.a or not all(block.roles.get(source) == "attn_core_product" for source in op.a):
        return False
    scores = next((core for core in block.ops if core.per_key), None)
    queries = {source for source in scores.a if not source.startswith("param:")}
    keys = {source for source in scores.b if not source.startswith("param:")}
    return bool(queries) and not queries & keys


def attention_norms(block) -> list:
    """The norms inside the attention (per-head or full-width q_norm and k_norm)."""
    attention = next((op.module for op in block.ops if op.per_key), "")
    return [m for m in block.modules if "Norm" in m.cls and attention and m.name.startswith(attention + ".")]


def block_activations_per_token(arch: Arch, kind: int, trains_weights: bool = False, from_stage: int = 0,
                                act: int = 4) -> int:
    """Elements autograd keeps per token in one block of this kind (block_stages), from the stage ``from_stage`` on
    (the first block that trains keeps nothing before the first thing that trains in it)."""
    stages = block_stages(arch, kind, trains_weights, act)
    return sum(stages[stage] for stage in STAGES[from_stage:])


def final_norm_per_token(arch: Arch, trained: bool = False, act: int = 4) -> int:
    """The final norm (outside the blocks, before the LM head): its input and statistics, and its normalized input
    when its weight trains (norm_elements)."""
    return sum(norm_elements(m.cls, arch.hidden, trained, act) for m in arch.modules
               if "Norm" in m.cls and arch.layer_of(m.name) is None and m.own_params)


def activation_width(s: TrainSettings) -> int:
    """Bytes of an activation: 4 in float32, 2 in bf16/fp16, under mixed precision and for an int8 base (which
    computes in bf16)."""
    return 4 if s.precision == "fp32" and s.mixed_precision == "none" else 2


def activation_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    act = activation_width(s)
    seq = s.seq_len + a.prompt_tokens
    tokens = s.batch_size * seq
    # fp32 logits and their gradient, and the int64 labels cross-entropy keeps for its backward (nll_loss's target).
    logits = tokens * (arch.vocab * 4 * 2 + 8)
    if a.head:  # frozen backbone runs without autograd: only the head's input and output are kept
        head = s.batch_size * arch.hidden * act if a.pooled_head else logits
        return tokens * arch.hidden * act + head
    first, stage = first_trained(arch, a)
    per_kind = {kind: block_activations_per_token(arch, kind, a.full, act=act) for kind in set(arch.layer_kind)}
    # Blocks below the first one that trains see no tensor that needs a gradient: autograd keeps nothing there, nor
    # in the first one's stages before the first thing that trains in it.
    layers_total = sum(per_kind[kind] for kind in arch.layer_kind[first + 1:])
    if first < arch.layers:
        layers_total += block_activations_per_token(arch, arch.layer_kind[first], a.full, stage, act)
        layers_total += final_norm_per_token(arch, a.full, act)
    if a.full or arch.head in a.trainable_modules:  # the LM head's weight gradient needs its input
        layers_total += arch.hidden
    if a.full or arch.embed in a.trainable_modules:  # the embedding's backward reads the int64 token ids
        logits += tokens * 8
    extra = 0
    modules = arch.by_name
    unmasked = inputs_without_gradient(arch, a)
    # PEFT's LoRA layers run in float32 (autocast_adapter_dtype) and cast their input to it first
    # (LoraLayer._cast_input_dtype): on a 16-bit model each adapted layer keeps its own float32 copy of its input.
    wide = 4 // act
    for name, rank in a.lora.items():
        if arch.layer_of(name) is None:
            continue
        extra += rank * wide                                            # LoRA: A's output per adapted layer
        if a.lora_dropout > 0:  # (the mask at one byte, as on CUDA; CPU's wider mask: cpu_dropout_mask_bytes)
            # Each adapted layer has its own dropout: a dropped-out copy of its input (kept for A's weight
            # gradient) and a one-byte mask, unless its input needs no gradient (dropout's backward then never
            # runs). (DoRA's own tensors: its saved_per_token and saved_per_step.)
            extra += modules[name].in_features * (wide + (name not in unmasked) / act)
        elif wide > 1:  # without dropout A keeps its float32 copy of the input, one per layer
            extra += modules[name].in_features * wide
    # IA³ scales a layer's output (k, v) or its input (down): the scale's gradient needs the unscaled tensor.
    extra += sum(modules[n].out_features for n in a.ia3_out if n in modules and arch.layer_of(n) is not None)
    extra += sum(modules[n].in_features for n in a.ia3_in if n in modules and arch.layer_of(n) is not None)
    # Other tuners' products (LoHa, LoKr, OFT, ...) build or apply a trained change to the layer's input, and
    # trained copies of linears (modules_to_save) train on it: its gradient needs that input, which the frozen
    # base layer alone would not keep. LoRA without dropout keeps it for A's gradient. Layers that read one
    # tensor (q, k and v; gate and up) keep it once.
    copies = [n for n in a.trainable_modules if n in modules and modules[n].kind in ("linear", "conv1d")]
    undropped = [n for n in a.lora if a.lora_dropout <= 0 and wide == 1]
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
    prefix = masked_attention_bytes(arch, a, s) + s.batch_size * a.saved_per_sequence * act
    if s.gradient_checkpointing:  # one layer's activations (and its share of the per-step tensors) at a time
        one_layer = max(per_kind.values()) + extra / arch.layers
        return (tokens * (arch.layers * arch.hidden + one_layer) * act + a.saved_per_step / arch.layers * act + logits
                + prefix / arch.layers)
    return tokens * (layers_total + extra) * act + a.saved_per_step * act + logits + prefix


def distinct_inputs(arch: Arch, names) -> int:
    """Elements per token of the distinct inputs of these block linears: layers that read one tensor (the same
    operand sources in the block's table: q, k and v; gate and up) share it, and the attention's output is kept
    by the attention already (reads_attention_output)."""
    seen = {}
    for name in set(names):
        layer, local = arch.locate(name)
        if layer is None or name not in arch.by_name:
            continue
        block = arch.blocks[arch.layer_kind[layer]]
        op = next((op for op in block.ops if op.name == local), None)
        if op is not None and reads_attention_output(block, op):
            continue
        key = (layer, op.a) if op is not None else (layer, local)
        seen[key] = arch.by_name[name].in_features
    return sum(seen.values())


def first_trained_layer(arch: Arch, a: Adaptation) -> int:
    """The first block whose forward involves something that trains (first_trained)."""
    return first_trained(arch, a)[0]


def first_trained(arch: Arch, a: Adaptation) -> tuple[int, int]:
    """(the first block whose forward involves something that trains, the first of its STAGES that keeps anything):
    (0, 0) when the embeddings or the input train (the first block's input needs a gradient), or nothing is known;
    (layers, 0) when nothing in the blocks trains. The blocks below it run as in inference."""
    if a.full or a.prompt_tokens:
        return 0, 0
    if a.prefix_tokens:  # every attention's keys and values get trained virtual tokens
        return 0, ROLE_STAGE["attn_in"]
    if a.adapter_dim:  # a bottleneck after the attention's output (stage 2), or after the MLP's only
        return 0, 2 if a.adapter_after_attention else len(STAGES)
    names = [*a.lora, *a.products, *a.trainable_modules, *a.ia3_out, *a.ia3_in, *a.vera,
             *(name.rsplit(".", 1)[0] for name in a.lora_params)]
    located = [arch.locate(name) for name in names]
    below = [layer for (layer, _), name in zip(located, names) if layer is None and name != arch.head]
    if below or not names:  # the embeddings train (they come first), or nothing is known: count every block
        return 0, 0
    inside = [(layer, local) for layer, local in located if layer is not None]
    if not inside:
        return arch.layers, 0
    first = min(layer for layer, _ in inside)
    block = arch.blocks[arch.layer_kind[first]]
    norms = {m.name: stage for stage, found in block_norms(block).items() for m in found}
    stages = [ROLE_STAGE.get(block.roles.get(local), 0) if local not in norms
              else STAGES.index(norms[local]) + 1 for layer, local in inside if layer == first]
    return first, min(stages)


def inputs_without_gradient(arch: Arch, a: Adaptation) -> set:
    """The adapted block linears whose input needs no gradient: in the first block that trains, those of the first
    stage that trains when that block's input needs none (LoRA on q, k and v of the first adapted block reads the
    frozen norm's output), where a dropout keeps no mask."""
    first, stage = first_trained(arch, a)
    if stage == 0 or first >= arch.layers:
        return set()
    roles = arch.blocks[arch.layer_kind[first]].roles
    return {name for name in [*a.lora, *a.products] if arch.locate(name)[0] == first
            and ROLE_STAGE.get(roles.get(arch.locate(name)[1])) == stage}


def cpu_dropout_mask_bytes(arch: Arch, a: Adaptation, s: TrainSettings) -> float:
    """What LoRA's dropout masks take on CPU beyond the one byte per element counted in the activations: torch's
    unfused dropout (every device but CUDA) keeps a noise tensor of the input's dtype as its mask, and PEFT casts
    that input to the adapter's float32 first (activation_bytes)."""
    if a.lora_dropout <= 0:
        return 0.0
    act = 4
    unmasked = inputs_without_gradient(arch, a)
    inputs = sum(arch.by_name[name].in_features for name in a.lora
                 if arch.layer_of(name) is not None and name not in unmasked)
    if s.gradient_checkpointing:  # one layer's activations at a time
        inputs /= arch.layers
    return s.batch_size * (s.seq_len + a.prompt_tokens) * inputs * (act - 1)
