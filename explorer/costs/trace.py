"""One forward pass on meta tensors, recorded: every matrix product, its module, its FLOPs, and what feeds
its operands (explorer.costs.derive turns two or three such passes into a model's table).

A ``TorchFunctionMode`` sees every ``F.linear``, ``matmul``/``@``, ``bmm``, ``addmm``, ``baddbmm`` and
``einsum`` with the tensors autograd tracks; walking autograd's graph back from an operand to the nearest
recorded product (or the block's input, marked by a forward pre-hook, or a parameter) says what feeds it.
Layers identical to an earlier one pass their input through untouched, so a 126-layer model traces as
fast as a 2-layer one.
"""

from __future__ import annotations


class TraceError(Exception):
    """The model was built but a forward pass on meta tensors could not be traced."""


def _matmul_flops(a, b) -> int:
    """FLOPs of a @ b as torch's flop counter counts them: 2·batch·m·k·n."""
    import math

    if a.dim() == 1 or b.dim() == 1:
        return 2 * a.numel() * (b.shape[-1] if b.dim() > 1 else 1)
    batch = math.prod(max(x, y) for x, y in zip(a.shape[:-2][::-1] + (1,) * 8, b.shape[:-2][::-1] + (1,) * 8))
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


class Trace:
    """One forward pass: every matrix product with its module, FLOPs and the sources of its operands."""

    def __init__(self, model, layer_names: list[str], representative: list[int]):
        self.model = model
        self.representative = representative  # per layer: the first layer of its kind (the one traced)
        self.names = {id(m): n for n, m in model.named_modules()}
        self.params = {id(p): n for n, p in model.named_parameters()}
        self.layers = {name: i for i, name in enumerate(layer_names)}
        self.stack: list[str] = []
        self.node_ids: dict = {}       # autograd node -> source id ("op:<n>" / "input:<layer>")
        self.ops: list[dict] = []
        self.outputs: dict[str, tuple] = {}  # module name -> sources of its output (layers and their children)

    def sources(self, tensor) -> tuple[str, ...]:
        import torch

        if not isinstance(tensor, torch.Tensor):
            return ()
        if tensor.grad_fn is None:
            name = self.params.get(id(tensor))
            return (f"param:{name}",) if name and tensor.requires_grad else ()
        found, seen, todo = set(), set(), [tensor.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node in self.node_ids:
                found.add(self.node_ids[node])
                continue
            variable = getattr(node, "variable", None)
            if variable is not None:
                name = self.params.get(id(variable))
                if name:
                    found.add(f"param:{name}")
                continue
            todo.extend(next_node for next_node, _ in node.next_functions)
        return tuple(sorted(found))

    def mark(self, tensor, source: str) -> None:
        import torch

        if isinstance(tensor, torch.Tensor) and tensor.grad_fn is not None:
            self.node_ids[tensor.grad_fn] = source

    def record(self, a, b, out, flops: int) -> None:
        module = self.stack[-1] if self.stack else ""
        op_id = f"op:{len(self.ops)}"
        self.ops.append({"module": module, "flops": flops, "a": self.sources(a), "b": self.sources(b),
                         "out": out.numel() if hasattr(out, "numel") else 0})
        self.mark(out, op_id)

    def run(self, seq_len: int, mask: bool = True, cache: bool = True):
        import torch
        import torch.nn.functional as F
        from torch.nn.modules import module as module_hooks
        from torch.overrides import TorchFunctionMode

        trace = self
        matmuls = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
                   torch.mm, torch.Tensor.mm, torch.baddbmm}

        class Recorder(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is torch.einsum:
                    return self.einsum(func, args, kwargs)
                out = func(*args, **kwargs)
                if func is F.linear:
                    x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
                    trace.record(x, w, out, 2 * (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1])
                elif func is torch.addmm:
                    trace.record(args[1], args[2], out, _matmul_flops(args[1], args[2]))
                elif func is torch.baddbmm:
                    trace.record(args[1], args[2], out, _matmul_flops(args[1], args[2]))
                elif func in matmuls:
                    trace.record(args[0], args[1], out, _matmul_flops(args[0], args[1]))
                return out

            @staticmethod
            def einsum(func, args, kwargs):  # any contraction: counted as torch's counter counts its pieces
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    out = func(*args, **kwargs)
                operands = list(args[1:] if isinstance(args[0], str) else args[0])
                if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                    operands = list(operands[0])
                if counter.get_total_flops() and len(operands) == 2:
                    trace.record(operands[0], operands[1], out, counter.get_total_flops())
                return out

        def pre(module, args, kwargs=None):
            name = trace.names.get(id(module), "?")
            trace.stack.append(name)
            if name in trace.layers:
                hidden = args[0] if args else (kwargs or {}).get("hidden_states")
                trace.mark(hidden, f"input:{trace.layers[name]}")

        def post(module, args, output):
            name = trace.stack.pop() if trace.stack else ""
            if name in trace.layers and isinstance(output, tuple):
                module._explorer_output = len(output)
            parent = name.rpartition(".")[0]
            if name in trace.layers or parent in trace.layers:
                first = output[0] if isinstance(output, (tuple, list)) and output else output
                trace.outputs[name] = trace.sources(first)

        handles = [module_hooks.register_module_forward_pre_hook(pre), module_hooks.register_module_forward_hook(post)]
        patched = self._skip_repeats()
        restore = _values_unknown()
        try:
            ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
            extra = {"attention_mask": torch.ones(1, seq_len, dtype=torch.long, device="meta")} if mask else {}
            with torch.enable_grad(), Recorder():
                out = self.model(input_ids=ids, use_cache=cache, **extra)
        finally:
            for handle in handles:
                handle.remove()
            for layer in patched:
                del layer.forward
            restore()
        return out

    def _skip_repeats(self) -> list:
        """Layers identical to an earlier one pass their input through untouched: only one layer of each kind
        runs (a 126-layer model traces as fast as a 2-layer one). Their table is their kind's."""
        patched = []
        for i, name in enumerate(self.layers):
            if self.representative[i] == i:
                continue
            layer = self.model.get_submodule(name)
            first = self.model.get_submodule(next(n for n, j in self.layers.items() if j == self.representative[i]))

            def passthrough(*args, _first=first, **kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                shape = getattr(_first, "_explorer_output", 1)
                return hidden if shape == 1 else (hidden,) + (None,) * (shape - 1)

            layer.forward = passthrough
            patched.append(layer)
        return patched


def _values_unknown():
    """Tell transformers, for the pass, that tensor values are unknown, as it is told while a graph is traced
    (its ``is_tracing``): meta tensors have no values, and the checks it then skips (is the mask all ones?
    are sequences packed?) only choose faster paths. Returns the function that undoes it."""
    import sys

    patched = []
    for name, module in list(sys.modules.items()):
        # the module's own names only: getattr on transformers 5.17's alias modules (image_processing_*_fast)
        # imports their target, and with it optional packages such as torchvision
        if name.startswith("transformers") and callable(getattr(module, "__dict__", {}).get("is_tracing")):
            original = module.is_tracing
            module.is_tracing = lambda tensor=None, _original=original: (
                getattr(tensor, "is_meta", False) or _original(tensor))
            patched.append((module, original))

    def restore():
        for module, original in patched:
            module.is_tracing = original
    return restore
