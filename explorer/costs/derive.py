"""The per-block table of any decoder model, read from the model itself rather than written per family.

transformers builds the model from its config on the meta device (shapes, no memory). Then:

1. Walking the modules gives every module's name, class, parameters, in/out features and bias: the names
   PEFT matches ``target_modules`` against, and what each method wraps.
2. One forward pass on meta tensors, under a ``TorchFunctionMode`` that records every matrix product
   (``F.linear``, ``matmul``/``@``, ``bmm``, ``addmm`` ...) and the module it ran in, gives each block's
   products in order. Walking autograd's graph back from each product's operands to the nearest recorded
   product (or the block's input, or a parameter) says what feeds it: the dependency graph that decides
   which backward products autograd runs (explorer.costs.flops). Passes at two sequence lengths split
   each product's FLOPs into a part per token and a part per token and key (attention's Q·Kᵀ and P·V);
   a third checks the split (explorer.costs.trace records the passes).
3. The layers are grouped into kinds with identical tables (a dense first layer, MoE layers ...).

MoE experts run through transformers' ``batched_mm`` experts implementation in the pass: every token goes
through exactly ``top-k`` experts (gathered weights, no data-dependent routing), which is the routing
assumption of every FLOP figure: top-k routing without dropped tokens, whatever the router picks, costs
the same since every expert has the same shapes.

Derived once per config (cached); ~0.1 s for small models, a few seconds for a 400B one.
"""

from __future__ import annotations

import threading
from collections import Counter

from .arch import Arch, Block, Module, Op
from .trace import Trace, TraceError

S1, S2, S3 = 3, 5, 7               # the sequence lengths of the tracing passes (S3 checks the fit)
ATTENTION_CHILDREN = ("self_attn", "attn")           # where Houlsby adapters go (explorer.methods.own_modules)
FFN_CHILDREN = ("block_sparse_moe", "mlp")
_lock = threading.Lock()


def module_kind(module) -> str:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, Conv1D):
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return "other"


def _features(module, kind: str) -> tuple[int, int, bool]:
    if kind == "linear":
        return module.in_features, module.out_features, module.bias is not None
    if kind == "conv1d":  # GPT-2's Conv1D stores W as (in, out)
        return module.weight.shape[0], module.weight.shape[1], module.bias is not None
    if kind == "embedding":
        return module.num_embeddings, module.embedding_dim, False
    return 0, 0, False


def find_layers(model) -> str:
    """The decoder blocks: the nn.ModuleList holding the most parameters."""
    from torch import nn

    best, best_size = "", -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module):
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = name, size
    return best


def _locals(sources, prefix: str, layer: int, op_names: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted({_local(s, prefix, layer, op_names) for s in sources}))


def _local(source: str, prefix: str, layer: int, op_names: dict[str, str]) -> str:
    kind, _, rest = source.partition(":")
    if kind == "input":
        return "input" if int(rest) == layer else "external"
    if kind == "param":
        return f"param:{rest[len(prefix):]}" if rest.startswith(prefix) else f"param:{rest}"
    return op_names.get(source, "external")


def _fits(at_s1: int, at_s2: int, at_s3: int) -> bool:
    per_key, per_token = _split(at_s1, at_s2)
    return per_key >= 0 and per_token * S3 + per_key * S3 * S3 == at_s3


def _split(at_s1: int, at_s2: int) -> tuple[int, int]:
    """(β, α) of f(s) = α·s + β·s² from its values at S1 and S2: per token·key, and per token."""
    per_key = (at_s2 * S1 - at_s1 * S2) // (S1 * S2 * (S2 - S1))
    return per_key, at_s1 // S1 - per_key * S1


def derive(config) -> Arch:
    """The Arch of the model transformers builds from ``config`` (a PretrainedConfig)."""
    import copy
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    config._attn_implementation = "eager"       # attention as explicit products the trace can see
    if hasattr(config, "_experts_implementation"):
        config._experts_implementation = "batched_mm"
    config.use_cache = True
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        model.eval()
        layers_path = find_layers(model)
        n_layers = len(model.get_submodule(layers_path))
        layer_names = [f"{layers_path}.{i}" for i in range(n_layers)]
        representative = _representatives(model, layer_names, config)
        first_error = None
        # Some models cannot take an attention mask on meta tensors (they read its values), some hybrid
        # (attention + state-space) caches cannot be filled without a real generation step: try without.
        for mask, cache in ((True, True), (False, True), (True, False), (False, False)):
            try:
                traces, out = [], None
                for seq_len in (S1, S2, S3):
                    trace = Trace(model, layer_names, representative)
                    out = trace.run(seq_len, mask, cache)
                    traces.append(trace)
                break
            except Exception as error:  # noqa: BLE001 - the next way of running it, else the first reason
                first_error = first_error or error
        else:
            raise TraceError(f"{type(first_error).__name__}: {first_error}") from first_error
        kv_cache = getattr(out, "past_key_values", None) if cache else None
    return _assemble(model, config, layers_path, layer_names, representative, traces, kv_cache)


def _representatives(model, layer_names: list[str], config) -> list[int]:
    """Per layer, the first layer with the same modules, parameter shapes and attention type."""
    layer_types = getattr(config, "layer_types", None) or []
    first: dict[tuple, int] = {}
    out = []
    for i, name in enumerate(layer_names):
        layer = model.get_submodule(name)
        signature = (tuple((n, type(m).__name__) for n, m in layer.named_modules()),
                     tuple((n, tuple(p.shape)) for n, p in layer.named_parameters()),
                     layer_types[i] if i < len(layer_types) else None)
        out.append(first.setdefault(signature, i))
    return out


def _assemble(model, config, layers_path, layer_names, representative, traces, cache) -> Arch:
    first, second, third = traces
    if not [op["module"] for op in first.ops] == [op["module"] for op in second.ops] == [op["module"] for op in third.ops]:
        raise TraceError("it runs different products at different sequence lengths (a chunked scan?), which the "
                         "formulas cannot express")
    # Every product's FLOPs must be a·s + b·s² (linear layers; attention's QKᵀ and PV): checked at a third length.
    scaling_exact = all(_fits(op1["flops"], op2["flops"], op3["flops"])
                        for op1, op2, op3 in zip(first.ops, second.ops, third.ops))
    modules, kinds_of = [], {}
    for name, module in model.named_modules():
        kind = module_kind(module)
        own = sum(p.numel() for p in module.parameters(recurse=False))
        fin, fout, bias = _features(module, kind)
        modules.append(Module(name, type(module).__name__, kind, own, fin, fout, bias))
        kinds_of[name] = kind
    head = model.get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head), "") if head is not None else ""
    embed = model.get_input_embeddings()
    embed_name = next((n for n, m in model.named_modules() if m is embed), "")
    tied = head is not None and head.weight is embed.weight

    # Each op: which layer it belongs to, its local name, its FLOPs split per token and per token·key.
    per_layer_ops: list[list] = [[] for _ in layer_names]
    outside_ops = []
    op_names: list[dict[str, str]] = [{} for _ in layer_names]
    calls: list[Counter] = [Counter() for _ in layer_names]
    for index, (op1, op2) in enumerate(zip(first.ops, second.ops)):
        per_key, per_token = _split(op1["flops"], op2["flops"])
        layer = next((i for i, n in enumerate(layer_names) if op1["module"] == n or op1["module"].startswith(n + ".")), None)
        entry = (index, op1, per_token, per_key)
        if layer is None:
            outside_ops.append(entry)
            continue
        prefix = layer_names[layer] + "."
        rel = op1["module"][len(prefix):] if op1["module"].startswith(prefix) else ""
        linear = kinds_of.get(op1["module"]) in ("linear", "conv1d")
        calls[layer][rel] += 1
        local = rel if linear and calls[layer][rel] == 1 else f"{rel}#{calls[layer][rel] - 1}"
        op_names[layer][f"op:{index}"] = local
        per_layer_ops[layer].append((local, rel, linear, entry))

    module_of = {m.name: m for m in modules}
    blocks, layer_kind, signatures = [], [], {}
    for layer, name in enumerate(layer_names):
        if representative[layer] != layer:
            layer_kind.append(layer_kind[representative[layer]])
            continue
        prefix = name + "."
        ops = []
        for local, rel, linear, (index, op1, per_token, per_key) in per_layer_ops[layer]:
            mod = module_of.get(op1["module"])
            fin, fout, bias = (mod.in_features, mod.out_features, mod.bias) if linear else (0, 0, False)
            out_key, out_token = _split(op1["out"], second.ops[index]["out"])
            ops.append(Op(local, rel, linear, fin, fout, bias, per_token, per_key, out_token, out_key,
                          _locals(op1["a"], prefix, layer, op_names[layer]),
                          _locals(op1["b"], prefix, layer, op_names[layer])))
        children = {child[len(prefix):]: _locals(sources, prefix, layer, op_names[layer])
                    for child, sources in first.outputs.items() if child.startswith(prefix)}
        params = tuple((n[len(prefix):], p.numel(), tuple(p.shape))
                       for n, p in model.get_submodule(name).named_parameters(prefix=name))
        local_modules = tuple(Module(m.name[len(prefix):], m.cls, m.kind, m.own_params, m.in_features,
                                     m.out_features, m.bias) for m in modules if m.name.startswith(prefix))
        block = Block(ops=tuple(ops), output=_locals(first.outputs.get(name, ()), prefix, layer, op_names[layer]),
            children=tuple(sorted(children.items())), params=params, modules=local_modules,
            attention=next((c for c in ATTENTION_CHILDREN if c in dict(children)), ""),
            ffn=next((c for c in FFN_CHILDREN if c in dict(children)), ""))
        key = block
        if key not in signatures:
            signatures[key] = len(blocks)
            blocks.append(block)
        layer_kind.append(signatures[key])

    windows, kv = _cache_shapes(cache, len(layer_names), config)
    kv = tuple(kv[representative[i]] for i in range(len(layer_names)))
    head_op = next(((op1, pt) for _, op1, pt, _ in outside_ops if op1["module"] == head_name), None)
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return Arch(
        model_type=config.model_type, layers_path=layers_path, blocks=tuple(blocks), layer_kind=tuple(layer_kind),
        modules=tuple(modules),
        embed=embed_name, head=head_name, tied=tied, hidden=int(embed.embedding_dim), vocab=int(embed.num_embeddings),
        head_flops_per_token=head_op[1] if head_op else 0, total=total, windows=windows, kv_per_token=kv,
        flops_exact=scaling_exact)


def _cache_shapes(cache, n_layers: int, config) -> tuple[tuple, tuple]:
    """Per layer: the sliding window of its KV cache (None: keeps every token) and the cached key and value
    elements per token, from the cache transformers filled during the pass."""
    windows, kv = [], []
    layers = getattr(cache, "layers", None) or []
    for i in range(n_layers):
        layer = layers[i] if i < len(layers) else None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        window = getattr(layer, "sliding_window", None)
        windows.append(int(window) if isinstance(window, int) else None)
        per_token = 0
        for tensor in (keys, values):
            if tensor is not None and hasattr(tensor, "shape") and tensor.dim() == 4:
                per_token += tensor.numel() // tensor.shape[-2]
        kv.append(per_token)
    return tuple(windows), tuple(kv)
