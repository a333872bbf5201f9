"""OLoRA (Büyükakyüz 2024, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models"), PEFT's
``init_lora_weights="olora"``.

LoRA's count, r·(in + out) per adapted layer. PEFT's ``LoraLayer.olora_init`` takes a QR decomposition of W:
B starts as the first r columns of Q (orthonormal), A as the first r rows of R, and the base keeps
W − (alpha/r)·B₀·A₀. Like PiSSA (pissa.py) the base weights change at initialisation, and saving converts the
trained adapter into a rank-2r LoRA of the original base.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from .lora import LoraOptions
from .pissa import mutating_init_method


@dataclass
class OloraOptions(LoraOptions):
    lora_alpha: int = option(8, "Scaling numerator: the update is multiplied by alpha/r (alpha = r keeps the moved "
                             "part at its size).", min=1, max=65536)
    lora_dropout: float = option(0.0, "Dropout on the adapter path's input.", min=0.0, max=0.9)


METHOD = mutating_init_method(
    "olora", "OLoRA", OloraOptions, lambda options: "olora",
    where="linear weights (LoRA started from an orthonormal QR basis of W)",
    explanation="LoRA with a different start: each weight is QR-decomposed, B begins as r orthonormal columns "
                "of Q and A as the matching rows of R, and the frozen base keeps the rest. The same parameters "
                "as LoRA; the base weights change at initialisation, so the saved adapter is converted "
                "(ΔW = B·A − B₀·A₀, rank 2r) to apply to the original base.",
    when_to_use="Like PiSSA: a drop-in LoRA with a data-free, weight-derived start; QR is cheaper than an SVD.",
    literature=("Büyükakyüz 2024 (OLoRA, abstract) claims the orthonormal initialisation significantly "
                "accelerates the convergence of LLM training while keeping LoRA's trainable parameter count and "
                "GPU memory footprint.",))
