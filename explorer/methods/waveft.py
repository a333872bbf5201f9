"""WaveFT (Bilican et al. 2025, "Exploring Sparsity for Parameter Efficient Fine Tuning Using Wavelets"), built by
PEFT (``peft.tuners.waveft``).

Each adapted linear layer learns n_frequency coefficients of ΔW's 2-D wavelet transform, at positions drawn once
from random_loc_seed (``WaveFTLayer.update_layer``: a random permutation of the out·in positions, so every layer of
a shape gets the same ones); ΔW is the inverse wavelet transform (IDWT) of that sparse coefficient matrix, times
``scaling``. So n_frequency trainable parameters per layer, whatever its width (at most in·out, PEFT's own check).
With use_idwt=false the coefficients are ΔW's entries themselves (a sparse update, as SHiRA's).

FLOPs, as ``peft.tuners.waveft.layer.WaveFTLinear.forward`` runs them: each forward scatters the coefficients into
an H×W matrix (out and in, each padded by the wavelet's filter length L minus 2 and rounded up to even:
``get_delta_weight``), and ``waverec2d`` reconstructs ΔW with one transposed convolution of its four (H/2)×(W/2)
sub-bands by the four L×L filters: 2·L²·H·W per forward, which torch's counter counts, and as much again in
backward for the coefficients' gradient (the filters are constants). Then ΔW runs as a second dense product
F.linear(x, ΔW) beside the frozen one: 2·in·out per token, its weight's gradient always, the input's if needed.
Merged, ΔW folds into W: no overhead.

What a meta-device build cannot do: ``get_delta_weight`` drops out-of-range positions with a boolean mask (a
data-dependent shape), which tensors on the meta device cannot answer; tests/test_peft_tuners_wave.py counts its
FLOPs on a real CPU build.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .fourierft import check, per_module  # the same n_frequency coefficients per layer, and the same bound
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("waveft", "WaveFT", conv1d=True)

# The wavelets PEFT can reconstruct with (peft.tuners.waveft.wavelet._WAVELET_COEFFS) and their filters' lengths:
# Daubechies dbN and symlets symN have 2N taps, coiflets coifN 6N; PEFT pads ΔW by the length minus 2
# (constants.WAVELET_REDUCTIONS), which the reconstruction then crops off again. Not offered: the names PEFT's config
# accepts without filters for them (db11-db38, sym11-sym20, coif6-coif17), which fail at the first forward, and
# coif5, whose filter in PEFT has 48 taps against a padding made for 30, so its ΔW comes out smaller than W and
# the forward fails.
FILTER_LENGTHS = {**{f"db{n}": 2 * n for n in range(1, 11)}, **{f"sym{n}": 2 * n for n in range(2, 11)},
                  **{f"coif{n}": 6 * n for n in range(1, 5)}}


@dataclass
class WaveFTOptions:
    n_frequency: int = option(500, "Trained wavelet coefficients per layer (PEFT's WaveFTConfig.n_frequency; at most "
                              "in·out of every target). PEFT's default is 2592; 500 here so that small layers, such "
                              "as the demo model's 32→16 key projection, can take it.", min=1, max=10**8)
    scaling: float = option(25.0, "ΔW is multiplied by this (as LoRA's alpha/r); PEFT's default, the paper's for "
                            "SDXL personalisation.", min=0.0, max=1e6)
    wavelet_family: str = option("db1", "Wavelet of the inverse transform (db1 is the Haar wavelet, PEFT's "
                                 "default); a longer filter (db4, sym8, coif2, ...) costs more per step.",
                                 choices=tuple(FILTER_LENGTHS))
    use_idwt: bool = option(True, "Reconstruct ΔW by the inverse wavelet transform (PEFT's default); false: the "
                            "coefficients are ΔW's entries themselves, a sparse update.")
    random_loc_seed: int = option(777, "Seed of the coefficients' positions.", min=0, max=2**31 - 1)
    init_weights: bool = option(True, "Coefficients start at zero (training starts from the base model); false: "
                                "small random values (PEFT's normal·0.01).")
    target_preset: str = preset_option("WaveFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def padded(width: int, length: int) -> int:
    """A side of the coefficient matrix: the width plus the filter's length minus 2, rounded up to even."""
    side = width + length - 2
    return side + side % 2


def products(m, options):
    dense = 2 * m.in_features * m.out_features  # F.linear(x, ΔW) per token; ΔW trains (through the IDWT)
    out = [Product(dense, dense, dense)]
    if options.use_idwt:
        length = FILTER_LENGTHS[options.wavelet_family]
        idwt = 2 * length ** 2 * padded(m.out_features, length) * padded(m.in_features, length)
        out.append(Product(idwt, idwt, 0, per_token=False))  # conv_transpose2d; backward: the coefficients' grad
    return tuple(out)


def saved_per_step(spec, options) -> int:
    """What autograd keeps once per forward (``peft.tuners.waveft.layer.WaveFTLinear.get_delta_weight`` and
    ``forward``), in elements at the activations' width, per adapted layer of out×in, with the inverse wavelet
    transform (use_idwt) and a filter of length L:
    - the four sub-bands stacked (``waverec2d``: torch.stack, padded(out)·padded(in) elements), which
      conv_transpose2d keeps with its 4·L² filter;
    - ΔW, the centred out×in crop of its output (a copy: waverec2d's cropping and reshaping leave no view of the
      wider output), which F.linear(x, ΔW) keeps for its input's gradient where that input needs one
      (explorer.methods.saved_tensors);
    - the coefficients' positions after the padding offsets (``valid_indices``, 2 × n_frequency int64, kept by the
      spectrum's index_put) and the boolean ``valid_mask`` (n_frequency bytes, kept by ``spectrum[valid_mask]``):
      17 bytes per coefficient, counted as 4.25 elements (exact at float32 activations).
    Without the transform, the positions are PEFT's own (a plain tensor, not a buffer: 16 bytes per coefficient,
    kept by index_put) and ΔW (out×in, the scaled dense spectrum) where the input needs a gradient."""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    n = options.n_frequency
    delta = sum(arch.by_name[t].out_features * arch.by_name[t].in_features for t in inputs_with_grad(arch, names))
    if not options.use_idwt:
        return delta + 4 * n * len(names)
    length = FILTER_LENGTHS[options.wavelet_family]
    stacked = sum(padded(arch.by_name[t].out_features, length) * padded(arch.by_name[t].in_features, length)
                  + 4 * length ** 2 + 4 * n + (n + 3) // 4 for t in names)
    return stacked + delta


def make_config(spec, options):
    from peft import WaveFTConfig

    return peft_config(WaveFTConfig, n_frequency=options.n_frequency, scaling=options.scaling,
                       wavelet_family=options.wavelet_family, use_idwt=options.use_idwt,
                       random_loc_seed=options.random_loc_seed, init_weights=options.init_weights,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="waveft", title="WaveFT", where="linear weights (a few learned wavelet coefficients of the update)",
    explanation="Freezes the model and learns, for chosen linear layers, a few coefficients of the update's 2-D "
                "wavelet transform at fixed random positions; the update ΔW is their inverse wavelet transform, "
                "which spreads each coefficient over a small patch of the weight. The count per layer is "
                "n_frequency, whatever the layer's width.",
    when_to_use="When the adapter must be tiny and its size set exactly (any count, not a multiple of a rank); "
                "the paper tested it on image generation, not on language.",
    default_lr=1e-3, options_type=WaveFTOptions, mergeable=True,
    merge_reason="ΔW (the inverse wavelet transform of the learned coefficients) has the shape of W, so it folds "
                 "into W: zero inference overhead.",
    peft_type="WAVEFT", artifact="WaveFT adapter", in_default_race=False,
    meta_forward_refusal="WaveFT's forward drops out-of-range positions with a boolean mask, which meta tensors "
                         "cannot answer (tests/test_peft_tuners_wave.py counts its FLOPs on a real CPU build)",
    literature=("Bilican et al. 2025 (WaveFT, abstract) claim that on personalised text-to-image generation with "
                "Stable Diffusion XL, WaveFT significantly outperforms LoRA and other PEFT methods, especially at "
                "low parameter counts, in subject fidelity, prompt alignment and image diversity.",))


def adaptation(spec, options):
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=saved_per_step(spec, options))


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
