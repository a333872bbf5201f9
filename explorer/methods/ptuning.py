"""P-tuning (Liu et al. 2021, "GPT Understands, Too"), built by PEFT (``peft.tuners.p_tuning``, PEFT's PromptEncoder).

Like prompt tuning, n soft tokens are prepended to every input; unlike it, they are not trained directly: a small
network (the reparameterisation) turns n learned embeddings into them, and both train. PEFT's PromptEncoder
(``peft/tuners/p_tuning/model.py``) is either an MLP, d→h→h→d with ReLUs (three linear layers whatever
encoder_num_layers says), or a bidirectional LSTM of encoder_num_layers layers with h units per direction followed by
an MLP 2h→2h→d. h is encoder_hidden_size, the model's width d when unset (peft.utils.other.
_prepare_prompt_learning_config).

Trained: the n×d embedding and the network. Saved: only its output, the n×d soft prompt (PEFT's
get_prompt_embedding_to_save runs the encoder once), which a reloaded adapter uses as prompt tuning's would.

FLOPs: the base model's, on n more tokens per sequence (as prompt tuning), plus the encoder, which PEFT runs on every
sequence's copy of the virtual tokens (PeftModel.get_prompt expands them to the batch): per sequence, each linear
2·n·in·out, trained, so its backward is twice that. The LSTM (torch's, as the meta device decomposes it) runs its
input and recurrent products on every step, 2·(in + h)·4h per token and direction; in backward only the first step's
recurrent product has no input gradient (its initial state is zero and not trained).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term


@dataclass
class PTuningOptions:
    num_virtual_tokens: int = option(20, "Number of soft tokens prepended to the input.", min=1, max=1024)
    encoder_reparameterization_type: str = option("MLP", "The network that makes the soft tokens: an MLP "
                                                  "(PEFT's recommended) or a bidirectional LSTM followed by an MLP.",
                                                  choices=("MLP", "LSTM"))
    encoder_hidden_size: int = option(0, "Hidden size of that network; 0 = the model's width (PEFT's default).",
                                      min=0, max=65536)
    encoder_num_layers: int = option(2, "Layers of the LSTM (the MLP always has three linear layers).", min=1,
                                     max=16)
    encoder_dropout: float = option(0.0, "Dropout between the LSTM's layers.", min=0.0, max=0.9)


def hidden_size(spec, o) -> int:
    return o.encoder_hidden_size or spec.arch.hidden


def validate(spec, o) -> None:
    if o.encoder_reparameterization_type == "MLP" and o.encoder_num_layers != 2:
        raise ExplorerError("P-tuning: encoder_num_layers sets the LSTM's depth; PEFT's MLP always has three linear "
                            "layers and ignores it (leave it at 2, or choose LSTM).")


def linear_term(label: str, fan_in: int, fan_out: int) -> Term:
    count = fan_in * fan_out + fan_out
    return Term(label, count, f"{fan_in}·{fan_out} + {fan_out} = {count:,}")


def terms(spec, o) -> list[Term]:
    validate(spec, o)
    d, h, n = spec.arch.hidden, hidden_size(spec, o), o.num_virtual_tokens
    out = [Term("prompt embedding", n * d, f"{n}·{d} = {n * d:,}")]
    if o.encoder_reparameterization_type == "MLP":
        return out + [linear_term("MLP layer 1", d, h), linear_term("MLP layer 2", h, h),
                      linear_term("MLP layer 3", h, d)]
    # nn.LSTM, per layer and direction: weight_ih (4h × its input), weight_hh (4h × h) and two 4h biases
    first = 2 * (4 * h * (d + h) + 8 * h)
    out.append(Term("LSTM layer 1", first, f"2 directions·(4·{h}·({d} + {h}) + 2·4·{h}) = {first:,}"))
    if o.encoder_num_layers > 1:
        deeper, more = 2 * (4 * h * (2 * h + h) + 8 * h), o.encoder_num_layers - 1
        out.append(Term(f"LSTM layers 2–{o.encoder_num_layers}", deeper * more,
                        f"2 directions·(4·{h}·(2·{h} + {h}) + 2·4·{h}) × {more} = {deeper * more:,}"))
    return out + [linear_term("MLP layer 1", 2 * h, 2 * h), linear_term("MLP layer 2", 2 * h, d)]


def encoder_products(spec, o) -> tuple:
    """The encoder's matmuls on one sequence's n virtual tokens: (forward, backward) as Products."""
    d, h, n = spec.arch.hidden, hidden_size(spec, o), o.num_virtual_tokens

    def linear(fan_in, fan_out):  # its input depends on the trained embedding, its weight trains
        flops = 2 * n * fan_in * fan_out
        return Product(flops, 2 * flops)

    if o.encoder_reparameterization_type == "MLP":
        return linear(d, h), linear(h, h), linear(h, d)
    out = []
    for layer in range(o.encoder_num_layers):
        fan_in = d if layer == 0 else 2 * h
        flops = 2 * 2 * n * (fan_in + h) * 4 * h  # both directions, every step
        first_step = 2 * 2 * h * 4 * h            # the zero initial state's recurrent product: no input gradient
        out.append(Product(flops, 2 * flops - first_step))
    return (*out, linear(2 * h, 2 * h), linear(2 * h, d))


def adaptation(spec, o) -> Adaptation:
    return Adaptation(prompt_tokens=o.num_virtual_tokens, prompt_encoder=encoder_products(spec, o))


def apply(model, spec, o):
    from peft import PromptEncoderConfig, get_peft_model

    validate(spec, o)
    return get_peft_model(model, PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens,
        encoder_reparameterization_type=o.encoder_reparameterization_type,
        encoder_hidden_size=o.encoder_hidden_size or None, encoder_num_layers=o.encoder_num_layers,
        encoder_dropout=o.encoder_dropout))


METHOD = Method(
    name="ptuning", title="P-tuning", where="input embeddings (soft tokens made by a small trained network)",
    explanation="Prepends a few learned 'soft tokens' to every input, as prompt tuning does, but makes them with a "
                "small network (an MLP or an LSTM) that trains with them; once trained, only the tokens it made are "
                "kept. The model itself is unchanged.",
    when_to_use="Where prompt tuning trains unsteadily or slowly: the network couples the soft tokens, which the "
                "paper found easier to optimise. Costs like prompt tuning once trained.",
    default_lr=1e-3, options_type=PTuningOptions, mergeable=False,
    merge_reason="Cannot merge: it adds extra tokens to every input, which no change of weights can replace.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=validate, peft_type="P_TUNING",
    saved_params=lambda spec, o: o.num_virtual_tokens * spec.arch.hidden,  # the soft prompt, not the encoder
    artifact="soft prompt", in_default_race=False,
    literature=("Liu et al. 2021 (GPT Understands, Too, abstract) claim that with p-tuning GPTs are better than or "
                "comparable to similar-sized BERTs on natural-language understanding, and that the best GPT recovers "
                "64% (P@1) of world knowledge on the LAMA probe, over 20 points above the previous best.",))
