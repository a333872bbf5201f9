"""The project's own trainable modules, for methods PEFT does not provide.

* Houlsby bottleneck adapters -- Houlsby et al. 2019, "Parameter-Efficient Transfer
  Learning for NLP" (ICML), section 2.1 and figure 2.
* A feature-extraction head: a frozen backbone, mean-pooled last hidden states and a
  linear classifier (the "feature-based" baseline of Devlin et al. 2019, BERT,
  section 5.3, with the mean pooling of Reimers & Gurevych 2019, Sentence-BERT).
* Saving and loading only the trainable tensors, as safetensors plus a JSON config.

torch and transformers only; no UI code here.
"""

from __future__ import annotations

import json
import os
import tempfile
from itertools import chain

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_NAME = "houlsby_adapter"
WEIGHTS_FILE = "explorer_adapter.safetensors"
CONFIG_FILE = "explorer_adapter_config.json"

# Where decoder blocks and their sub-layers live in Hugging Face causal LMs.
_BLOCK_PATHS = ("model.layers", "transformer.h", "layers", "h")
_ATTENTION_NAMES = ("self_attn", "attn")
_FFN_NAMES = ("block_sparse_moe", "mlp")  # the MoE block first when a model has one


class HoulsbyAdapter(nn.Module):
    """Bottleneck adapter of Houlsby et al. 2019 (section 2.1, figure 2).

    ``z + up(gelu(down(z)))``: a down-projection to ``bottleneck_dim``, a nonlinearity
    and an up-projection back, with a skip connection. The paper initialises the
    adapter "near identity"; here the up-projection weight and bias start at exactly
    zero so the adapted model's outputs equal the base model's before training.
    """

    def __init__(self, d_model: int, bottleneck_dim: int, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck_dim, bias=True, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck_dim, d_model, bias=True, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.up(self.act(self.down(z)))


def _adapter_hook(module: nn.Module, args, output):
    """Forward hook: pass the sub-layer's output (or its first element) through the adapter."""
    adapter = getattr(module, ADAPTER_NAME)
    if isinstance(output, torch.Tensor):
        return adapter(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (adapter(output[0]),) + tuple(output[1:])
    raise TypeError(f"{type(module).__name__} returned {type(output).__name__}; expected a tensor or a tuple")


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _BLOCK_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path, obj
    raise ValueError(
        f"Cannot find the decoder blocks of {type(model).__name__}: expected an nn.ModuleList at one of "
        f"{', '.join(_BLOCK_PATHS)}. Houlsby adapters support decoder-only causal LMs (Llama, Qwen2, "
        "Gemma2, Mistral, Mixtral, Phi3, GPT-2 and the like)."
    )


def _find_child(block: nn.Module, names: tuple[str, ...], what: str, where: str) -> tuple[str, nn.Module]:
    for name in names:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return name, child
    raise ValueError(f"Cannot find the {what} sub-layer of {where}: expected one of {', '.join(names)}.")


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None) if config is not None else None
    if size is None:
        size = model.get_input_embeddings().weight.shape[-1]
    return int(size)


def add_houlsby_adapters(
    model: nn.Module, bottleneck_dim: int, after_attention: bool = True, after_ffn: bool = True
) -> list[str]:
    """Insert a Houlsby adapter after the attention and/or feed-forward sub-layer of every block.

    As in the paper (figure 2), each adapter acts on the sub-layer's output before the
    residual add. The adapter becomes a child ``houlsby_adapter`` of the sub-layer and is
    applied by a forward hook; its parameters follow the sub-layer's device and dtype
    (the "meta" device included). Returns the adapters' module names.
    """
    if bottleneck_dim < 1:
        raise ValueError(f"bottleneck_dim must be a positive integer, got {bottleneck_dim}")
    if not (after_attention or after_ffn):
        raise ValueError("Choose at least one place for the adapters: after_attention and/or after_ffn")
    path, blocks = _find_blocks(model)
    d_model = _hidden_size(model)
    wanted = [("attention", _ATTENTION_NAMES)] * after_attention + [("feed-forward", _FFN_NAMES)] * after_ffn
    targets = []
    for i, block in enumerate(blocks):
        for what, names in wanted:
            name, sub = _find_child(block, names, what, f"{path}.{i}")
            if hasattr(sub, ADAPTER_NAME):
                raise ValueError(f"{path}.{i}.{name} already has a Houlsby adapter")
            targets.append((f"{path}.{i}.{name}.{ADAPTER_NAME}", sub))
    added = []
    for full_name, sub in targets:
        p = next((p for p in chain(sub.parameters(), model.parameters()) if p.dtype.is_floating_point), None)
        device, dtype = (p.device, p.dtype) if p is not None else (None, None)
        sub.add_module(ADAPTER_NAME, HoulsbyAdapter(d_model, bottleneck_dim, device=device, dtype=dtype))
        sub.register_forward_hook(_adapter_hook)
        added.append(full_name)
    return added


def houlsby_parameter_count(
    d_model: int, bottleneck_dim: int, n_layers: int, after_attention: bool = True, after_ffn: bool = True
) -> int:
    """Parameters added by ``add_houlsby_adapters``: (2 d m + m + d) per adapter (Houlsby et al., 2.1)."""
    per_block = int(after_attention) + int(after_ffn)
    return per_block * n_layers * (2 * d_model * bottleneck_dim + bottleneck_dim + d_model)


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of the non-padding tokens' hidden states (Sentence-BERT's mean pooling)."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def pooled_features(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """Mean-pooled final hidden states of a frozen backbone (its base model: no LM head is needed)."""
    need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in backbone.parameters())
    with torch.set_grad_enabled(need_grad):
        out = backbone.base_model(input_ids=input_ids, attention_mask=attention_mask)
    return mean_pool(out.last_hidden_state, attention_mask)


class PooledClassifierHead(nn.Module):
    """Mean of the non-padding tokens' hidden states, then a linear layer to class logits."""

    def __init__(self, d_model: int, num_classes: int, device=None, dtype=None):
        super().__init__()
        self.classifier = nn.Linear(d_model, num_classes, bias=True, device=device, dtype=dtype)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = mean_pool(hidden_states, attention_mask)
        return self.classifier(pooled.to(self.classifier.weight.dtype))


class HeadClassifier(nn.Module):
    """A frozen causal-LM backbone used as a feature extractor, with a trainable pooled head.

    The feature-based approach (BERT, section 5.3): only the head is trained. The
    backbone runs without autograd unless some of its parameters were made trainable.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        ref = backbone.get_input_embeddings().weight
        self.head = PooledClassifierHead(_hidden_size(backbone), num_classes, device=ref.device, dtype=ref.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        need_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(need_grad):
            # The base model (no LM head): the head needs the final hidden states, not vocabulary logits.
            out = self.backbone.base_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(out.last_hidden_state, attention_mask)

    def from_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Class logits from already pooled features: the frozen backbone runs once per text, not per step."""
        return self.head.classifier(pooled.to(self.head.classifier.weight.dtype))


class HeadEmbedder(nn.Module):
    """A frozen causal-LM backbone with a trainable sentence-embedding head: mean pooling, then a linear
    projection (Sentence-BERT's pooling, Reimers & Gurevych 2019, §3; the projection is what trains)."""

    def __init__(self, backbone: nn.Module, embedding_dim: int):
        super().__init__()
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        ref = backbone.get_input_embeddings().weight
        self.projection = nn.Linear(_hidden_size(backbone), embedding_dim, bias=True, device=ref.device,
                                    dtype=ref.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_features(pooled_features(self.backbone, input_ids, attention_mask))

    def from_features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projection(pooled.to(self.projection.weight.dtype))


def _write_atomically(path: str, write) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_trainable(model: nn.Module, folder: str, config: dict) -> None:
    """Write the trainable parameters (safetensors) and ``config`` (JSON) into ``folder``.

    Each file is written to a temporary file in the same folder and moved into place
    with ``os.replace``. The config is also stored in the safetensors metadata, so a
    weights file and a config file from two different saves are detected on load.
    """
    config_text = json.dumps(config, indent=2, sort_keys=True)
    tensors = {}
    for name, p in model.named_parameters():  # tied weights are listed once
        if p.requires_grad:
            if p.device.type == "meta":
                raise ValueError(f"Parameter {name} is on the meta device and has no values to save")
            tensors[name] = p.detach().to("cpu").contiguous()
    if not tensors:
        raise ValueError("The model has no trainable parameters (requires_grad=True) to save")
    os.makedirs(folder, exist_ok=True)
    metadata = {"format": "pt", "explorer_config": config_text}
    _write_atomically(os.path.join(folder, WEIGHTS_FILE), lambda tmp: save_file(tensors, tmp, metadata=metadata))

    def write_config(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(config_text)

    _write_atomically(os.path.join(folder, CONFIG_FILE), write_config)


def load_trainable(model: nn.Module, folder: str) -> dict:
    """Copy the tensors saved by ``save_trainable`` into ``model`` in place; return the config."""
    weights_path, config_path = os.path.join(folder, WEIGHTS_FILE), os.path.join(folder, CONFIG_FILE)
    for path in (weights_path, config_path):
        if not os.path.isfile(path):
            raise ValueError(f"Missing {os.path.basename(path)} in {folder}")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        with safe_open(weights_path, framework="pt") as f:
            stored = (f.metadata() or {}).get("explorer_config")
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"Cannot read the saved adapter in {folder} (corrupt or incomplete file?): {err}") from err
    if stored is not None and json.loads(stored) != config:
        raise ValueError(f"{CONFIG_FILE} and {WEIGHTS_FILE} in {folder} come from different saves")
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = sorted(k for k in tensors if k not in params)
    if missing:
        raise ValueError(f"The saved adapter has {len(missing)} tensor(s) the model lacks, e.g. {missing[:3]}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(params[key].shape):
            raise ValueError(f"Shape mismatch for {key}: saved {tuple(value.shape)}, model {tuple(params[key].shape)}")
    with torch.no_grad():
        for key, value in tensors.items():
            params[key].copy_(value)
    return config
