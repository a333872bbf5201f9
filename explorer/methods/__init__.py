"""The method registry: one module per method, registered in one explicit dict.

Adding a method: write ``explorer/methods/<name>.py`` with a ``METHOD`` and add one line here.
Tests parametrize over this dict, so a new method is tested automatically.
"""

from . import (
    adalora,
    adapter,
    boft,
    c3a,
    delora,
    dora,
    fourierft,
    freeze,
    full,
    gralora,
    head,
    hra,
    ia3,
    ln_tuning,
    loha,
    lokr,
    lora,
    loraplus,
    miss,
    oft,
    olora,
    osf,
    pissa,
    prefix,
    prompt,
    qlora,
    randlora,
    road,
    shira,
    trainable_tokens,
    vblora,
    vera,
)
from .base import Method

METHODS: dict[str, Method] = {
    "full": full.METHOD,
    "head": head.METHOD,
    "lora": lora.METHOD,
    "dora": dora.METHOD,
    "qlora": qlora.METHOD,
    "ia3": ia3.METHOD,
    "prompt": prompt.METHOD,
    "prefix": prefix.METHOD,
    "adapter": adapter.METHOD,
    "pissa": pissa.METHOD,
    "olora": olora.METHOD,
    "loraplus": loraplus.METHOD,
    "vera": vera.METHOD,
    "ln_tuning": ln_tuning.METHOD,
    "loha": loha.METHOD,
    "lokr": lokr.METHOD,
    "oft": oft.METHOD,
    "boft": boft.METHOD,
    "hra": hra.METHOD,
    "fourierft": fourierft.METHOD,
    "road": road.METHOD,
    "miss": miss.METHOD,
    "delora": delora.METHOD,
    "gralora": gralora.METHOD,
    "freeze": freeze.METHOD,
    "adalora": adalora.METHOD,
    "vblora": vblora.METHOD,
    "shira": shira.METHOD,
    "c3a": c3a.METHOD,
    "randlora": randlora.METHOD,
    "osf": osf.METHOD,
    "trainable_tokens": trainable_tokens.METHOD,
    # LoftQ is left out: PEFT 0.21.2 computes its initialisation on CUDA only (the QLoRA and PiSSA cards say so).
}
DEFAULT_METHOD = "lora"  # what the tabs and the CLI start from


def get(name: str) -> Method:
    from ..errors import ExplorerError

    if name not in METHODS:
        raise ExplorerError(f"Unknown method '{name}'. Methods: {', '.join(METHODS)}.")
    return METHODS[name]
