"""What autograd keeps of a tuner's per-forward weights: the shared rule of explorer.methods' saved_per_step terms.

A tuner that builds a weight-sized tensor in its forward (SHiRA's W + ΔW, OSF's stacked factors, RandLoRA's scaled
basis) and multiplies the layer's input by it has autograd keep that tensor only for the input's gradient
(torch's mm saves its second operand only when the first needs a gradient). In the lowest block a tuner adapts,
the input of a layer there needs one only when an adapted layer runs before it in the block (o_proj after an
adapted q_proj, down after an adapted gate): the block's own input, from the frozen embeddings and the frozen
blocks below, has none. Measured with torch's saved-tensor hooks (tests/test_memory_saved.py): under SHiRA on all
linear layers, layer 0's q, k and v keep no copy of W, every other adapted layer does.
"""

from __future__ import annotations


def inputs_with_grad(arch, targets) -> list[str]:
    """The targets (full names of block linears, the only things that train) whose input needs a gradient: every
    one above the lowest adapted block, and those in it that read the output of an adapted layer of that block
    (through the block's table of products: op.a and op.b name the products an operand comes from)."""
    placed = [(arch.layer_of(name), name) for name in targets]
    layers = [layer for layer, _ in placed if layer is not None]
    if not layers:
        return []
    first = min(layers)
    block = arch.block(first)
    ops = {op.name: op for op in block.ops}
    ancestors: dict[str, set] = {}
    for op in block.ops:  # products in the block's order: what each one's operands are computed from
        direct = {source for source in op.a + op.b if source in ops}
        ancestors[op.name] = direct.union(*(ancestors[source] for source in direct))
    adapted_here = {arch.local_name(name) for layer, name in placed if layer == first}
    return [name for layer, name in placed if layer is not None
            and (layer > first or ancestors.get(arch.local_name(name), set()) & adapted_here)]


def dropout_per_token(arch, targets, trained_readers) -> int:
    """Elements per token that a tuner's own dropout on each adapted layer's input keeps, beyond the generic count
    of those inputs (explorer.costs.memory.distinct_inputs): each layer drops its input out anew, and its mask is
    kept where that input needs a gradient (measured on CPU, where torch's unfused dropout keeps a mask as wide as
    the input, counted so here; CUDA's fused dropout keeps one byte per element); where a trained factor reads the
    dropped-out copy (``trained_readers``), that copy is kept instead of the layer's input."""
    from ..costs.memory import distinct_inputs

    masks = sum(arch.by_name[name].in_features for name in inputs_with_grad(arch, targets))
    copies = sum(arch.by_name[name].in_features for name in trained_readers)
    return masks + copies - distinct_inputs(arch, trained_readers)
