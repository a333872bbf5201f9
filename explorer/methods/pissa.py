"""PiSSA (Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language
Models"), PEFT's ``init_lora_weights="pissa"``.

LoRA's architecture and parameter count, r·(in + out) per adapted layer, with another starting point: the top r
singular values and vectors of W go into B·A, and the base keeps only the residual W_res = W − (alpha/r)·B₀·A₀
(PEFT's ``LoraLayer.pissa_init``). So initialisation changes the frozen base weights, and a trained adapter
only makes sense on W_res. Saving therefore uses PEFT's conversion (``save_pretrained(...,
path_initial_model_for_weight_conversion=...)``, ``LoraModel.subtract_mutated_init``): the adapter as
initialised is kept before training, and the saved adapter is ΔW = B·A − B₀·A₀ written as a LoRA of rank 2r
([B | −B₀]·[A; A₀]) that applies to the *original* base. OLoRA (olora.py) reuses this file.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..options import option
from .base import Method
from .lora import LoraOptions, lora_adaptation, lora_terms, peft_lora_config, resolve_targets

INITIAL_ADAPTER = "initial_adapter"  # PEFT loads it as an adapter of this name: no dots allowed


@dataclass
class PissaOptions(LoraOptions):
    # The PiSSA paper trains with alpha = r (scaling 1) and no dropout (Meng et al. 2024, §5 set-up).
    lora_alpha: int = option(8, "Scaling numerator: the update is multiplied by alpha/r; PiSSA's paper uses "
                             "alpha = r.", min=1, max=65536)
    lora_dropout: float = option(0.0, "Dropout on the adapter path's input; PiSSA's paper uses none.",
                                 min=0.0, max=0.9)
    init_lora_weights: str = option("pissa", "PEFT's PiSSA initialisation: a full SVD of each weight (pissa), "
                                    "or a fast randomized SVD with that many subspace iterations (pissa_niter_N).",
                                    choices=("pissa", "pissa_niter_4", "pissa_niter_16"))


def on_meta_device(model) -> bool:
    return any(p.device.type == "meta" for p in model.parameters())


def apply_with_init(model, spec, options, init: str):
    """LoRA built by PEFT with ``init``. A weightless meta-device model (the Calculator's exact count) has no
    singular vectors to compute: it gets LoRA's default initialisation, whose modules and shapes are the same."""
    from peft import get_peft_model

    config = peft_lora_config(spec, options)
    if not on_meta_device(model):
        config = dataclasses.replace(config, init_lora_weights=init)
    with warnings.catch_warnings():
        # PEFT warns that the base weights changed and suggests converting on save: keep_initial_adapter does.
        warnings.filterwarnings("ignore", message=".*changes the base weights of the model.*")
        return get_peft_model(model, config)


def keep_initial_adapter(model, scratch) -> dict:
    """Save the adapter as initialised (PEFT's recipe: docs "LoRA", section PiSSA; its example
    examples/pissa_finetuning): saving the trained model with this folder converts it to a LoRA of the
    original base, so the run's adapter loads, merges and compares like any LoRA adapter."""
    folder = Path(scratch) / INITIAL_ADAPTER
    model.save_pretrained(str(folder), safe_serialization=True)
    return {"path_initial_model_for_weight_conversion": str(folder)}


def mutating_init_method(name: str, title: str, options_type, init_of, **text) -> Method:
    """A LoRA whose initialisation moves part of W into the adapter (PiSSA, OLoRA): LoRA's counts and FLOPs,
    saved as a rank-2r LoRA of the original base."""
    return Method(
        name=name, title=title, options_type=options_type, default_lr=1e-3, mergeable=True, uses_peft=True,
        terms=lora_terms, adaptation=lora_adaptation,
        apply=lambda model, spec, options: apply_with_init(model, spec, options, init_of(options)),
        validate=lambda spec, options: resolve_targets(spec.arch, options), family="lora", peft_type="LORA",
        artifact="LoRA adapter (converted for the original base)", in_default_race=False,
        before_training=keep_initial_adapter,
        # The saved adapter is a LoRA of the original base: it shares a batch and scales as LoRA's does. (Not in the
        # composition experiment, whose demo trains two runs of every method that combines.)
        mixed_batch=True, strength=True,
        recipe_refusal="its initialisation changes the base weights and its saved adapter is converted into a LoRA "
                       "of the original base (PEFT's path_initial_model_for_weight_conversion), which the recipe's "
                       "train.py does not do",
        saved_bytes_per_param=8,  # the saved adapter has rank 2r: twice the trainable weights, in float32
        merge_reason="Training changes B·A away from B₀·A₀ on the residual base; saved as the LoRA "
                     "ΔW = B·A − B₀·A₀ of the original weights, it folds into W like any LoRA (zero overhead).",
        **text)


METHOD = mutating_init_method(
    "pissa", "PiSSA", PissaOptions, lambda options: options.init_lora_weights,
    where="linear weights (LoRA started from the top singular vectors of W)",
    explanation="LoRA with a different start: B·A begins as the top-r singular part of each weight, and the "
                "frozen base keeps only the rest, so training moves the weight's most important directions "
                "first. The same parameters as LoRA; the base weights change at initialisation, so the saved "
                "adapter is converted (ΔW = B·A − B₀·A₀, rank 2r) to apply to the original base. LoftQ, the "
                "same idea for a 4-bit base, is not offered: PEFT 0.21.2 computes its initialisation on a GPU "
                "only (NVIDIA or Intel; the reason: "
                "https://github.com/huggingface/peft/blob/v0.21.2/src/peft/utils/loftq_utils.py#L70), and this "
                "app trains on CPUs.",
    when_to_use="Where LoRA converges slowly: a drop-in LoRA with a better starting point, at the cost of an "
                "SVD of every adapted weight before training.",
    literature=("Meng et al. 2024 (PiSSA, abstract) claim PiSSA consistently outperforms LoRA across 12 models "
                "from 184M to 70B under identical set-ups, e.g. GSM8K with Mistral-7B 72.86% vs LoRA's 67.7%, "
                "and converges faster.",
                "They also claim that with a fast SVD the initialisation takes only a few seconds."))
