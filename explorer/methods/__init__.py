"""The method registry: one module per method, registered in one explicit dict.

Adding a method: write ``explorer/methods/<name>.py`` with a ``METHOD`` and add one line here.
Tests parametrize over this dict, so a new method is tested automatically.
"""

from . import (
    adalora,
    adaption_prompt,
    adapter,
    beft,
    boft,
    c3a,
    cartridge,
    cpt,
    deft,
    delora,
    dora,
    fourierft,
    freeze,
    frod,
    full,
    glora,
    gralora,
    head,
    hira,
    hra,
    ia3,
    lily,
    ln_tuning,
    loha,
    lokr,
    lora,
    loraplus,
    miss,
    oft,
    olora,
    osf,
    peanut,
    pissa,
    prefix,
    prompt,
    psoft,
    ptuning,
    pvera,
    qlora,
    randlora,
    road,
    shadow,
    shira,
    supertuning,
    tinylora,
    trainable_tokens,
    unilora,
    vblora,
    vera,
    waveft,
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
    "glora": glora.METHOD,
    "deft": deft.METHOD,
    "psoft": psoft.METHOD,
    "waveft": waveft.METHOD,
    "hira": hira.METHOD,
    "unilora": unilora.METHOD,
    "beft": beft.METHOD,
    "peanut": peanut.METHOD,
    "supertuning": supertuning.METHOD,
    "shadow": shadow.METHOD,
    "ptuning": ptuning.METHOD,
    "cartridge": cartridge.METHOD,
    "adaption_prompt": adaption_prompt.METHOD,
    "cpt": cpt.METHOD,
    "pvera": pvera.METHOD,
    "tinylora": tinylora.METHOD,
    "frod": frod.METHOD,
    "lily": lily.METHOD,
}
DEFAULT_METHOD = "lora"  # what the tabs and the CLI start from

# PEFT 0.21.2's methods that are not offered here, each with why (said when one is asked for by name, listed in the
# Calculator and the README).
NOT_OFFERED: dict[str, tuple[str, str]] = {
    "loftq": ("LoftQ", "PEFT computes its initialisation on CUDA only (peft.utils.loftq_utils); the QLoRA and PiSSA "
                       "cards say so."),
    "corda": ("CorDA", "a LoRA start that changes the base weights: its adapter would need PiSSA's conversion on "
                       "save, which PEFT does not offer for it (LoRA's init_lora_weights option refuses it)."),
    "loraga": ("LoRA-GA", "a LoRA start that changes the base weights, as CorDA's (LoRA's init_lora_weights option "
                          "refuses it)."),
    "adamss": ("AdaMSS", "each layer's build clusters its real weights (scikit-learn's KMeans, peft/tuners/adamss/"
                         "utils.py), so its parameter count depends on the weights' values: no formula, and no build "
                         "on the meta device for the Calculator."),
    "mpt": ("Multitask prompt tuning", "every forward needs task ids (peft/tuners/multitask_prompt_tuning/model.py: "
                                       "\"task_ids cannot be None\"), which one run on one dataset has none of; it "
                                       "is meant to start from prompts trained on source tasks."),
    "poly": ("Poly", "its router picks skills by task id on every forward (peft/tuners/poly/router.py: \"task_ids "
                     "should not be None\"): a multi-task method, and a run here trains one task."),
    "xlora": ("X-LoRA", "it mixes LoRA adapters trained before (XLoraConfig.adapters, loaded in peft/tuners/xlora/"
                        "model.py): a single run from scratch has nothing to mix."),
}


def get(name: str) -> Method:
    from ..errors import ExplorerError

    if name in NOT_OFFERED:
        title, why = NOT_OFFERED[name]
        raise ExplorerError(f"{title} is not offered here: {why}")
    if name not in METHODS:
        raise ExplorerError(f"Unknown method '{name}'. Methods: {', '.join(METHODS)}.")
    return METHODS[name]
