"""Prefix composition, as the chapter recommends ("prepend persona 1 prefix + persona 2 prefix").

Prefix tuning (Li & Liang 2021) learns, for every attention layer, n keys and n values that the real
tokens attend to before their own. Two prefixes on one base combine by concatenating them per layer:
layer l's keys become [K_A,l ; K_B,l] and its values [V_A,l ; V_B,l], n_A + n_B virtual tokens in every layer.

PEFT stores a loaded prefix (inference mode) as one table of n rows, each row a virtual token's keys and
values for all layers (layers·2·kv_dim numbers; a prefix trained through the reparameterization MLP is
saved as that MLP's output). Concatenating the two tables row-wise is therefore exactly the per-layer
concatenation above, and the combined adapter is an ordinary PEFT prefix of n_A + n_B tokens.

What concatenation does not keep: with rotary position embeddings (Llama, SmolLM2) the prefix keys carry
no rotation, so how a real token at position p attends to them depends on p, and PEFT numbers the real
tokens from n (the prefix length). Combined, they start at n_A + n_B instead of n_A (or n_B): each prefix is
read from positions it never saw in training. The tests show that masking one part out and giving the real
tokens their old positions gives the other prefix's own logits back, so the rest is interaction.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ExplorerError
from .pairing import Combination, check_pair, load_both


def build_prefix_combination(run_a: str, run_b: str, how: str = "kv_concat", weights=(1.0, 1.0),
                             density: float | None = None) -> Combination:
    """Both prefixes on one fresh base, and "combined": n_A + n_B keys and values per layer, A's first."""
    import torch

    a, b, weights = check_pair(run_a, run_b, how, weights)  # how "kv_concat" refuses LoRA and prompt runs
    if weights != (1.0, 1.0):
        raise ExplorerError("Prefix concatenation joins the two prefixes' keys and values as trained and takes "
                            f"no weights (scaling a key changes attention, not strength): leave both at 1, got "
                            f"{weights[0]:g} and {weights[1]:g}.")
    model, tokenizer, device = load_both(a, b)
    configs = [model.peft_config[name] for name in ("a", "b")]
    sizes = [config.num_virtual_tokens for config in configs]
    parts = [model.prompt_encoder[name].embedding.weight.detach() for name in ("a", "b")]
    if parts[0].shape[1] != parts[1].shape[1]:
        raise ExplorerError(f"The two prefixes have different widths ({parts[0].shape[1]} and {parts[1].shape[1]} "
                            "keys and values per virtual token): they were not trained on the same base model.")
    config = replace(configs[0], num_virtual_tokens=sum(sizes), prefix_projection=False, inference_mode=True)
    try:
        model.add_adapter("combined", config)
    except ValueError as error:
        raise ExplorerError(f"PEFT cannot build the concatenated prefix: {error}") from None
    embedding = model.prompt_encoder["combined"].embedding
    with torch.no_grad():
        embedding.weight.copy_(torch.cat(parts).to(embedding.weight))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    info = {"num_virtual_tokens": sum(sizes), "parts": sizes, "per_layer_keys": sum(sizes),
            "layers": config.num_layers}
    combination = Combination(model, tokenizer, device, a.method.name, how, weights, (a, b), info)
    combination.select("combined")
    return combination


def prefix_keys_values(model, adapter: str) -> list[tuple]:
    """(keys, values) of every layer for this adapter's prefix, each (1, kv heads, n, head_dim): what the real
    tokens attend to first (PEFT's own get_prompt, so the same tensors its forward uses)."""
    model.set_adapter(adapter)
    cache = model.get_prompt(batch_size=1)
    return [(layer.keys, layer.values) for layer in cache.layers]
