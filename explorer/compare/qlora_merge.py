"""What merging a QLoRA adapter into the 4-bit weights does: the update is rounded to NF4 again.

QLoRA (Dettmers et al. 2023) trains W_nf4 + s·B·A with the base stored in 4-bit NormalFloat, in
blocks of 64 weights sharing one scale. Merging into the 4-bit weights (PEFT's merge on a bitsandbytes
layer) computes dequant(W_nf4) + s·B·A and quantizes the sum again: every weight snaps back to one
of 16 levels of its block, so an update smaller than half a level mostly vanishes. Merging into the
de-quantized base (a float copy of dequant(W_nf4)) keeps the update exactly.

``rounding_report`` measures this weight by weight, comparing the adapted model with a merged copy.
"""

from __future__ import annotations


def lora_layers_4bit(model):
    """(name, layer) for every LoRA layer whose base is a bitsandbytes 4-bit linear."""
    from peft.tuners.lora.bnb import Linear4bit

    return [(name, m) for name, m in model.named_modules() if isinstance(m, Linear4bit)]


def rounding_report(adapted, merged_4bit, adapter: str = "default") -> dict:
    """How much of the LoRA update survives PEFT's merge into the 4-bit weights, over all 4-bit LoRA layers.

    ``adapted``: the QLoRA model (4-bit base + LoRA); ``merged_4bit``: a copy after merge_and_unload.
    lost = ‖(W′ − W) − ΔW‖ / ‖ΔW‖ with W the de-quantized base weight, W′ the de-quantized merged
    weight and ΔW = s·B·A (Frobenius norms over all layers); changed = share of weights whose
    de-quantized value moved at all."""
    import bitsandbytes.functional as F

    merged_modules = dict(merged_4bit.named_modules())
    err2 = delta2 = 0.0
    changed = total = layers = 0
    for name, layer in lora_layers_4bit(adapted):
        target = merged_modules.get(name.removeprefix("base_model.model."))
        if target is None or not hasattr(target.weight, "quant_state"):
            continue
        base = F.dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state).float()
        merged = F.dequantize_4bit(target.weight.data, target.weight.quant_state).float()
        delta = layer.get_delta_weight(adapter).float()
        err2 += float(((merged - base) - delta).pow(2).sum())
        delta2 += float(delta.pow(2).sum())
        changed += int((merged != base).sum())
        total += base.numel()
        layers += 1
    if not layers:
        return {"layers": 0}
    return {"layers": layers, "update_lost_percent": 100 * (err2 ** 0.5) / max(delta2 ** 0.5, 1e-30),
            "weights_changed_percent": 100 * changed / total}


def explain(report: dict) -> str:
    if not report.get("layers"):
        return ""
    return (f"Merging into the 4-bit weights re-rounds W + ΔW to NF4 in {report['layers']} layers: "
            f"the update that survives differs from the trained one by {report['update_lost_percent']:.0f}% of its "
            f"size (Frobenius norm; 100% = nothing kept) and {report['weights_changed_percent']:.2f}% of the 4-bit "
            "weights move at all. Merging into the "
            "de-quantized base (the merged column) keeps the update exactly.")
