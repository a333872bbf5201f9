"""FourierFT (Gao et al. 2024, "Parameter-Efficient Fine-Tuning with Discrete Fourier Transform"), built by PEFT
(``peft.tuners.fourierft``).

Each adapted linear layer learns n_frequency coefficients of ΔW's 2-D Fourier spectrum, at positions drawn
once from random_loc_seed (the same positions for every layer of a shape); ΔW is the real part of the inverse
FFT of that sparse spectrum, times ``scaling``. So n_frequency trainable parameters per layer, whatever its
width: fewer than LoRA's r·(in+out) once a layer is wide.

FLOPs, as ``peft.tuners.fourierft.layer.FourierFTLinear`` runs them: each forward scatters the coefficients
into an out×in spectrum and runs an inverse 2-D FFT (not a matmul: torch's counter does not count it, and
neither does this formula; its real cost is about out·in·log₂(out·in) operations per forward), then applies
ΔW as a second dense product F.linear(x, ΔW) beside the frozen one. Merged, ΔW folds into W: no overhead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("fourierft", "FourierFT", conv1d=True)


@dataclass
class FourierFTOptions:
    n_frequency: int = option(500, "Trained spectral coefficients per layer (PEFT's FourierFTConfig.n_frequency; "
                              "PEFT's default is 1000, 500 here so that small layers, such as the demo model's "
                              "16×32 key projection, can take it: at most in·out).", min=1, max=10**8)
    scaling: float = option(150.0, "ΔW is multiplied by this (as LoRA's alpha/r); the paper used 300 for LLaMA "
                            "instruction tuning.", min=0.0, max=1e6)
    random_loc_seed: int = option(777, "Seed of the coefficients' positions in the spectrum.", min=0,
                                  max=2**31 - 1)
    target_preset: str = preset_option("FourierFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def check(m, options):
    if options.n_frequency > m.in_features * m.out_features:
        raise ExplorerError(f"PEFT: n_frequency ({options.n_frequency}) must be at most in·out of every target; "
                            f"{m.name} has {m.in_features}·{m.out_features} = {m.in_features * m.out_features:,}.")


def per_module(m, options):
    return options.n_frequency, f"{options.n_frequency} coefficients"


def products(m, options):
    dense = 2 * m.in_features * m.out_features  # F.linear(x, ΔW) per token; ΔW trains (through the FFT)
    return (Product(dense, dense, dense),)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.fourierft.layer.FourierFTLinear.forward``), in elements
    at the activations' width: ΔW (``get_delta_weight``: the real part of ifft2 of the dense spectrum, out×in, a new
    tensor every forward), which F.linear(x, ΔW) keeps for its input's gradient where that input needs one
    (explorer.methods.saved_tensors); and the coefficients' positions (``self.indices``, 2 × n_frequency int64, a
    plain tensor, not a buffer) that the spectrum's index_put keeps for the coefficients' gradient: 16 bytes per
    coefficient, counted as 4 elements (exact at float32 activations)."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    delta = sum(arch.by_name[n].out_features * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
    return delta + 4 * options.n_frequency * len(names)


def make_config(spec, options):
    from peft import FourierFTConfig

    return peft_config(FourierFTConfig, n_frequency=options.n_frequency, scaling=options.scaling,
                       random_loc_seed=options.random_loc_seed,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="fourierft", title="FourierFT", where="linear weights (a few learned Fourier coefficients of the update)",
    explanation="Freezes the model and learns, for chosen linear layers, a few coefficients of the update's 2-D "
                "Fourier spectrum at fixed random positions; the update ΔW is their inverse FFT. The count per "
                "layer is n_frequency, whatever the layer's width.",
    when_to_use="When the adapter must be as small as possible per layer on wide models; it trains best with a "
                "large scaling and learning rate.",
    default_lr=1e-2, options_type=FourierFTOptions, mergeable=True,
    merge_reason="ΔW (the inverse FFT of the learned spectrum) has the shape of W, so it folds into W: zero "
                 "inference overhead.",
    peft_type="FOURIERFT", artifact="FourierFT adapter", in_default_race=False,
    literature=("Gao et al. 2024 (FourierFT, abstract) claim comparable or better performance than LoRA with far "
                "fewer trainable parameters: instruction tuning of LLaMA2-7B with 0.064M parameters against "
                "LoRA's 33.5M.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
