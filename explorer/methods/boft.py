"""BOFT (Liu et al. 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization"), built by
PEFT (``peft.tuners.boft``).

Each adapted linear layer's input is multiplied by an orthogonal matrix R (a product of block-diagonal
"butterfly" factors, each block the Cayley transform of a trained b×b matrix), and its output by a trained
scale s: y = s ⊙ (W·(R·x)). Per layer: factors·blocks·b² + out trainable parameters (the blocks are stored as
full b×b matrices; blocks·b = in_features).

On a CPU PEFT 0.21 has no butterfly: its block-diagonal kernel (fbd_cuda) is a CUDA extension, and without
it PEFT sets boft_n_butterfly_factor to 1 (``BOFTLayer.update_layer``), so BOFT here is block-diagonal OFT
with an output scale, and any other factor is refused in one line.

FLOPs, as ``peft.tuners.boft.layer.Linear.forward`` runs them (one factor): the Cayley transform is a linear
solve (not a matmul to torch's counter; its backward takes one b×b product per block), then the rotation is
assembled as dense in×in matrices, three products of 2·in³ FLOPs per forward (with the frozen permutation
buffer twice and with an identity), each paying one gradient product; then x·R per token (2·in² FLOPs, not
2·in·b: the block-diagonal matrix is applied densely) and the frozen product, which pays its input gradient.
Merged, R and s fold into W: no overhead. The permutation buffer (in² entries per layer) is not saved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..errors import ExplorerError
from ..options import option
from .saved_tensors import inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("boft", "BOFT")


@dataclass
class BOFTOptions:
    boft_block_size: int = option(4, "Size b of each orthogonal block (PEFT's BOFTConfig.boft_block_size); 0 to "
                                  "give boft_block_num instead. Must divide every target's input features.",
                                  min=0, max=4096)
    boft_block_num: int = option(0, "Blocks per layer (PEFT's boft_block_num); 0 when boft_block_size is given.",
                                 min=0, max=65536)
    boft_n_butterfly_factor: int = option(1, "Butterfly factors (PEFT's name). PEFT builds more than 1 only with "
                                          "its CUDA kernel: 1 here.", min=1, max=16)
    boft_dropout: float = option(0.0, "Multiplicative dropout: the probability of a block being the identity for "
                                 "a training step.", min=0.0, max=0.9)
    target_preset: str = preset_option("BOFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def blocks(m, options) -> tuple[int, int]:
    """(blocks, block size) of one layer, as peft.tuners.boft.layer.BOFTLayer.update_layer derives them."""
    n = m.in_features
    if options.boft_block_size:
        return n // options.boft_block_size, options.boft_block_size
    return options.boft_block_num, n // options.boft_block_num


def check(m, options):
    given, name = ((options.boft_block_size, "boft_block_size") if options.boft_block_size
                   else (options.boft_block_num, "boft_block_num"))
    if m.in_features % given:
        raise ExplorerError(f"PEFT: in_features ({m.in_features}) must be divisible by {name} ({given}) "
                            f"(layer {m.name}); choose a divisor of every target's input width.")


def per_module(m, options):
    d, b = blocks(m, options)
    return d * b * b + m.out_features, f"{d}·{b}² (R) + {m.out_features} (s)"


def products(m, options):
    d, b = blocks(m, options)
    n = m.in_features
    dense = 2 * n ** 3  # an in×in product assembling the rotation
    rotate = 2 * n * n  # x·R per token, R dense
    return (Product(3 * dense, 3 * dense + 2 * d * b ** 3, 0, per_token=False),
            Product(rotate, rotate, rotate, feeds_base=True))


def _perm2mat_that_builds_on_meta() -> None:
    """PEFT's ``BOFTLayer.perm2mat`` reads each permutation index with ``.item()``, which a meta tensor (the
    Calculator's exact count builds the model on the meta device) cannot give; a permutation matrix is a
    frozen, unsaved buffer, so on meta its shape is all a count or a FLOP count needs. Real tensors go through
    PEFT's own function unchanged."""
    import torch
    from peft.tuners.boft.layer import BOFTLayer

    original = BOFTLayer.perm2mat
    if getattr(original, "builds_on_meta", False):
        return

    def perm2mat(self, indices):
        if indices.device.type == "meta":
            return torch.zeros((len(indices), len(indices)), device="meta")
        return original(self, indices)

    perm2mat.builds_on_meta = True
    BOFTLayer.perm2mat = perm2mat


def _no_cuda_kernel_build() -> None:
    """Without CUDA, tell PEFT its kernel is absent before it tries: ``get_fbd_cuda`` compiles fbd_cuda with
    torch's cpp_extension on every BOFT layer's creation while its cache holds None (a failed build caches None),
    writing lock files under ~/.cache/torch_extensions each time and costing seconds per layer. False is
    cached, and PEFT reads it as "no kernel" (``if not get_fbd_cuda()``), as after a failed build."""
    import torch
    from peft.tuners.boft import layer

    if not torch.cuda.is_available() and layer._FBD_CUDA is None:
        layer._FBD_CUDA = False


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond explorer.costs.memory's generic count (every adapted
    layer's input, which x @ R keeps for R's gradient), as ``peft.tuners.boft.layer.Linear.forward`` runs on PEFT's
    CPU path (one butterfly factor, torch.block_diag; its CUDA kernel FastBlockDiag is not counted), per adapted
    layer of out×in with d blocks of size b (d·b = in):
    - ``cayley_batch``'s torch.linalg.solve(I + S, I − S, left=False) keeps three d·b² tensors (the LU factors,
      the solution and one more) and d·b int32 pivots (counted as d·b elements: exact at float32 activations);
    - ``butterfly_oft_mat @ boft_rotation`` keeps the identity it starts from (in×in) for the rotation's gradient
      (the permutations boft_P are buffers), and x @ R keeps R (in×in) where the input needs a gradient
      (explorer.methods.saved_tensors);
    - ``boft_s * boft_scale`` keeps the ones (out) and the output's scaling keeps the scale (out) and, per token,
      the frozen layer's output (out), for s's gradient.
    (boft_dropout's multiplicative mask is not counted.)"""
    arch = spec.arch
    names = TUNER.targets(spec, options)
    step = token = 0
    for name in names:
        m = arch.by_name[name]
        d, b = blocks(m, options)
        step += 3 * d * b * b + d * b + m.in_features ** 2 + 2 * m.out_features
        token += m.out_features
    step += sum(arch.by_name[n].in_features ** 2 for n in inputs_with_grad(arch, names))
    return step, token


def make_config(spec, options):
    from peft import BOFTConfig

    _perm2mat_that_builds_on_meta()
    _no_cuda_kernel_build()
    if options.boft_n_butterfly_factor != 1:
        raise ExplorerError("PEFT builds BOFT's butterfly factors (boft_n_butterfly_factor > 1) only with its CUDA "
                            "kernel fbd_cuda; without it PEFT sets the factor to 1, and the app builds, counts and "
                            "trains on PEFT's CPU path: use boft_n_butterfly_factor=1.")

    return peft_config(BOFTConfig, boft_block_size=options.boft_block_size, boft_block_num=options.boft_block_num,
                       boft_n_butterfly_factor=options.boft_n_butterfly_factor, boft_dropout=options.boft_dropout,
                       **TUNER.peft_kwargs(spec, options))


LINEAR = linear_method(
    TUNER, per_module, products, make_config, check,
    name="boft", title="BOFT", where="linear layers' inputs (an orthogonal rotation) and outputs (a scale)",
    explanation="Freezes the model and learns, for chosen linear layers, an orthogonal rotation of the input "
                "built from small blocks, and a scale per output feature: s ⊙ (W·(R·x)). The paper's butterfly "
                "factors let few blocks mix every feature; on a CPU PEFT builds one factor only (block-diagonal, "
                "as OFT).",
    when_to_use="To compare orthogonal fine-tuning with LoRA; on a CPU it is costly unmerged (the rotation is "
                "assembled and applied as dense in×in matrices every step).",
    default_lr=1e-3, options_type=BOFTOptions, mergeable=True,
    merge_reason="s ⊙ (W·R) is an ordinary weight of W's shape, so the rotation and scale fold into W: zero "
                 "inference overhead.",
    peft_type="BOFT", artifact="BOFT adapter", in_default_race=False,
    literature=("Liu et al. 2024 (BOFT, abstract) claim butterfly factorization makes orthogonal finetuning "
                "parameter-efficient and that BOFT outperforms OFT and LoRA across language, vision and "
                "text-to-image tasks at a similar parameter budget.",))


def adaptation(spec, options):
    step, token = saved(spec, options)
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=step, saved_per_token=token)


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
