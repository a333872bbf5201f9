"""An SVG diagram of one transformer block that highlights where a method adapts it.

Pure string building (no UI library), so the Calculator and Learn tabs share it.
"""

from __future__ import annotations

from html import escape

from ..costs.specs import Arch
from ..methods.base import Adaptation

HIGHLIGHT = "#f97316"
FROZEN = "#e5e7eb"
NEW = "#fde68a"


def _box(x, y, w, h, label, fill, note=""):
    title = f"<title>{escape(note)}</title>" if note else ""
    return (f'<g>{title}<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
            f'stroke="#374151" stroke-width="1"/><text x="{x + w / 2}" y="{y + h / 2 + 4}" '
            f'text-anchor="middle" font-size="12" font-family="sans-serif">{escape(label)}</text></g>')


def block_svg(arch: Arch, a: Adaptation, method_title: str) -> str:
    """A block drawn bottom-up: embeddings, attention linears, core, output, MLP linears, LM head."""
    adapted = {arch.local_name(n) for n in set(a.lora) | set(a.ia3_out) | set(a.ia3_in) | set(a.vera)}
    block = arch.main
    linears = block.linears

    def fill_for(name: str) -> str:
        return HIGHLIGHT if a.full or name in adapted else FROZEN

    parts, y = [], 10
    width = 520
    head_fill = HIGHLIGHT if (a.full or a.head or arch.head in a.lora or arch.head in a.trainable_modules) else FROZEN
    head_label = {"classifier": "pool + classifier head", "embedding": "pool + embedding projection"}
    parts.append(_box(150, y, 220, 28, head_label.get(a.head, "LM head"), NEW if a.pooled_head else head_fill))
    y += 44
    rows = []
    mlp_in = [lin for lin in linears if lin.reads == "mlp_in"]
    mlp_out = [lin for lin in linears if lin.reads == "mlp_mid"]
    if a.adapter_dim and a.adapter_after_ffn:
        rows.append([("adapter (after FFN)", NEW, f"bottleneck {a.adapter_dim}")])
    # The block's own norms (its direct children), drawn when one of them trains (LN tuning, modules_to_save)
    trained = {arch.local_name(n) for n in a.trainable_modules if arch.layer_of(n) is not None}
    norms = [m.name for m in block.modules if "." not in m.name and "norm" in m.cls.lower()]
    if trained & set(norms):
        rows.append([(name, HIGHLIGHT if name in trained else FROZEN, "element-wise scale") for name in norms])
    moe = arch.moe(block)
    if moe:
        experts_trained = a.full or any(arch.local_name(n).startswith(block.ffn) for n in a.lora_params)
        rows.append([(f"{moe[0]} experts (top-{moe[1]})", HIGHLIGHT if experts_trained else FROZEN,
                      "fused 3-D expert weights")])
    for group in (mlp_out, mlp_in):
        if group:
            rows.append([(lin.short, fill_for(lin.name), f"{lin.name}: {lin.in_features}→{lin.out_features}")
                         for lin in group])
    if a.adapter_dim and a.adapter_after_attention:
        rows.append([("adapter (after attention)", NEW, f"bottleneck {a.adapter_dim}")])
    attn_out = [lin for lin in linears if lin.reads == "attn_core"]
    rows.append([(lin.short, fill_for(lin.name), f"{lin.name}: {lin.in_features}→{lin.out_features}")
                 for lin in attn_out])
    core_label = "attention softmax(QKᵀ)V" + (f" + {a.prefix_tokens} prefix K,V" if a.prefix_tokens else "")
    rows.append([(core_label, NEW if a.prefix_tokens else FROZEN, "")])
    attn_in = [lin for lin in linears if lin.reads == "attn_in"]
    rows.append([(lin.short, fill_for(lin.name), f"{lin.name}: {lin.in_features}→{lin.out_features}")
                 for lin in attn_in])
    for row in [r for r in rows if r]:
        gap = 8
        w = min(150, (width - 40 - gap * (len(row) - 1)) / len(row))
        x0 = (width - (w * len(row) + gap * (len(row) - 1))) / 2
        for i, (label, fill, note) in enumerate(row):
            parts.append(_box(x0 + i * (w + gap), y, w, 28, label, fill, note))
        y += 40
    embed_label = "input embeddings" + (f" + {a.prompt_tokens} soft tokens" if a.prompt_tokens else "")
    parts.append(_box(150, y, 220, 28, embed_label, NEW if a.prompt_tokens else (HIGHLIGHT if a.full else FROZEN)))
    height = y + 60
    parts.append(f'<rect x="6" y="52" width="{width - 12}" height="{y - 52 - 6}" rx="10" fill="none" '
                 f'stroke="#9ca3af" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{width - 14}" y="68" text-anchor="end" font-size="11" fill="#6b7280" '
                 f'font-family="sans-serif">× {arch.layers} blocks</text>')  # top right: no box is there
    legend_y = height - 20
    for i, (fill, label) in enumerate([(FROZEN, "frozen"), (HIGHLIGHT, "trained or adapted"), (NEW, "added by the method")]):
        parts.append(f'<rect x="{14 + i * 170}" y="{legend_y}" width="14" height="14" fill="{fill}" stroke="#374151"/>')
        parts.append(f'<text x="{34 + i * 170}" y="{legend_y + 12}" font-size="12" font-family="sans-serif">{label}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-label="{escape(method_title)}: where it adapts a transformer block">'
            + "".join(parts) + "</svg>")
