"""Houlsby bottleneck adapters (Houlsby et al. 2019), built by the project's own module.

Each adapter: down-projection d_model→d_a (+bias), GELU, up-projection d_a→d_model (+bias),
residual: 2·d_model·d_a + d_a + d_model parameters, after attention and/or after the FFN.
"""

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, freeze, per_layer_term


@dataclass
class AdapterOptions:
    bottleneck_dim: int = option(64, "Bottleneck size d_a of each adapter.", min=1, max=65536)
    after_attention: bool = option(True, "Insert an adapter after each attention sub-layer.")
    after_ffn: bool = option(True, "Insert an adapter after each feed-forward sub-layer.")


def validate(spec, o):
    if not (o.after_attention or o.after_ffn):
        raise ExplorerError("Choose where adapters go: after attention, after the FFN, or both.")


def terms(spec, o):
    validate(spec, o)
    h, d = spec.arch.hidden, o.bottleneck_dim
    per = 2 * h * d + d + h
    out = []
    for where, on in (("adapter after attention", o.after_attention), ("adapter after FFN", o.after_ffn)):
        if on:
            out.append(per_layer_term(where, per, spec.arch.layers, f"(2·{h}·{d} + {d} + {h})"))
    return out


def apply(model, spec, o):
    from .own_modules import add_houlsby_adapters

    validate(spec, o)
    freeze(model)
    add_houlsby_adapters(model, o.bottleneck_dim, after_attention=o.after_attention, after_ffn=o.after_ffn)
    return model


METHOD = Method(
    name="adapter", title="Houlsby adapters", where="residual stream (a bottleneck MLP after each sub-layer)",
    explanation="Inserts a small bottleneck MLP (down, GELU, up, plus a skip connection) after attention "
                "and/or the feed-forward block of every layer. The up-projection starts at zero, so training "
                "starts from the base model exactly.",
    when_to_use="When a non-linear change of representations is wanted and the extra inference cost is fine.",
    default_lr=1e-3, options_type=AdapterOptions, mergeable=False,
    merge_reason="Cannot merge: the adapter is a non-linear block (GELU) in the residual stream; no single "
                 "weight matrix reproduces it, so it runs at inference forever.",
    uses_peft=False, terms=terms,
    adaptation=lambda spec, o: Adaptation(adapter_dim=o.bottleneck_dim, adapter_after_attention=o.after_attention,
                                          adapter_after_ffn=o.after_ffn),
    apply=apply, validate=validate, textbook="adapter")
