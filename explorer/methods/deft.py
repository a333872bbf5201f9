"""DEFT (Kumar et al. 2025, "DEFT: Decompositional Efficient Fine-Tuning for Text-to-Image Models", NeurIPS 2025;
its para option is PaRa, the removal alone), built by PEFT (``peft.tuners.deft``). A text-to-image method that
PEFT's layer applies to any linear layer, a causal LM's included.

A rank-r subspace of each adapted weight is removed and new content injected in its place:
W' = (I − P_proj)·W + Q_P·R, with P (out × r) the trained projection direction and R (r × in) the trained injection
(``DeftLayer.update_layer``). decomposition_method "relu" takes P_proj = P·relu(P)ᵀ and Q_P = P; "qr" the
orthogonal Q_P = qr(P), P_proj = Q_P·Q_Pᵀ. So r·(out + in) parameters per layer, LoRA's count at rank r (PEFT caps r
at the layer's out features); with para (PaRa) only the removal, −P_proj·W, and P alone trains: r·out. PEFT starts
R at relu(P)ᵀ·W (or Q_Pᵀ·W), so the update is zero at the start.

FLOPs, as ``peft.tuners.deft.layer.DeftLinear.forward`` runs them: ΔW is never formed. The removal reuses the frozen
layer's output y = W·x: (y·relu(P))·Pᵀ, 2·out·r twice per token, both trained; the injection is (x·Rᵀ)·Pᵀ,
2·in·r + 2·r·out, both trained. With "qr", the QR decomposition of P once per forward (not a matmul: torch's
counter does not count it) has a backward with two products of 2·out·r·r, once per step.
Merged: ΔW folds into W (PEFT keeps a small r × in factor to unmerge exactly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs.flops import Product
from ..options import option
from .saved_tensors import dropout_per_token, inputs_with_grad
from .tuners import Tuner, exclude_option, linear_method, modules_option, peft_config, preset_option

TUNER = Tuner("deft", "DEFT", conv1d=True)


@dataclass
class DeftOptions:
    r: int = option(8, "Rank of the removed and injected subspace (PEFT's DeftConfig.r; capped at a layer's out "
                    "features).", min=1, max=4096)
    decomposition_method: str = option("relu", "How the projector comes from P: 'relu', P·relu(P)ᵀ (PEFT's "
                                       "default, not orthogonal), or 'qr', the orthogonal Q·Qᵀ of P's QR "
                                       "decomposition.", choices=("relu", "qr"))
    alpha: int = option(0, "Scaling of the injection: R is multiplied by alpha/r, as LoRA's alpha (0 = PEFT's None: "
                        "no scaling).", min=0, max=10**6)
    para: bool = option(False, "PaRa: only remove the subspace (ΔW = −P_proj·W), with no injection; only P trains, "
                        "and the update is not zero at the start.")
    init_scale: float = option(1.0, "Scale of R's random start (used only with init_weights false).", min=0.0,
                               max=100.0)
    deft_dropout: float = option(0.0, "Dropout on the injection's input during training.", min=0.0, max=0.9)
    init_weights: bool = option(True, "Start R so that the update is zero (PEFT's default); false starts from a "
                                "random R: a subspace of W is replaced from the first step.")
    target_preset: str = preset_option("DEFT")
    target_modules: str = modules_option()
    exclude_modules: str = exclude_option()


def rank(m, options) -> int:
    return min(options.r, m.out_features)  # PEFT's cap in update_layer


def per_module(m, options):
    r = rank(m, options)
    if options.para:
        return r * m.out_features, f"{r}·{m.out_features} (P)"
    return r * (m.out_features + m.in_features), f"{r}·({m.out_features} (P) + {m.in_features} (R))"


def qr_backward(out: int, r: int) -> int:
    """The products of torch's QR backward for P (out × r, reduced mode), once per step: two of out·r·r (P's Q with
    the incoming gradients); its r × r parts are a triangular solve and element-wise work, which torch's counter does
    not count (checked against the counter in tests/test_peft_tuners_adamss.py)."""
    return 2 * 2 * out * r * r


def products(m, options):
    fan_in, out, r = m.in_features, m.out_features, rank(m, options)
    pair = 2 * out * r
    found = [Product(pair, pair, pair),   # (W·x)·relu(P): relu(P)'s gradient; W·x's where the input needs one
             Product(pair, 2 * pair, 0)]  # (…)·Pᵀ: both operands' gradients
    if not options.para:
        down, up = 2 * fan_in * r, 2 * r * out
        found += [Product(down, down, down), Product(up, 2 * up, 0)]  # (x·Rᵀ)·Pᵀ, as LoRA's two products
    if options.decomposition_method == "qr":
        found.append(Product(0, qr_backward(out, r), 0, per_token=False))
    return tuple(found)


def make_config(spec, options):
    from peft import DeftConfig

    return peft_config(DeftConfig, r=options.r, decomposition_method=options.decomposition_method,
                       alpha=options.alpha or None, para=options.para, init_scale=options.init_scale,
                       deft_dropout=options.deft_dropout, init_weights=options.init_weights,
                       fan_in_fan_out=TUNER.conv1d_targets(spec, options), **TUNER.peft_kwargs(spec, options))


def saved(spec, options) -> tuple[int, int]:
    """(per step, per token) elements autograd keeps beyond every adapted layer's input, as ``peft.tuners.deft.layer.
    DeftLinear.forward`` runs (deft_dropout > 0: saved_tensors.dropout_per_token, R reading the dropped copy). Per
    step: relu(P) (out × r, kept by relu; "qr": torch.linalg.qr's Q and R, out·r + r·r, kept by its backward), from
    ``_project``; R·scaling (r × in, a new tensor) where the layer's input needs a gradient
    (explorer.methods.saved_tensors). Per token: the frozen layer's output W·x (out), kept by (W·x)·relu(P) for
    relu(P)'s gradient, and the two rank-r products each kept for Pᵀ's gradient: (W·x)·relu(P) and x·R_sᵀ (one with
    para, which runs no injection and so keeps no input of its own). PEFT computes all of it in float32 (its
    compute_dtype): at 16-bit activations W·x is a float32 copy (counted here at the activations' width)."""
    from ..costs.memory import distinct_inputs

    arch = spec.arch
    names = TUNER.targets(spec, options)
    step, token = 0, 0
    for name in names:
        m = arch.by_name[name]
        r = rank(m, options)
        step += m.out_features * r + (r * r if options.decomposition_method == "qr" else 0)
        token += m.out_features + r * (1 if options.para else 2)
    if options.para:
        token -= distinct_inputs(arch, names)  # the layers' inputs: only the frozen products read them
    else:
        step += sum(rank(arch.by_name[n], options) * arch.by_name[n].in_features for n in inputs_with_grad(arch, names))
        token += dropout_per_token(arch, names, names) if options.deft_dropout > 0 else 0
    return step, token


LINEAR = linear_method(
    TUNER, per_module, products, make_config,
    name="deft", title="DEFT", where="linear weights (a rank-r subspace removed and new content injected)",
    explanation="Finds, for each chosen layer, a small subspace of what the weight does, removes it, and injects "
                "newly learned content in its place (W' = (I − P)·W + P·R). LoRA's parameter count at the same "
                "rank; with para on it only removes (PaRa).",
    when_to_use="Adapting to new data or concepts while keeping what the base model could do (the paper's aim, "
                "shown on image generation); unmerged it costs LoRA's two products plus two more.",
    default_lr=1e-3, options_type=DeftOptions, mergeable=True,
    merge_reason="−P_proj·W + Q_P·R has the shape of W, so it folds into W: zero inference overhead.",
    peft_type="DEFT", artifact="DEFT adapter", in_default_race=False,
    literature=("Kumar et al. 2025 (DEFT, abstract) claim state-of-the-art performance for text-to-image models "
                "on personalization (Dreambooth, Dreambench Plus), object and scene adaptation (InsDet) and visual "
                "in-context generation (VisualCloze), balancing learning a new concept against keeping instruction "
                "ability and editability; no language-model results are claimed.",))


def adaptation(spec, options):
    step, token = saved(spec, options)
    return dataclasses.replace(LINEAR.adaptation(spec, options), saved_per_step=step, saved_per_token=token)


METHOD = dataclasses.replace(LINEAR, adaptation=adaptation)
