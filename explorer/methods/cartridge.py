"""Cartridges (Eyuboglu et al. 2025, "Cartridges: Lightweight and general-purpose long context representations via
self-study"), built by PEFT (``peft.tuners.cartridge``).

A trained KV cache: n virtual tokens' keys and values in every attention layer, stored directly as parameters
(PEFT's CartridgeEncoder) and served as prefix tuning's are (PeftModel.get_prompt hands them to the model as
past_key_values). The table has prefix tuning's shape without its MLP: n × (layers·2·kv_dim), kv_dim being the key
and value width (num_key_value_heads·head_dim under grouped-query attention), PEFT's own layers and width
(peft.utils.other._prepare_prompt_learning_config, shared with explorer.methods.prefix). The first
num_frozen_tokens rows are a parameter that does not train (the paper keeps the first token as an attention sink):
counted in the model's total, not in the trained count; PEFT saves the whole table.

FLOPs: prefix tuning's without the MLP: every attention's scores and weighted sum run over n more keys, and the
keys and values train.

The paper trains a cartridge by self-study (context distillation on synthetic conversations about a corpus) and
starts it from the corpus's first tokens' cache; here it trains on the run's data with the app's loss, as prefix
tuning does, from a random start (PEFT's default) or, with kv_init=training_data, from the base model's own cache of
the run's first training tokens (the paper's start, on the run's data). A random start makes the model worse before
it makes it better: on SmolLM2-135M (pirate data, 12 steps at the default rate) the held-out loss went 8.94 → 4.86,
where the base model scores 3.54; started from the training data it went 3.45 → 2.37. The default stays PEFT's
random start, which a recipe (PEFT's config alone) reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term
from .prefix import prefix_shape


@dataclass
class CartridgeOptions:
    num_virtual_tokens: int = option(20, "Virtual tokens in the trained cache (keys and values in every layer).",
                                     min=1, max=4096)
    num_frozen_tokens: int = option(1, "Its first tokens kept at their start, untrained (the paper freezes the "
                                    "first as an attention sink, for stability).", min=0, max=4096)
    kv_init: str = option("random", "Where the cache starts: random (PEFT's default), or the base model's own keys "
                          "and values for the run's first training tokens (the paper's better start, PEFT's "
                          "initialize_kv_prefix_from_past_key_values).", choices=("random", "training_data"))


def validate(spec, o) -> None:
    if o.num_frozen_tokens > o.num_virtual_tokens:
        raise ExplorerError(f"Cartridge: num_frozen_tokens ({o.num_frozen_tokens}) must be at most "
                            f"num_virtual_tokens ({o.num_virtual_tokens}).")
    check_training(o)  # every token frozen: nothing to count either (the Calculator says so, not "0 trainable")


def check_training(o) -> None:
    if o.num_frozen_tokens >= o.num_virtual_tokens:
        raise ExplorerError(f"Cartridge: all {o.num_virtual_tokens} virtual tokens are frozen, so nothing would "
                            "train; set num_frozen_tokens below num_virtual_tokens.")


def terms(spec, o) -> list[Term]:
    validate(spec, o)
    layers, width = prefix_shape(spec)
    n = o.num_virtual_tokens - o.num_frozen_tokens
    count = n * layers * 2 * width
    return [Term("cached keys and values", count, f"({o.num_virtual_tokens} − {o.num_frozen_tokens} frozen)·"
                 f"{layers} layers·2·{width} = {count:,}")]


def frozen_rows(spec, o) -> int:
    layers, width = prefix_shape(spec)
    return o.num_frozen_tokens * layers * 2 * width


def adaptation(spec, o) -> Adaptation:
    layers, width = prefix_shape(spec)
    return Adaptation(prefix_tokens=o.num_virtual_tokens, prefix_token_dim=width, prefix_layers=layers)


def apply(model, spec, o):
    from peft import CartridgeConfig, get_peft_model

    validate(spec, o)
    return get_peft_model(model, CartridgeConfig(task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens,
                                                 num_frozen_tokens=o.num_frozen_tokens))


def apply_for_training(model, spec, o, data):
    """PEFT's build; with kv_init=training_data, its cache is then the base model's keys and values for the first
    num_virtual_tokens tokens of the run's training examples (prefilled with the adapter off)."""
    import torch
    from peft.tuners.cartridge.utils import initialize_kv_prefix_from_past_key_values

    model = apply(model, spec, o)
    if o.kv_init == "random":
        return model
    tokens = []
    while len(tokens) < o.num_virtual_tokens:
        batch = data.batches(1)[0]
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            tokens += ids[mask.bool()].tolist()
    ids = torch.tensor([tokens[:o.num_virtual_tokens]], device=batch["input_ids"].device)
    with torch.no_grad(), model.disable_adapter():
        cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
    initialize_kv_prefix_from_past_key_values(model, past_key_values=cache)
    return model


def recipe_refusal_for(o) -> str:
    if o.kv_init == "training_data":
        return "its cache starts from the base model's keys and values for the run's first training tokens, which " \
               "the app's loop computes"
    return ""


METHOD = Method(
    name="cartridge", title="Cartridge", where="attention keys and values (a trained cache in every layer)",
    explanation="Trains a small key/value cache directly: every attention layer sees a few extra learned keys and "
                "values before the real tokens, as if a text had been read beforehand. Like prefix tuning without "
                "its reparameterisation network; the first virtual token stays fixed. It starts from random keys "
                "and values, which at first make the model worse than the base, or from the base model's own "
                "keys and values for the first training tokens (kv_init).",
    when_to_use="To stand in for a long document kept in the prompt: the paper distils a corpus into a cartridge. "
                "Here it trains on the run's data, as prefix tuning does; start it from the training data "
                "(kv_init) to begin where the base model is rather than below it.",
    default_lr=1e-2, options_type=CartridgeOptions, mergeable=False,
    merge_reason="Cannot merge: it adds extra keys and values to every attention layer, which enlarge the "
                 "attention (and the KV cache) rather than change a weight.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=validate, peft_type="CARTRIDGE",
    artifact="trained KV cache", in_default_race=False, untrained_params=frozen_rows,
    saved_params=lambda spec, o: o.num_virtual_tokens * prefix_shape(spec)[0] * 2 * prefix_shape(spec)[1],  # all rows
    check_training=check_training, apply_for_training=apply_for_training, recipe_refusal_for=recipe_refusal_for,
    literature=("Eyuboglu et al. 2025 (Cartridges, abstract) claim that cartridges trained with self-study match "
                "in-context learning on long-context benchmarks while using 38.6× less memory and enabling 26.4× "
                "higher throughput.",))
