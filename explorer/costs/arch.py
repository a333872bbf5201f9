"""The per-block table of a model, as explorer.costs.derive reads it from the model transformers builds.

Pure data (no torch): the formulas of explorer.costs and explorer.methods answer from it instantly, even
for a 400B model.

- ``Module``: every module of the model by its full name (what PEFT's ``target_modules`` is matched
  against), its class, its own parameters and, for linear/Conv1D/embedding modules, its shape.
- ``Op``: one matrix product a block runs, in forward order, with its FLOPs per token (and per token and
  key: attention's Q·Kᵀ and P·V) and what feeds its two operands: "input" (the block's input), another op
  of the block, or "param:<name>" (a parameter: a weight, a norm's scale, an expert matrix, ...).
- ``Block``: the ops, parameters and modules of one kind of decoder layer; ``Arch.layer_kind`` says which
  kind each layer is (a dense first layer and MoE layers are two kinds).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Module:
    name: str
    cls: str
    kind: str                 # "linear" (nn.Linear) | "conv1d" (transformers' Conv1D) | "embedding" | "other"
    own_params: int           # parameters held by this module itself (not its children)
    in_features: int = 0
    out_features: int = 0
    bias: bool = False


@dataclass(frozen=True)
class Linear:
    """One linear layer of a block, as the tables show it. ``name`` is its path inside the block
    (``self_attn.q_proj``); ``reads`` its role: attn_in, attn_core (reads the attention output), mlp_in,
    mlp_mid (reads the MLP's hidden activation)."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    reads: str

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)

    @property
    def short(self) -> str:
        return self.name.rpartition(".")[2]


@dataclass(frozen=True)
class Op:
    name: str                 # the linear module's path in the block, or "<module>#<n>" for other products
    module: str               # the module it runs in, relative to the block
    linear: bool              # an nn.Linear/Conv1D module: a target for LoRA, IA³ ...
    in_features: int
    out_features: int
    bias: bool
    per_token: int            # forward FLOPs per token
    per_key: int              # forward FLOPs per token and per attended key (attention core)
    out_per_token: int        # output elements per token (and per token and key)
    out_per_key: int
    a: tuple                  # sources of the first operand (the activation)
    b: tuple                  # sources of the second (a weight, or keys/values)


@dataclass(frozen=True)
class Block:
    ops: tuple
    output: tuple             # sources of the block's output
    children: tuple           # (child module, sources of its output)
    params: tuple             # (name, numel, shape) of every parameter of the block
    modules: tuple            # Module rows, names relative to the block
    attention: str = ""       # the child Houlsby adapters follow (self_attn / attn)
    ffn: str = ""             # ... and the feed-forward child (mlp / block_sparse_moe)

    @cached_property
    def param_count(self) -> int:
        return sum(n for _, n, _ in self.params)

    @cached_property
    def roles(self) -> dict[str, str]:
        """Each op's role, from the dependency graph: what feeds the attention core, what reads it, ..."""
        names = {op.name for op in self.ops}
        ancestors: dict[str, set] = {}
        for op in self.ops:
            direct = {s for s in op.a + op.b if s in names}
            ancestors[op.name] = set(direct).union(*(ancestors[s] for s in direct)) if direct else set()
        core = {op.name for op in self.ops if op.per_key}
        feeds_core = set().union(*(ancestors[c] for c in core)) if core else set()
        roles = {}
        for op in self.ops:
            if op.per_key:
                roles[op.name] = "attn_core_product"
            elif op.name in feeds_core:
                roles[op.name] = "attn_in"
            elif set(op.a) & core:
                roles[op.name] = "attn_core"
            elif not op.linear:
                roles[op.name] = "experts" if "expert" in op.module else "router"
            else:
                child = op.module.split(".")[0]
                mid = any(s in names and s.split(".")[0] == child and roles.get(s) in ("mlp_in", "mlp_mid")
                          for s in op.a)
                roles[op.name] = "mlp_mid" if mid else "mlp_in"
        return roles

    @cached_property
    def last_op(self) -> dict[str, int]:
        """Each child module's last op (where an adapter after that child goes)."""
        return {child: i for i, op in enumerate(self.ops) for child, _ in self.children
                if op.module == child or op.module.startswith(child + ".")}

    @cached_property
    def linears(self) -> tuple[Linear, ...]:
        return tuple(Linear(op.name, op.in_features, op.out_features, op.bias, self.roles[op.name])
                     for op in self.ops if op.linear)


@dataclass(frozen=True)
class Arch:
    model_type: str
    layers_path: str          # where the decoder blocks live: "model.layers", "transformer.h"
    blocks: tuple             # distinct kinds of block
    layer_kind: tuple         # index into blocks, per layer
    modules: tuple            # every Module of the model, full names
    embed: str                # the input embeddings' module name
    head: str                 # the output layer's module name ("" if none)
    tied: bool
    hidden: int
    vocab: int
    head_flops_per_token: int
    total: int                # every parameter once (tied weights once), as model.parameters() counts
    windows: tuple = ()       # per layer: its KV cache's sliding window, or None
    kv_per_token: tuple = ()  # per layer: cached key and value elements per token
    flops_exact: bool = True  # every product's FLOPs are a·s + b·s² (False: a chunked scan; FLOPs approximate)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def layers(self) -> int:
        return len(self.layer_kind)

    def block(self, layer: int) -> Block:
        return self.blocks[self.layer_kind[layer]]

    @cached_property
    def main(self) -> Block:
        """The most common kind of block (the MoE layers of a model with a dense first layer)."""
        return self.blocks[Counter(self.layer_kind).most_common(1)[0][0]]

    @property
    def linears(self) -> tuple[Linear, ...]:
        return self.main.linears

    def linear(self, name: str) -> Linear:
        for block in self.blocks:
            for lin in block.linears:
                if lin.name == name:
                    return lin
        raise KeyError(name)

    def total_params(self) -> int:
        return self.total

    @cached_property
    def by_name(self) -> dict[str, Module]:
        return {m.name: m for m in self.modules}

    @cached_property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    @cached_property
    def leaf_names(self) -> frozenset:
        """The last component of every module name (q_proj, c_attn, ...)."""
        return frozenset(name.rpartition(".")[2] for name in self.module_names)

    @cached_property
    def _located(self) -> dict[str, tuple[int | None, str]]:
        return {}

    def locate(self, name: str) -> tuple[int | None, str]:
        """(layer index or None outside the blocks, the name inside its block), memoized: the formulas ask
        for the same few thousand names on every update."""
        found = self._located.get(name)
        if found is None:
            found = (None, name)
            prefix = self.layers_path + "."
            if name.startswith(prefix):
                index, _, rest = name[len(prefix):].partition(".")
                if index.isdigit():
                    found = (int(index), rest)
            self._located[name] = found
        return found

    def layer_of(self, name: str) -> int | None:
        """The layer index of a module inside the blocks (None outside them)."""
        return self.locate(name)[0]

    def local_name(self, name: str) -> str:
        return self.locate(name)[1]

    def params_under(self, name: str) -> int:
        """Parameters of a module and all its children (tied weights once)."""
        prefix = name + "."
        total = sum(m.own_params for m in self.modules if m.name == name or m.name.startswith(prefix))
        if self.tied and name == self.head and not self.by_name[name].own_params:
            return self.vocab * self.hidden
        return total

    @cached_property
    def all_linear(self) -> frozenset:
        """PEFT's "all-linear": every nn.Linear and Conv1D module except the output layer (peft.tuners.
        tuners_utils._maybe_include_all_linear_layers)."""
        return frozenset(m.name for m in self.modules if m.kind in ("linear", "conv1d") and m.name != self.head)

    def moe(self, block: Block) -> tuple[int, int] | None:
        """(experts, experts per token) of a MoE block, read from its expert matrices and products."""
        shapes = dict((name, shape) for name, _, shape in block.params)
        for op in block.ops:
            if block.roles[op.name] != "experts":
                continue
            for first, sources in ((True, op.a), (False, op.b)):
                for source in sources:
                    shape = shapes.get(source[6:]) if source.startswith("param:") else None
                    if shape and len(shape) == 3:
                        # weight @ x gives weight's rows; x @ weight (stored transposed) its columns
                        width = shape[1] if first else shape[2]
                        return shape[0], op.out_per_token // width
        return None

    # --- shapes the memory formulas read (per layer kind) ---------------------------------------------
    def attention_scores_per_key(self, block: Block) -> int:
        return sum(op.out_per_key for op in block.ops if op.per_key)

    def heads(self) -> int:
        return self.attention_scores_per_key(self.main) or 1
