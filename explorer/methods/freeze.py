"""Freeze tuning, as LLaMA-Factory offers it (``finetuning_type: freeze``): every weight of the last N decoder
blocks trains (the first N with a negative number), the rest of the model stays frozen. Its option keeps
LLaMA-Factory's name, freeze_trainable_layers (its default is 2).

Built with PEFT's LN tuning mechanism on whole blocks (``LNTuningConfig`` with the blocks as targets): PEFT
trains a copy of each targeted module and merging swaps the copy in, which gives saving, reloading and merging
for free. So the count is the chosen blocks' own parameters, and PEFT's build holds them twice until merged.
FLOPs: the trained blocks' products pay their weight gradients, and every product from the first trained
block up pays input gradients; the blocks below it run forward only (explorer.costs.flops).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term


@dataclass
class FreezeOptions:
    freeze_trainable_layers: int = option(2, "LLaMA-Factory's freeze_trainable_layers: how many decoder blocks "
                                          "train, counted from the top (negative: from the bottom).",
                                          min=-1024, max=1024)


def blocks(spec, options) -> list[str]:
    """The full names of the decoder blocks that train."""
    arch, n = spec.arch, options.freeze_trainable_layers
    if n == 0 or abs(n) > arch.layers:
        raise ExplorerError(f"freeze_trainable_layers must be between 1 and {arch.layers} blocks (or -1 to "
                            f"-{arch.layers} for the first ones): this model has {arch.layers}; got {n}.")
    chosen = range(arch.layers - n, arch.layers) if n > 0 else range(-n)
    return [f"{arch.layers_path}.{i}" for i in chosen]


def terms(spec, options) -> list[Term]:
    arch = spec.arch
    names = blocks(spec, options)
    out = []
    by_count: dict[int, list[int]] = {}
    for name in names:
        by_count.setdefault(arch.params_under(name), []).append(arch.locate(name)[0])
    for count, layers in by_count.items():
        n = len(layers)
        out.append(Term(f"decoder block ({peft_targets.layer_span(layers)})", count * n,
                        f"{count:,} × {n} = {count * n:,}"))
    return out


def adaptation(spec, options) -> Adaptation:
    """The blocks' modules with weights of their own, as the FLOP formula reads trained modules (by name inside
    a block)."""
    arch = spec.arch
    prefixes = tuple(name + "." for name in blocks(spec, options))
    return Adaptation(trainable_modules=frozenset(m.name for m in arch.modules
                                                  if m.own_params and m.name.startswith(prefixes)))


def apply(model, spec, options):
    from peft import LNTuningConfig, get_peft_model

    return get_peft_model(model, LNTuningConfig(task_type="CAUSAL_LM", target_modules=blocks(spec, options)))


METHOD = Method(
    name="freeze", title="Freeze tuning", where="every weight of the last few decoder blocks",
    explanation="Full fine-tuning of the top N decoder blocks only; every block below them, the embeddings and "
                "the LM head stay frozen. The blocks below need no backward pass at all.",
    when_to_use="A middle ground between LoRA and full fine-tuning that LLaMA-Factory offers: more capacity than "
                "a low-rank update, far less memory than training every block.",
    default_lr=1e-4, options_type=FreezeOptions, mergeable=True,
    merge_reason="Nothing is added beside the blocks: merging swaps each original block for its trained copy, so "
                 "the merged model costs exactly what the base costs.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply,
    validate=lambda spec, options: blocks(spec, options), peft_type="LN_TUNING", artifact="trained blocks",
    in_default_race=False,
    saved_bytes_per_param=2,  # PEFT saves the trained copies at the model's precision: the Calculator assumes bf16
    literature=("LLaMA-Factory (Zheng et al. 2024, Table 1 and its docs) offers freeze tuning beside LoRA and full "
                "tuning; the claim behind it is that the top layers hold the most task-specific features, so "
                "training them alone recovers much of full fine-tuning at a fraction of the memory.",))
