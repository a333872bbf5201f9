"""Model specs: the shapes a calculator needs, read from any config.json.

A ``ModelSpec`` holds a transformers config and an ``Arch``: the per-block table of linear
layers (names as PEFT matches them, in/out features, bias) and the other parameter groups.
The analytical formulas of ``explorer.methods`` and ``explorer.costs`` work from the Arch alone,
so they answer instantly even for a 405B model; ``meta_model`` builds the real architecture on
the meta device (no weights, no memory) for exact counts and FLOP checks.

Sources: the modelling files of transformers 5.23 (Llama, Mistral, Mixtral, Qwen2, Gemma2, Phi3,
GPT-2), read module by module; tests compare every formula with the meta-device model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ExplorerError

CATALOG_DIR = Path(__file__).parent / "catalog"
LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "gemma2"}
SUPPORTED = LLAMA_LIKE | {"phi3", "gpt2"}
MAX_PARAMS = 5e12  # anything larger is a typo, not a model


@dataclass(frozen=True)
class Linear:
    """One linear layer of a decoder block. ``name`` is the suffix PEFT's target_modules matches.

    ``reads`` says which activation feeds it: "attn_in" (normed block input), "attn_core" (the
    attention output), "mlp_in" (normed hidden state), "mlp_mid" (the MLP's hidden activation).
    """

    name: str
    in_features: int
    out_features: int
    bias: bool
    reads: str

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class Arch:
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    linears: tuple[Linear, ...]          # per block, in forward order
    norm_params_per_layer: int
    final_norm_params: int
    position_params: int = 0             # learned positions (GPT-2)
    experts: int = 0                     # MoE: experts per layer (0 = dense)
    experts_per_token: int = 0
    expert_params: int = 0               # parameters of one expert
    router_params: int = 0

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def lm_head(self) -> Linear:
        return Linear("lm_head", self.hidden, self.vocab, False, "final")

    def linear(self, name: str) -> Linear:
        for layer in self.linears:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def total_params(self) -> int:
        """Every parameter once (tied embeddings counted once), as model.parameters() does."""
        per_layer = (sum(lin.params for lin in self.linears) + self.norm_params_per_layer
                     + self.experts * self.expert_params + self.router_params)
        embeddings = self.vocab * self.hidden + self.position_params
        head = 0 if self.tied else self.vocab * self.hidden
        return embeddings + self.layers * per_layer + self.final_norm_params + head


@dataclass
class ModelSpec:
    name: str
    source: str                     # "catalog" | "runnable" | "upload"
    config: object                  # transformers PretrainedConfig
    arch: Arch
    notes: str = ""
    raw: dict = field(default_factory=dict, repr=False)


def _arch_from_config(c) -> Arch:
    mt = c.model_type
    if mt == "gpt2":
        h, inner = c.n_embd, c.n_inner or 4 * c.n_embd
        linears = (Linear("c_attn", h, 3 * h, True, "attn_in"), Linear("attn.c_proj", h, h, True, "attn_core"),
                   Linear("c_fc", h, inner, True, "mlp_in"), Linear("mlp.c_proj", inner, h, True, "mlp_mid"))
        return Arch(mt, h, c.n_layer, c.n_head, c.n_head, h // c.n_head, inner, c.vocab_size,
                    bool(getattr(c, "tie_word_embeddings", True)), linears, 4 * h, 2 * h, c.n_positions * h)
    h, heads = c.hidden_size, c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    hd = getattr(c, "head_dim", None) or h // heads
    inter = c.intermediate_size
    q, k = heads * hd, kv * hd
    if mt == "phi3":
        linears = (Linear("qkv_proj", h, q + 2 * k, False, "attn_in"), Linear("o_proj", q, h, False, "attn_core"),
                   Linear("gate_up_proj", h, 2 * inter, False, "mlp_in"), Linear("down_proj", inter, h, False, "mlp_mid"))
    else:
        qkv_bias = mt == "qwen2" or bool(getattr(c, "attention_bias", False))
        o_bias = mt != "qwen2" and bool(getattr(c, "attention_bias", False))
        attention = (Linear("q_proj", h, q, qkv_bias, "attn_in"), Linear("k_proj", h, k, qkv_bias, "attn_in"),
                     Linear("v_proj", h, k, qkv_bias, "attn_in"), Linear("o_proj", q, h, o_bias, "attn_core"))
        if mt == "mixtral":  # experts are fused 3-D tensors, not nn.Linear: counted separately
            return Arch(mt, h, c.num_hidden_layers, heads, kv, hd, inter, c.vocab_size, bool(c.tie_word_embeddings),
                        attention, 2 * h, h, experts=c.num_local_experts, experts_per_token=c.num_experts_per_tok,
                        expert_params=3 * h * inter, router_params=c.num_local_experts * h)
        mlp_bias = bool(getattr(c, "mlp_bias", False))
        linears = attention + (Linear("gate_proj", h, inter, mlp_bias, "mlp_in"),
                               Linear("up_proj", h, inter, mlp_bias, "mlp_in"),
                               Linear("down_proj", inter, h, mlp_bias, "mlp_mid"))
    norms = 4 * h if mt == "gemma2" else 2 * h
    return Arch(mt, h, c.num_hidden_layers, heads, kv, hd, inter, c.vocab_size,
                bool(getattr(c, "tie_word_embeddings", False)), linears, norms, h)


def _check_sizes(arch: Arch) -> None:
    for label, value in [("hidden size", arch.hidden), ("number of layers", arch.layers),
                         ("attention heads", arch.heads), ("key/value heads", arch.kv_heads),
                         ("intermediate size", arch.intermediate), ("vocabulary size", arch.vocab)]:
        if not isinstance(value, int) or value < 1:
            raise ExplorerError(f"config.json: {label} must be a positive whole number, got {value!r}.")
    if arch.heads % arch.kv_heads:
        raise ExplorerError(f"config.json: {arch.heads} attention heads cannot be shared by {arch.kv_heads} key/value heads.")
    if arch.total_params() > MAX_PARAMS:
        raise ExplorerError(f"config.json describes {arch.total_params():.3g} parameters; "
                            f"the calculator stops at {MAX_PARAMS:.0e} (is a size mistyped?).")


def spec_from_dict(data: dict, name: str, source: str, notes: str = "") -> ModelSpec:
    """Build a spec from config.json contents, refusing what we cannot or must not handle."""
    if not isinstance(data, dict):
        raise ExplorerError("config.json must hold a JSON object.")
    data = {k: v for k, v in data.items() if k != "_catalog"}
    if "auto_map" in data:
        raise ExplorerError("This config.json asks for remote code (auto_map); PEFT Explorer never runs it.")
    model_type = data.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ExplorerError("config.json has no \"model_type\" field, so the architecture is unknown.")
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ExplorerError(f"transformers does not know the model type '{model_type}'.")
    if model_type not in SUPPORTED:
        raise ExplorerError(f"The calculator supports the model types {', '.join(sorted(SUPPORTED))}; "
                            f"'{model_type}' is not one of them yet.")
    data.pop("torch_dtype", None)  # deprecated key; we choose precision ourselves
    try:
        config = AutoConfig.for_model(model_type, **data)
        arch = _arch_from_config(config)
    except Exception as error:  # transformers and huggingface_hub raise many kinds for a bad config
        reason = getattr(error, "__cause__", None) or error
        raise ExplorerError(f"config.json could not be read as a '{model_type}' config: {reason}") from None
    _check_sizes(arch)
    return ModelSpec(name, source, config, arch, notes, raw={"model_type": model_type, **data})


def catalog_names() -> list[str]:
    return sorted(path.stem for path in CATALOG_DIR.glob("*.json"))


@lru_cache(maxsize=None)
def catalog_spec(name: str) -> ModelSpec:
    data = json.loads((CATALOG_DIR / f"{name}.json").read_text())
    return spec_from_dict(data, name, "catalog", data.get("_catalog", {}).get("notes", ""))


def catalog() -> dict[str, ModelSpec]:
    """The catalog of real configs (explorer/costs/catalog/*.json), by file name."""
    return {name: catalog_spec(name) for name in catalog_names()}


def catalog_title(name: str) -> str:
    data = json.loads((CATALOG_DIR / f"{name}.json").read_text())
    return data.get("_catalog", {}).get("name", name)


def parse_config_text(text: str, name: str = "uploaded config") -> ModelSpec:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as error:
        raise ExplorerError(f"The pasted config.json is not valid JSON: {error}") from None
    return spec_from_dict(data, name, "upload")


def resolve(name: str) -> ModelSpec:
    """A catalog name, a runnable model's name, or the path of a config.json (or its folder)."""
    name = (name or "").strip()
    if name in catalog_names():
        return catalog_spec(name)
    from ..models import registry

    known = registry.registry()
    if name in known:
        config = registry.read_config(known[name])
        if config is None:
            raise ExplorerError(f"'{name}' is not provisioned yet: run `python -m explorer provision`.")
        return spec_from_dict(config, name, "runnable")
    from .. import settings

    if settings.model_sources() != "any":  # a hosted server reads no config.json path a user names
        registry.resolve(name)  # raises the server's policy message unless the folder is allowed
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return parse_config_text(path.read_text(encoding="utf-8"), path.parent.name)
        except UnicodeDecodeError:
            raise ExplorerError(f"{path} is not UTF-8 text.") from None
    raise ExplorerError(f"Unknown model '{name}'. Use a catalog name ({', '.join(catalog_names())}), "
                        "a runnable model, or the path of a config.json.")


def meta_model(spec: ModelSpec, attn_implementation: str = "eager"):
    """The real architecture on the meta device: every module and shape, no memory."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(spec.config)
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
