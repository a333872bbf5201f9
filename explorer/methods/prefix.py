"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

n learned keys and values are prepended in every attention layer. PEFT stores them at the width of
the key/value projections (num_key_value_heads·head_dim: smaller than d_model under grouped-query
attention): n·layers·2·kv_dim parameters, or, with the reparameterization MLP, an n×kv_dim
embedding, a kv_dim→h linear, tanh and an h→layers·2·kv_dim linear. The width and the number of layers
are PEFT's own (peft.utils.other._prepare_prompt_learning_config, asked with the model's config).
"""

from dataclasses import dataclass

from ..options import option
from .base import Adaptation, Method, Term


@dataclass
class PrefixOptions:
    num_virtual_tokens: int = option(20, "Number of learned key/value pairs prepended in every layer.", min=1, max=1024)
    prefix_projection: bool = option(False, "Reparameterize the prefix through an MLP (more stable training, "
                                     "many more parameters while training).")
    encoder_hidden_size: int = option(512, "Hidden size of the reparameterization MLP.", min=1, max=65536)


_shapes: dict[str, tuple[int, int]] = {}


def prefix_shape(spec) -> tuple[int, int]:
    """(layers, width of the keys/values) PEFT gives the prefix on this model."""
    key = spec.key
    if key not in _shapes:
        from peft import PrefixTuningConfig
        from peft.utils.other import _prepare_prompt_learning_config

        config = _prepare_prompt_learning_config(PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=1),
                                                 spec.config)
        if len(_shapes) > 256:
            _shapes.clear()
        _shapes[key] = (config.num_layers, config.token_dim)
    return _shapes[key]


def terms(spec, o):
    L, t = prefix_shape(spec)
    n = o.num_virtual_tokens
    if not o.prefix_projection:
        count = n * L * 2 * t
        return [Term("prefix keys and values", count, f"{n}·{L} layers·2·{t} = {count:,}")]
    e = o.encoder_hidden_size
    return [Term("prefix embedding", n * t, f"{n}·{t} = {n * t:,}"),
            Term("MLP layer 1", t * e + e, f"{t}·{e} + {e} = {t * e + e:,}"),
            Term("MLP layer 2", e * L * 2 * t + L * 2 * t, f"{e}·({L}·2·{t}) + {L}·2·{t} = {e * L * 2 * t + L * 2 * t:,}")]


def adaptation(spec, o):
    layers, width = prefix_shape(spec)
    return Adaptation(prefix_tokens=o.num_virtual_tokens,
                      prefix_mlp_hidden=o.encoder_hidden_size if o.prefix_projection else 0,
                      prefix_token_dim=width, prefix_layers=layers)


def apply(model, spec, options):
    from peft import PrefixTuningConfig, get_peft_model

    return get_peft_model(model, PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=options.num_virtual_tokens,
        prefix_projection=options.prefix_projection, encoder_hidden_size=options.encoder_hidden_size))


METHOD = Method(
    name="prefix", title="Prefix tuning", where="attention keys and values (learned virtual tokens in every layer)",
    explanation="Learns extra keys and values that every attention layer sees before the real tokens, as if "
                "a learned prefix were always present.",
    when_to_use="Generation tasks on smaller models where prompt tuning is too weak, and composable behaviours.",
    default_lr=1e-2, options_type=PrefixOptions, mergeable=False,
    merge_reason="Cannot merge: it adds extra keys and values to every attention layer, which enlarge the "
                 "attention (and the KV cache) rather than change a weight.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, textbook="prefix",
    peft_type="PREFIX_TUNING", combinations=("kv_concat",), artifact="key/value prefix")
