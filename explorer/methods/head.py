"""Feature extraction: a frozen backbone and a trainable head only.

'lm': only the language-model head trains (vocab·d_model; with tied embeddings it first gets its
own copy, so the input embeddings stay frozen). 'classifier': mean-pooled last hidden states and a new linear
layer of d_model·classes + classes parameters.
"""

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method, Term, freeze


@dataclass
class HeadOptions:
    head_type: str = option("lm", "Train the existing LM head, or a new pooling + linear classifier head.",
                            choices=("lm", "classifier"))
    num_classes: int = option(2, "Classes of the classifier head.", min=2, max=100000)


def terms(spec, o):
    a = spec.arch
    if o.head_type == "classifier":
        count = a.hidden * o.num_classes + o.num_classes
        return [Term("classifier head", count, f"{a.hidden}·{o.num_classes} + {o.num_classes} = {count:,}")]
    tied = " (an untied, trainable copy of the tied embeddings)" if a.tied else ""
    return [Term("lm_head" + tied, a.vocab * a.hidden, f"{a.vocab}·{a.hidden} = {a.vocab * a.hidden:,}")]


def adds_params(spec, o) -> bool:
    """A classifier is a new layer; the LM head of a tied model becomes its own copy; else it exists."""
    return o.head_type == "classifier" or spec.arch.tied


def check_training(o) -> None:
    if o.head_type == "classifier":
        raise ExplorerError("The Fine-tune tab trains language-model heads; a classifier head needs labelled "
                            "classes, which the chat datasets do not provide. Choose head_type=lm.")


def apply(model, spec, o):
    freeze(model)
    if o.head_type == "classifier":
        from .own_modules import HeadClassifier

        return HeadClassifier(model, o.num_classes)
    head = model.get_output_embeddings()
    if spec.arch.tied:
        # Tied models share one tensor between input embeddings and LM head. Training it would train
        # the embeddings too and make backward run through every layer; a head-only fine-tune gets
        # its own copy instead, and the backbone stays frozen.
        import torch

        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    head.weight.requires_grad_(True)
    return model


METHOD = Method(
    name="head", title="Feature extraction (head only)", where="the output head only (backbone frozen)",
    explanation="Keeps the whole backbone frozen and trains only a head on top of its final hidden states: "
                "the LM head, or a new pooling + linear classifier.",
    when_to_use="Classification and embeddings, where the pretrained representations are already right.",
    default_lr=1e-3, options_type=HeadOptions, mergeable=True,
    new_model=True, adds_params=adds_params, check_training=check_training,
    merge_reason="Nothing to merge: training a head produces a new model head directly; inference costs "
                 "what the head costs.",
    uses_peft=False, terms=terms,
    adaptation=lambda spec, o: Adaptation(head="classifier" if o.head_type == "classifier" else "lm",
                                          num_classes=o.num_classes),
    apply=apply)
