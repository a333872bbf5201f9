"""Context-aware prompt tuning, CPT (Blau et al. 2024, "Context-aware Prompt Tuning: Advancing In-Context Learning
with Adversarial Methods"), built by PEFT (``peft.tuners.cpt``).

The soft prompt is a context of real training examples: their tokens' embeddings, frozen (PEFT's CPTEmbedding
``embedding``), plus a trained change of each (``delta_embedding``, n×d, starting at zero) that every forward projects
back into a small ball (norm ≤ opt_projection_epsilon·√(d/2048), ``get_projection``), so the context stays close to
the real examples. A backward hook keeps the change of the examples' answer tokens at zero: only their prompts move.
The loss is PEFT's CPT loss: the next-token loss on the answers of both the context's examples and the batch's,
optionally decayed for older context examples (opt_weighted_loss_type "decay").

Here the context is the run's first training examples, cut to num_virtual_tokens tokens (PEFT's ``cpt_token_ids``),
each example's answer tokens typed as labels and the rest as its input (``cpt_tokens_type_mask``: 4j+4 and 4j+2 for
example j); each batch's answers are typed the same way (PeftModel's ``input_type_mask``). The Calculator counts a
context of num_virtual_tokens tokens: n·d trained and n·d frozen.

FLOPs: prompt tuning's on n more tokens (the embedding sum and the projection are element-wise). The projection
tests its norms for zero (``torch.any``), which the meta device cannot answer: tests/test_peft_tuners_prompts.py
counts its FLOPs on a real build.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term

LABEL, INPUT = 4, 2  # CPT's token types, per example j: 4j+1 input template, 4j+2 input, 4j+3 output template, 4j+4 label


@dataclass
class CPTOptions:
    num_virtual_tokens: int = option(64, "Tokens of context: the run's first training examples, cut to this many "
                                     "(PEFT's cpt_token_ids).", min=2, max=4096)
    opt_weighted_loss_type: str = option("none", "Weigh the context examples' loss equally (none) or less for the "
                                         "earlier ones (decay).", choices=("none", "decay"))
    opt_loss_decay_factor: float = option(1.0, "Each earlier example's weight is this times the next one's "
                                          "(with decay).", min=0.0, max=1.0)
    # PEFT's default for both is 0.1, a radius of 0.1·√(d/2048): on SmolLM2-135M (d = 576) 0.053, under 2% of its
    # token embeddings' norm (median 3.15), which a short run cannot use (the tiny model's loss fell 9.6% in 25
    # memorising steps, where every other method falls 10%); 1.0 lets the context move by about a sixth of a token's
    # norm there (the tiny model's loss then fell 18%). 0.1 is PEFT's and the paper's setting.
    opt_projection_epsilon: float = option(1.0, "How far an example's input embeddings may move (norm, scaled by "
                                           "√(width/2048)); PEFT's default is 0.1.", min=0.0, max=100.0)
    opt_projection_format_epsilon: float = option(1.0, "The same for its template tokens; PEFT's default is 0.1.",
                                                  min=0.0, max=100.0)


def terms(spec, o) -> list[Term]:
    n, d = o.num_virtual_tokens, spec.arch.hidden
    return [Term("context embedding changes", n * d, f"{n}·{d} = {n * d:,}")]


def adaptation(spec, o) -> Adaptation:
    """Prompt tuning's tensors on n more tokens, plus the second loss PEFT computes. ``PeftModel._cpt_forward``
    passes its labels (the context's tokens and the batch's) to the base model, whose own loss then keeps its
    log-softmax (the generic logits term), and ``CPTEmbedding.calculate_loss`` (peft/tuners/cpt/model.py) computes
    the CPT loss again from the logits: CrossEntropyLoss(reduction="none") on a shifted copy keeps that copy's
    log-softmax, batch × (seq - 1) × vocab at the logits' dtype (the activations'), counted per token (one token
    per sequence over). Left out: its int64 shifted labels, the bool mask of the labelled tokens and their
    weights (13 bytes per token beside the vocabulary's 4 per entry), and the context's n int64 token indices
    that the embedding's backward reads (once per forward). Measured with torch's saved-tensor hooks
    (tests/test_memory_saved.py)."""
    return Adaptation(prompt_tokens=o.num_virtual_tokens, saved_per_token=spec.arch.vocab)


def make_config(o, token_ids: list[int], types: list[int]):
    from peft import CPTConfig

    return CPTConfig(task_type="CAUSAL_LM", cpt_token_ids=token_ids, cpt_mask=[1] * len(token_ids),
                     cpt_tokens_type_mask=types, opt_weighted_loss_type=o.opt_weighted_loss_type,
                     opt_loss_decay_factor=o.opt_loss_decay_factor, opt_projection_epsilon=o.opt_projection_epsilon,
                     opt_projection_format_epsilon=o.opt_projection_format_epsilon)


def apply(model, spec, o):
    """A context of num_virtual_tokens placeholder tokens (the Calculator's build: shapes only; training builds its
    context from the run, ``apply_for_training``)."""
    from peft import get_peft_model

    n = o.num_virtual_tokens
    return get_peft_model(model, make_config(o, [0] * n, [INPUT] * (n - 1) + [LABEL]))


def context_of(rows: list[tuple[list[int], list[int]]], n: int) -> tuple[list[int], list[int]]:
    """(token ids, CPT types) of the first n tokens of these (tokens, is-answer flags) examples, example j typed
    4j+2 (its input) and 4j+4 (its answer)."""
    ids, types = [], []
    for j, (tokens, answer) in enumerate(rows):
        ids += tokens
        types += [4 * j + (LABEL if a else INPUT) for a in answer]
        if len(ids) >= n:
            break
    return ids[:n], types[:n]


def apply_for_training(model, spec, o, data):
    from peft import get_peft_model

    rows = []
    for batch in data.batches(4):
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            keep = mask.bool()
            rows.append((ids[keep].tolist(), (labels[keep] != -100).tolist()))
    ids, types = context_of(rows, o.num_virtual_tokens)
    if len(ids) < o.num_virtual_tokens:
        raise ExplorerError(f"CPT: the first training examples hold {len(ids)} tokens, fewer than "
                            f"num_virtual_tokens ({o.num_virtual_tokens}); lower it.")
    if not any(t % 4 == 0 for t in types):
        raise ExplorerError(f"CPT: the first {o.num_virtual_tokens} tokens of the training examples hold no answer, "
                            "so the context teaches nothing; raise num_virtual_tokens.")
    return get_peft_model(model, make_config(o, ids, types))


def batch_types(labels, attention_mask, context_types: list[int]):
    """Each batch token's CPT type, numbered as the example after the context's last: PEFT adds the context's
    largest type to these (``_cpt_forward``), and scores the tokens whose sum is a multiple of 4 (answers), so a
    context cut inside an example's input (largest type 4j+2) needs the batch's answers typed 6, not 4."""
    import torch

    shift = max(context_types)
    base = -shift % 4  # the batch's example j+1: types 4(j+1)+2 (input) and 4(j+1)+4 (answer) once shifted
    return torch.where(labels != -100, base + LABEL, torch.where(attention_mask.bool(), base + INPUT, 0))


def training_loss(model, batch):
    """PEFT's CPT loss, given each batch token's type (``input_type_mask``): it scores the batch's answers and the
    context's (without the types PEFT scores the batch only where the context's last example had an answer)."""
    types = batch_types(batch["labels"], batch["attention_mask"], model.active_peft_config.cpt_tokens_type_mask)
    return model(**batch, input_type_mask=types).loss


METHOD = Method(
    name="cpt", title="Context-aware prompt tuning (CPT)",
    where="input embeddings (a context of real training examples, nudged)",
    explanation="Puts a few real training examples in front of every input, as in-context learning does, and "
                "trains small changes to their embeddings, kept within a tight bound so the examples stay "
                "themselves. The model itself is unchanged.",
    when_to_use="Few-shot tasks, where in-context examples already help and a little training on them should help "
                "more without overfitting them.",
    default_lr=1e-2, options_type=CPTOptions, mergeable=False,
    merge_reason="Cannot merge: it adds a context of extra tokens to every input, which no change of weights can "
                 "replace.",
    uses_peft=True, terms=terms, adaptation=adaptation,
    apply=apply, apply_for_training=apply_for_training, training_loss=training_loss,
    untrained_params=lambda spec, o: o.num_virtual_tokens * spec.arch.hidden,  # the examples' frozen embeddings
    peft_type="CPT", artifact="context prompt", in_default_race=False,
    meta_forward_refusal="CPT's forward tests its embedding changes' norms for zero before projecting them, which "
                         "meta tensors cannot answer (tests/test_peft_tuners_prompts.py counts its FLOPs on real "
                         "tensors)",
    recipe_refusal="its context is built from the run's first training examples, and its loss needs each batch's "
                   "token types, which transformers' Trainer in the recipe's train.py does not pass",
    literature=("Blau et al. 2024 (Context-aware Prompt Tuning, abstract) claim superior accuracy on several "
                "few-shot classification tasks across various language models, avoiding both the overfitting of "
                "optimization-based methods and in-context learning's sensitivity to the choice and order of its "
                "examples.",))
