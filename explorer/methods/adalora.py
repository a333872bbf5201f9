"""AdaLoRA (Zhang et al. 2023, "AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning"), built
by PEFT (``peft.tuners.adalora``).

ΔW = P·Λ·Q in SVD form, scaled by alpha/r: per adapted linear layer A = Q ∈ ℝ^{init_r×in} (right singular vectors),
E = Λ ∈ ℝ^{init_r×1} (singular values) and B = P ∈ ℝ^{out×init_r} (left singular vectors), so
init_r·(in + out + 1) trainable parameters (PEFT's ``AdaLoraLayer.update_layer``), plus one frozen ``ranknum``
per layer that PEFT neither trains nor saves. While training, PEFT's ``RankAllocator`` scores each triplet
(A row, E entry, B column) by |w·∂L/∂w| smoothed over steps and, on a cubic schedule from ``tinit`` to
``total_step − tfinal``, zeroes the singular values of the least important ones until target_r·layers remain:
the count of *useful* parameters shrinks toward target_r, but the parameters stay (masked, not removed) until
saving, where PEFT keeps only the surviving triplets (its ``rank_pattern``).

Training needs three things a plain LoRA does not, each a hook of the Method (explorer.methods.base): the
schedule's length ``total_step`` (the run's steps unless set), ``model.base_model.update_and_allocate(step)`` after
each optimizer step and before the gradients are cleared (PEFT's docstring), and the loss PEFT's
``AdaLoraModel.forward`` returns when it gets labels: the language-model loss plus ``orth_reg_weight`` times the mean
‖AAᵀ − I‖_F, ‖BᵀB − I‖_F (the orthogonality the SVD form needs). The held-out loss stays the language-model loss.

FLOPs, as ``SVDLinear.forward`` runs them: ``x @ (A·E)ᵀ @ Bᵀ``, the same two products as LoRA's at rank init_r
(the elementwise A·E and the scaling are not matmuls); the regulariser's AAᵀ and BᵀB (2·r²·(in + out) per layer and
step, not per token) are left out, as torch's counter sees no labels in a forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ExplorerError
from ..options import option
from .base import Adaptation, Method
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, grouped_terms, modules_option, peft_config, preset_option

TUNER = Tuner("adalora", "AdaLoRA", conv1d=True)  # PEFT's SVDLinear takes Conv1D (fan_in_fan_out)


@dataclass
class AdaLoraOptions:
    init_r: int = option(12, "Rank each layer starts with (PEFT's AdaLoraConfig.init_r): the parameters are built "
                         "at this rank.", min=1, max=4096)
    target_r: int = option(8, "Average rank per layer the budget shrinks to (target_r): fewer than init_r, so "
                           "that ranks are reallocated.", min=1, max=4096)
    tinit: int = option(0, "Warm-up steps before any rank is masked.", min=0, max=1_000_000)
    tfinal: int = option(0, "Last steps that train the final ranks without masking more.", min=0, max=1_000_000)
    deltaT: int = option(1, "Steps between two rank allocations.", min=1, max=1_000_000)
    beta1: float = option(0.85, "Smoothing of the importance scores (an exponential moving average), in (0, 1).",
                          min=0.01, max=0.99)
    beta2: float = option(0.85, "Smoothing of their uncertainty, in (0, 1).", min=0.01, max=0.99)
    orth_reg_weight: float = option(0.5, "Weight of the orthogonality penalty on A and B added to the training "
                                    "loss.", min=0.0, max=100.0)
    total_step: int = option(0, "Steps the budget schedule spans (PEFT's total_step); 0 = the run's own steps.",
                             min=0, max=1_000_000)
    lora_alpha: int = option(8, "Scaling numerator: the update is multiplied by alpha/init_r.", min=1, max=65536)
    lora_dropout: float = option(0.0, "Dropout on the update's input during training.", min=0.0, max=0.9)
    target_preset: str = preset_option("AdaLoRA")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def per_module(m, options):
    r = options.init_r
    return r * (m.in_features + m.out_features + 1), f"{r}·({m.in_features}+{m.out_features}+1)"


def make_config(spec, options, steps: int = 0):
    """PEFT's AdaLoraConfig. ``total_step``: the option, else the run's ``steps``; a build with neither (the
    Calculator's count, a reload) gets the shortest schedule PEFT accepts, which changes no shape."""
    from peft import AdaLoraConfig

    if options.target_r >= options.init_r:  # PEFT's allocator would fail at its first step (torch.kthvalue, k ≤ 0)
        raise ExplorerError(f"AdaLoRA prunes ranks from init_r down to target_r: target_r ({options.target_r}) must "
                            f"be smaller than init_r ({options.init_r}).")
    total = options.total_step or steps or options.tinit + options.tfinal + 1
    if options.tinit >= total - options.tfinal:  # PEFT's own check, with the numbers
        length = "total_step" if options.total_step else "the run's steps"
        raise ExplorerError(f"AdaLoRA's schedule leaves no step to reallocate ranks in: tinit ({options.tinit}) must "
                            f"be below {length} minus tfinal ({total} − {options.tfinal}). Lower tinit or tfinal, "
                            "or train more steps.")
    conv1d = TUNER.conv1d_targets(spec, options)
    return peft_config(AdaLoraConfig, init_r=options.init_r, target_r=options.target_r, tinit=options.tinit,
                       tfinal=options.tfinal, deltaT=options.deltaT, beta1=options.beta1, beta2=options.beta2,
                       orth_reg_weight=options.orth_reg_weight, total_step=total, lora_alpha=options.lora_alpha,
                       lora_dropout=options.lora_dropout, fan_in_fan_out=conv1d, **TUNER.peft_kwargs(spec, options))


def terms(spec, options):
    return grouped_terms(spec, TUNER.targets(spec, options), lambda m: per_module(m, options))


def adaptation(spec, options):
    """LoRA's activations at rank init_r, plus what AdaLoRA keeps of its own:
    - saved_per_step, over the adapted layers: the product A·E (init_r × in) that ``x @ (A·E)ᵀ``
      (``SVDLinear.forward``) keeps for its input's gradient where that input needs one
      (explorer.methods.saved_tensors); ``ranknum + 1e-5`` (1) that the division by it keeps; and the orthogonality
      regulariser's (``AdaLoraModel.forward``) AAᵀ − I and BᵀB − I (init_r² each) with their norms (1 each), kept
      by torch.norm;
    - training_state: ``RankAllocator.update_ipt``'s ipt, exp_avg_ipt and exp_avg_unc, one fp32 tensor each the size
      of every trained lora_A, lora_E and lora_B: 3 × the trainable parameters."""
    arch, r = spec.arch, options.init_r
    names = TUNER.targets(spec, options)
    block = [n for n in names if arch.layer_of(n) is not None]
    products = sum(r * arch.by_name[n].in_features for n in inputs_with_grad(arch, block))
    regulariser = len(names) * 2 * (r * r + 1)
    trained = sum(per_module(arch.by_name[n], options)[0] for n in names)
    return Adaptation(lora={n: r for n in names}, lora_dropout=options.lora_dropout,
                      saved_per_step=products + len(block) + regulariser, training_state=3 * trained)


def build(model, config):
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():  # PEFT warns that LoraConfig's r is unused: init_r is AdaLoRA's rank
        warnings.filterwarnings("ignore", message=".*`r` is not used in AdaLora.*")
        return get_peft_model(model, config)


def apply(model, spec, options):
    return build(model, make_config(spec, options))


def apply_for_training(model, spec, options, data):
    return build(model, make_config(spec, options, data.steps))


def training_loss(model, batch):
    """PEFT's own loss: ``AdaLoraModel.forward`` adds the orthogonal regularisation when labels are given."""
    return model(**batch).loss


def after_step(model, step, total_steps):
    """PEFT's rank allocation (``AdaLoraModel.update_and_allocate``): updates the importance scores from this
    step's gradients and masks the singular values the budget no longer covers."""
    model.base_model.update_and_allocate(step)


def ranks_kept(model) -> dict[str, int]:
    """Each adapted layer's rank still in use: its singular values (E) not masked to zero."""
    return {name.rsplit(".lora_E", 1)[0]: int((p != 0).sum()) for name, p in model.named_parameters()
            if ".lora_E." in name}


def validate(spec, options):
    make_config(spec, options)  # PEFT's own checks of the config


METHOD = Method(
    name="adalora", title="AdaLoRA", where="linear weights (an SVD-shaped update whose ranks are reallocated)",
    explanation="Freezes the model and learns, for chosen linear layers, an update P·Λ·Q in the form of a singular "
                "value decomposition, starting at rank init_r. While training it scores every singular triplet by "
                "how much the loss depends on it and zeroes the least important ones, so layers that matter keep "
                "more rank: the parameters are built at init_r, and the count in use shrinks toward target_r per "
                "layer on average (masked while training, dropped when saved).",
    when_to_use="When the right rank per layer is unknown: it spends a fixed rank budget where the gradients say "
                "it matters. Needs enough steps for its schedule (tinit, tfinal) to reallocate.",
    # Its update B·(A·E) starts from E = 0 and A, B of std 0.02 (PEFT's init), so it grows with the cube of the steps
    # where LoRA's grows linearly. Measured, 10 steps on the tiny model (pirate): held-out loss 14.692 → 14.692 at
    # 1e-3 (LoRA at 1e-3: → 14.582), → 14.676 at 1e-2, → 14.454 at 3e-2. 1e-2 keeps ΔW's singular values (E·alpha/r,
    # A and B held near orthonormal by the regulariser) below about 0.15 over a 20-step run.
    default_lr=1e-2, options_type=AdaLoraOptions, mergeable=True, uses_peft=True,
    merge_reason="P·Λ·Q has the shape of W, so W + (alpha/r)·P·Λ·Q is an ordinary weight: zero inference "
                 "overhead.",
    terms=terms, adaptation=adaptation, apply=apply, validate=validate,
    apply_for_training=apply_for_training, training_loss=training_loss, after_step=after_step,
    untrained_params=lambda spec, options: len(TUNER.targets(spec, options)),  # PEFT's frozen ranknum per layer
    peft_type="ADALORA", artifact="AdaLoRA adapter", in_default_race=False,
    recipe_refusal="it needs PEFT's update_and_allocate after every optimizer step (rank allocation), which "
                   "transformers' Trainer in the recipe's train.py does not call",
    literature=("Zhang et al. 2023 (AdaLoRA, abstract) claim notable improvement over baselines, especially in "
                "low-budget settings, on natural language understanding, question answering and generation, "
                "from allocating the parameter budget among weight matrices by importance score.",))
