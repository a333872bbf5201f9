"""What PEFT's other tuners of linear layers share here (LoHa, LoKr, OFT, BOFT, HRA, FourierFT, ...).

Each such method file gives three things per adapted linear layer: its trainable count with the expression
shown, the matmuls PEFT's layer adds (explorer.costs.flops.Product, read from the tuner's ``layer.py``), and
its PEFT config. This module matches the targets as PEFT does (explorer.methods.targets, the LoRA presets),
groups the formula lines by layer, and says in one line where PEFT has no layer for a module kind (GPT-2's
transformers Conv1D for most of these tuners) instead of letting PEFT fail mid-build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term
from .lora import PRESETS, target_spec


def preset_option(title: str):
    return option("all-linear", f"Which linear layers get a {title} update: q and v, all attention projections, "
                  "every linear layer of the block, or a custom list (target_modules).", choices=PRESETS)


def modules_option():
    return option("", "PEFT's target_modules (custom preset): names matched as PEFT does (a module whose name is or "
                  "ends with '.'+entry), comma-separated; re:<regex> for a regex on the whole name; all-linear.")


def exclude_option():
    return option("", "PEFT's exclude_modules: names (or re:<regex>) never adapted.")


@dataclass(frozen=True)
class Tuner:
    """One PEFT tuner of linear layers: its key (explorer.methods.targets.SUPPORTED where it adapts more than linear layers), its title, and whether
    PEFT has a layer for transformers' Conv1D (GPT-2)."""

    key: str
    title: str
    conv1d: bool = False

    def targets(self, spec, options) -> list[str]:
        """The full names of the linear layers it adapts, matched as PEFT matches them."""
        arch = spec.arch
        kwargs = peft_targets.peft_kwargs(options)
        peft_targets.layer_indices(getattr(options, "layers_to_transform", ""), arch.layers)
        names = list(peft_targets.match(arch, self.key, target_spec(arch, options), kwargs["exclude_modules"],
                                        kwargs["layers_to_transform"], kwargs["layers_pattern"]).targets)
        if arch.head and arch.head in names:
            raise ExplorerError(f"{self.title} here adapts the blocks' linear layers; remove {arch.head} from "
                                "target_modules.")
        conv = [n for n in names if arch.by_name[n].kind == "conv1d"]
        if conv and not self.conv1d:
            raise ExplorerError(f"PEFT's {self.title} has no layer for transformers' Conv1D (GPT-2-style layers "
                                f"such as {arch.local_name(conv[0])}): it adapts nn.Linear layers only.")
        return names

    def conv1d_targets(self, spec, options) -> bool:
        """Whether the targets store W transposed (GPT-2's Conv1D): PEFT's fan_in_fan_out."""
        return any(spec.arch.by_name[n].kind == "conv1d" for n in self.targets(spec, options))

    def peft_kwargs(self, spec, options) -> dict:
        """target_modules as the full names matched (exclude_modules already applied to them, so PEFT's config
        needs nothing else, and tuners whose config lacks exclude_modules, such as RoAd's, take the same)."""
        return {"target_modules": self.targets(spec, options)}


def grouped_terms(spec, names: list[str], per_module: Callable) -> list[Term]:
    """One formula line per distinct layer (name in the block and shape): ``per_module(module) -> (count,
    expression)``, times the layers it is in."""
    arch = spec.arch
    out = []
    for local, layers, example in peft_targets.group(arch, names):
        per, expression = per_module(arch.by_name[example])
        n = max(len(layers), 1)
        where = f" × {n} {peft_targets.layer_span(layers)}" if layers else ""
        out.append(Term(local, per * n, f"{expression}{where} = {per * n:,}"))
    return out


def linear_method(tuner: Tuner, per_module: Callable, products: Callable, make_config: Callable,
                  check: Callable = lambda module, options: None, frozen: Callable | None = None,
                  **fields) -> Method:
    """A Method whose formula, FLOPs and build come from the three per-tuner functions:
    ``per_module(module, options) -> (count, expression)``, ``products(module, options) -> tuple[Product]``,
    ``make_config(spec, options) -> a PEFT config``; ``check(module, options)`` raises PEFT's per-layer refusal
    (a block size that does not divide a layer's width) in one line before PEFT would, mid-build;
    ``frozen(module, options) -> (count, expression)``: what it adds per layer that does not train (saved buffers)."""

    def terms(spec, options):
        return grouped_terms(spec, tuner.targets(spec, options), lambda m: per_module(m, options))

    def adaptation(spec, options):
        arch = spec.arch
        return Adaptation(products={n: products(arch.by_name[n], options) for n in tuner.targets(spec, options)})

    def apply(model, spec, options):
        from peft import get_peft_model

        return get_peft_model(model, make_config(spec, options))

    def validate(spec, options):
        make_config(spec, options)  # PEFT's own checks of the config
        for name in tuner.targets(spec, options):
            check(spec.arch.by_name[name], options)

    if frozen is not None:
        fields["frozen_terms"] = lambda spec, options: grouped_terms(spec, tuner.targets(spec, options),
                                                                     lambda m: frozen(m, options))
    fields.setdefault("conv1d_layer", tuner.conv1d)
    return Method(terms=terms, adaptation=adaptation, apply=apply, validate=validate, uses_peft=True, **fields)


def peft_config(config_class, **kwargs):
    """PEFT's config, its own checks turned into a one-line message."""
    try:
        return config_class(task_type="CAUSAL_LM", **kwargs)
    except (ValueError, TypeError) as error:
        raise ExplorerError(f"PEFT: {str(error).strip().splitlines()[0]}") from None
