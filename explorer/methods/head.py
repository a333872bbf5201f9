"""Feature extraction: a frozen backbone and a trainable head only.

'lm': only the language-model head trains (vocab·d_model; with tied embeddings it first gets its
own copy, so the input embeddings stay frozen); it trains on chat data. 'classifier': mean-pooled last hidden
states and a new linear layer of d_model·classes + classes parameters, trained on labelled text (the number of
classes comes from the data when it trains). 'embedding': the same pooling and a new projection of
d_model·embedding_dim + embedding_dim parameters, trained contrastively on paraphrase pairs (Sentence-BERT's
mean pooling, Reimers & Gurevych 2019; in-batch negatives as in SimCSE, Gao et al. 2021).
"""

from dataclasses import dataclass

from ..options import option
from .base import Adaptation, Method, Term, freeze

DATA_KINDS = {"lm": "chat", "classifier": "labelled", "embedding": "pairs"}


@dataclass
class HeadOptions:
    head_type: str = option("lm", "Train the existing LM head (chat data), a new pooling + linear classifier head "
                            "(labelled text), or a pooling + projection sentence-embedding head (paraphrase pairs).",
                            choices=tuple(DATA_KINDS))
    num_classes: int = option(2, "Classes of the classifier head (training takes them from the labelled data).",
                              min=2, max=100000)
    embedding_dim: int = option(256, "Width of the embedding head's projection.", min=1, max=65536)
    lora_comparison: bool = option(True, "Classifier only, when training: also train LoRA (r=8, every linear "
                                   "layer) on a sequence-classification copy of the model, for comparison.")


def outputs(o) -> int:
    return o.num_classes if o.head_type == "classifier" else o.embedding_dim


def terms(spec, o):
    a = spec.arch
    if o.head_type in ("classifier", "embedding"):
        n = outputs(o)
        label = "classifier head" if o.head_type == "classifier" else "embedding projection"
        return [Term(label, a.hidden * n + n, f"{a.hidden}·{n} + {n} = {a.hidden * n + n:,}")]
    tied = " (an untied, trainable copy of the tied embeddings)" if a.tied else ""
    return [Term("lm_head" + tied, a.vocab * a.hidden, f"{a.vocab}·{a.hidden} = {a.vocab * a.hidden:,}")]


def adds_params(spec, o) -> bool:
    """A new head is a new layer; the LM head of a tied model becomes its own copy; else it exists."""
    return o.head_type != "lm" or spec.arch.tied


def apply(model, spec, o):
    freeze(model)
    if o.head_type == "classifier":
        from .own_modules import HeadClassifier

        return HeadClassifier(model, o.num_classes)
    if o.head_type == "embedding":
        from .own_modules import HeadEmbedder

        return HeadEmbedder(model, o.embedding_dim)
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
                "the LM head, a new pooling + linear classifier, or a pooling + projection that makes sentence "
                "embeddings.",
    when_to_use="Classification and embeddings, where the pretrained representations are already right.",
    default_lr=1e-3, options_type=HeadOptions, mergeable=True,
    new_model=True, adds_params=adds_params, data_kind=lambda o: DATA_KINDS[o.head_type],
    merge_reason="Nothing to merge: training a head produces a new model head directly; inference costs "
                 "what the head costs.",
    uses_peft=False, terms=terms,
    adaptation=lambda spec, o: Adaptation(head=o.head_type, num_classes=0 if o.head_type == "lm" else outputs(o)),
    apply=apply,
    literature=("Devlin et al. 2019 (BERT, §5.3) report the feature-based approach (frozen BERT, features of its "
                "top four layers) 0.3 F1 behind fine-tuning the whole model on CoNLL-2003 named entities.",
                "The textbook section's scenario (b) advises a new pooling head on a frozen backbone for sentence "
                "embeddings, not LoRA (which changes generation) and not full fine-tuning (overkill)."))
