"""Full fine-tuning: every parameter trains. The reference every PEFT method is measured against."""

from dataclasses import dataclass

from .base import Adaptation, Method, Term


@dataclass
class FullOptions:
    pass


def apply(model, spec, options):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


METHOD = Method(
    name="full", title="Full fine-tuning", where="every weight",
    explanation="Updates every parameter. Most expressive, and most expensive: gradients and optimizer "
                "states for all weights.",
    when_to_use="Large datasets, a big budget, and a need for the last bit of quality.",
    default_lr=2e-5, options_type=FullOptions, mergeable=True,
    new_model=True, adds_params=lambda spec, options: False,
    saved_bytes_per_param=2,  # the whole model, saved at its precision: the Calculator assumes bf16
    merge_reason="Nothing to merge: full fine-tuning produces a new set of weights; zero inference overhead.",
    uses_peft=False,
    terms=lambda spec, o: [Term("all parameters", spec.arch.total_params(),
                                f"every weight of the model = {spec.arch.total_params():,}")],
    adaptation=lambda spec, o: Adaptation(full=True), apply=apply)
