"""Which modules a PEFT config adapts, matched exactly as PEFT matches them, on the derived module table.

PEFT's rules (peft.tuners.tuners_utils.check_target_module_exists, called here on every module name):
- ``target_modules`` as a list: a module whose full name equals an entry or ends with "." + the entry.
- ``target_modules`` as one string: a regular expression that must match the whole module name
  (``re.fullmatch``). Written here with a ``re:`` prefix, since a comma list is the list form:
  ``target_modules=re:.*\\.layers\\.[0-3]\\..*_proj``.
- ``"all-linear"``: every nn.Linear and Conv1D module except the output layer.
- ``exclude_modules`` (list or ``re:`` regex, same rules) wins over a match; ``modules_to_save`` too.
- ``layers_to_transform`` keeps modules of those layer indices (the first number after ``layers_pattern``,
  or after any ``name.<index>.``).
- ``target_parameters`` (LoRA on parameters, e.g. MoE expert matrices): a parameter whose full name equals
  an entry or ends with "." + the entry.
A target that matches nothing gets PEFT's own complaint.

One more rule of PEFT 0.21 on transformers 5: for MoE models whose experts transformers fused into 3-D
parameters (Mixtral, and the Qwen2-MoE pattern: Qwen3-MoE, DeepSeek-V2 ...), PEFT converts targets named as
transformers 4 named the experts and router (w1/w2/w3/gate, or gate_proj/up_proj/down_proj/gate) into
``target_parameters`` on the fused experts, with twice the rank for a fused gate_up_proj
(peft.utils.transformers_weight_conversion). That conversion is applied here with PEFT's own function, so
the counts follow it, including its side effect that nn.Linear layers with those names (a dense first layer,
shared experts) are no longer adapted, and LoRA on parameters refusing dropout.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from types import SimpleNamespace

from ..errors import ExplorerError

SUPPORTED = {"lora": ("linear", "conv1d", "embedding"), "ia3": ("linear", "conv1d"), "vera": ("linear", "conv1d"),
             "ln_tuning": ("linear", "conv1d", "embedding", "other"),  # LN tuning copies any module it targets
             "trainable_tokens": ("embedding", "linear"),  # rows of the embeddings (or the LM head)
             }
# PEFT's other tuners adapt linear layers (explorer.methods.tuners.Tuner says where one has no Conv1D layer): a new
# tuner needs no entry here.
LINEAR_ONLY = ("linear", "conv1d")
_cache: dict[tuple, tuple] = {}
_lock = threading.Lock()


def split(text: str) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def peft_form(text: str):
    """A CLI/UI value as PEFT takes it: "re:<regex>" -> the regex string, "all-linear" -> itself, else a list."""
    text = (text or "").strip()
    if text.startswith("re:"):
        pattern = text[3:].strip()
        try:
            re.compile(pattern)
        except re.error as error:
            raise ExplorerError(f"The regular expression {pattern!r} does not compile: {error}.") from None
        return pattern
    if text.lower() == "all-linear":
        return "all-linear"
    return split(text) or None


def layer_indices(text: str, layers: int) -> list[int] | None:
    if not (text or "").strip():
        return None
    try:
        values = [int(v) for v in split(text)]
    except ValueError:
        raise ExplorerError(f"layers_to_transform must be layer indices separated by commas, got {text!r}.") from None
    wrong = [v for v in values if not 0 <= v < layers]
    if wrong:
        raise ExplorerError(f"layers_to_transform: this model has layers 0 to {layers - 1}; "
                            f"{', '.join(map(str, wrong))} is not one of them.")
    return values


@dataclass(frozen=True)
class Match:
    targets: tuple           # matched module names, in model order
    by_entry: tuple          # (entry, matched names): which entry matched which module
    saved: tuple             # modules_to_save: the outermost matching modules
    params: tuple            # (parameter name, shape, rank multiplier) matched by target_parameters
    converted: str = ""      # what PEFT's MoE conversion changed, in words ("" if nothing)


class _Names:
    """Just the module and parameter names of a model, for PEFT functions that only read names."""

    def __init__(self, arch):
        self.config = SimpleNamespace(model_type=arch.model_type)
        self._modules = arch.module_names
        params = [f"{m.name}.{p}" for m in arch.modules if m.own_params and m.kind != "other"
                  for p in ("weight", "bias")[: 2 if m.bias else 1]]
        for layer in range(arch.layers):
            params += [f"{arch.layers_path}.{layer}.{n}" for n, _, _ in arch.block(layer).params]
        self._params = params

    def named_modules(self):
        return ((n, None) for n in self._modules)

    def named_parameters(self):
        return ((n, None) for n in self._params)


def moe_conversion(arch, target_modules, target_parameters, r: int, alpha: int):
    """(target_modules, target_parameters, rank multipliers by pattern) after PEFT's transformers-5 MoE
    conversion; unchanged for models it does not convert."""
    from peft.utils import transformers_weight_conversion as conversion

    base = conversion._MODEL_TO_CONVERSION_PATTERN.get(arch.model_type)
    mapping = conversion._MOE_TARGET_MODULE_MAPPING.get(base)
    if conversion.get_checkpoint_conversion_mapping(arch.model_type) is None or not mapping \
            or not conversion._MOE_FUSED_TARGETS.get(base) or target_modules is None:
        return target_modules, target_parameters, {}
    config = SimpleNamespace(target_modules=target_modules, target_parameters=target_parameters, r=r,
                             lora_alpha=alpha, rank_pattern={}, alpha_pattern={}, exclude_modules=None,
                             modules_to_save=None, layers_to_transform=None, layers_pattern=None)
    if target_modules == "all-linear":  # what peft's _resolve_string_target_modules makes of it
        config.target_modules = {n.rsplit(".", 1)[-1] for n in arch.all_linear} | set(mapping)
    elif isinstance(target_modules, str):
        resolved = conversion._resolve_string_target_modules(config, _Names(arch), mapping)
        if not resolved:
            return target_modules, target_parameters, {}
        config.target_modules = resolved
    try:
        conversion._convert_peft_config_moe(config, _Names(arch))
    except ValueError as error:
        raise ExplorerError(f"PEFT: {error}") from None
    multipliers = {pattern: rank // r for pattern, rank in config.rank_pattern.items()}
    return config.target_modules, sorted(config.target_parameters) or None, multipliers


def match(arch, method: str, target_modules, exclude_modules=None, layers_to_transform=None,
          layers_pattern=None, modules_to_save=None, target_parameters=None, r: int = 8, alpha: int = 16) -> Match:
    """The modules (and parameters) PEFT adapts, or PEFT's complaint as an ExplorerError."""
    key = (id(arch), method, repr(target_modules), repr(exclude_modules), repr(layers_to_transform),
           repr(layers_pattern), repr(modules_to_save), repr(target_parameters), r, alpha)
    hit = _cache.get(key)
    if hit is not None and hit[0] is arch:
        return hit[1]
    try:
        result = _match(arch, method, target_modules, exclude_modules, layers_to_transform, layers_pattern,
                        modules_to_save, target_parameters, r, alpha)
    except re.error as error:  # PEFT builds regexes from layers_pattern, modules_to_save and the names
        raise ExplorerError(f"PEFT reads layers_pattern, modules_to_save and exclude_modules as parts of regular "
                            f"expressions, and one of them does not compile ({error}): use plain module "
                            "names such as layers or lm_head, or a valid regular expression.") from None
    with _lock:
        if len(_cache) > 512:
            _cache.clear()
        _cache[key] = (arch, result)
    return result


def _match(arch, method, target_modules, exclude_modules, layers_to_transform, layers_pattern, modules_to_save,
           target_parameters, r, alpha) -> Match:
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists

    asked = target_modules
    converted, multipliers = "", {}
    if method == "lora":
        before = (target_modules, target_parameters)
        target_modules, target_parameters, multipliers = moe_conversion(arch, target_modules, target_parameters, r, alpha)
        if (target_modules, target_parameters) != before and target_parameters:
            converted = (f"PEFT converts targets of this MoE model into target_parameters "
                         f"{', '.join(target_parameters)} (its transformers-5 conversion)")
    targets = set(arch.all_linear) if target_modules == "all-linear" else target_modules
    config = SimpleNamespace(target_modules=targets, exclude_modules=exclude_modules,
                             layers_to_transform=layers_to_transform, layers_pattern=layers_pattern,
                             modules_to_save=modules_to_save, target_parameters=target_parameters)
    matched, excluded, unmatched = [], [], []
    for name in arch.module_names:
        if not name:
            continue
        found = check_target_module_exists(config, name) if targets is not None else False
        if isinstance(found, _ExcludedModule):
            excluded.append(name)
        elif found:
            matched.append(name)
        else:
            unmatched.append(name)
    saved = _outermost([n for n in arch.module_names if n and modules_to_save
                        and any(re.match(rf"(^|.*\.){m}($|\..*)", n) for m in modules_to_save)])
    params = _match_params(arch, target_parameters or [], multipliers)
    if not matched and not params:
        message = _no_match_message(targets, target_modules, excluded, unmatched, layers_to_transform, layers_pattern)
        if isinstance(target_modules, list):
            missing = [e for e in target_modules if not any(n == e or n.endswith("." + e) for n in arch.module_names)]
            if missing:
                names = _brief(", ".join(missing))
                message += (f" (This model has no linear layer named {names}; its linear layers are: "
                            f"{_example(arch)}.)")
        raise ExplorerError(message)
    kinds = SUPPORTED.get(method, LINEAR_ONLY)
    unsupported = [n for n in matched if arch.by_name[n].kind not in kinds]
    if unsupported:
        cls = arch.by_name[unsupported[0]].cls
        raise ExplorerError(f"Target module {unsupported[0]} ({cls}) is not supported by PEFT's {method.upper()}: "
                            f"it adapts {', '.join(kinds)} layers only. Name linear layers (e.g. "
                            f"{_example(arch)}), or 'all-linear'.")
    return Match(tuple(matched), _by_entry(arch, asked, matched), tuple(saved), params, converted)


def _outermost(names: list[str]) -> list[str]:
    kept = []
    for name in names:
        if not any(name.startswith(k + ".") for k in kept):
            kept.append(name)
    return kept


def _match_params(arch, entries: list[str], multipliers: dict) -> tuple:
    """Parameters PEFT's _inject_parameters wraps: full name equal to an entry or ending with "." + it; the
    rank multiplier from PEFT's rank_pattern (peft.utils.other.get_pattern_key's rule)."""
    if not entries:
        return ()
    found = []
    for layer in range(arch.layers):
        prefix = f"{arch.layers_path}.{layer}."
        for local, _, shape in arch.block(layer).params:
            name = prefix + local
            if any(name == e or name.endswith("." + e) for e in entries):
                factor = next((m for pattern, m in multipliers.items() if re.match(rf"(.*\.)?({pattern})$", name)), 1)
                found.append((name, shape, factor))
    return tuple(found)


def _by_entry(arch, target_modules, matched: list[str]) -> tuple:
    if isinstance(target_modules, (set, frozenset)):
        return (("all-linear", tuple(matched)),)
    if not isinstance(target_modules, list):
        return ((str(target_modules), tuple(matched)),)
    return tuple((entry, tuple(n for n in matched if n == entry or n.endswith("." + entry)))
                 for entry in target_modules)


def _example(arch) -> str:
    return ", ".join(dict.fromkeys(lin.short for lin in arch.linears))


def _brief(value, limit: int = 200) -> str:
    """A user's value as PEFT's messages print it (str), cut short: a message is one readable line."""
    try:
        text = str(value)
    except ValueError:  # an int past Python's 4300-digit limit
        return "a number too large to show"
    return text if len(text) <= limit else text[:limit] + "…"


def _no_match_message(targets, target_modules, excluded, unmatched, layers_to_transform, layers_pattern) -> str:
    """PEFT's own NoMatchingPeftModuleError text (peft.tuners.tuners_utils.BaseTuner.inject_adapter)."""
    if excluded and not unmatched:
        return ("All modules were excluded. This is likely unintended. "
                "Check your `target_modules`, `exclude_modules` and `modules_to_save` configuration.")
    if not excluded and not targets:
        return ("No `target_modules` passed but also no `target_parameters` found. Please check the values for "
                "these arguments.")
    if not excluded:
        message = (f"Target modules {_brief(target_modules)} not found in the base model. "
                   f"Please check the target modules and try again.")
    else:
        message = ("No modules were targeted for adaptation. This might be caused by a combination of mismatched "
                   "target modules and excluded modules. Please check your `target_modules` and `exclude_modules` "
                   "configuration. You may also have only targeted modules that are marked to be saved "
                   "(`modules_to_save`).")
    if layers_to_transform is not None:
        message += f" Note: You specified 'layers_to_transform': {_brief(layers_to_transform)}."
    if layers_pattern is not None:
        message += f" You also specified 'layers_pattern': {_brief(layers_pattern)}."
    return message


def layer_span(layers: list[int]) -> str:
    """'layers 0–31', 'layer 3', 'layers 0, 2, 5'."""
    layers = sorted(set(layers))
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}–{layers[-1]}"
    return "layers " + ", ".join(map(str, layers))


def group(arch, names) -> list[tuple[str, list[int], str]]:
    """Module (or parameter) names grouped by their name inside the block and their shape (layers of two
    kinds may size the same projection differently): (local name, layer indices, a full example)."""
    groups: dict[tuple, tuple[list, str]] = {}
    modules = arch.by_name
    for name in names:
        layer, local = arch.locate(name)
        m = modules.get(name)
        key = (local, (m.in_features, m.out_features, m.kind) if m else name if layer is None else arch.block(
            layer).params)
        entry = groups.setdefault(key, ([], name))
        if layer is not None:
            entry[0].append(layer)
    return [(key[0], layers, example) for key, (layers, example) in groups.items()]


def peft_kwargs(options) -> dict:
    """PEFT's config arguments from options that carry PEFT's target fields."""
    return {"exclude_modules": peft_form(getattr(options, "exclude_modules", "")),
            "layers_to_transform": [int(v) for v in split(getattr(options, "layers_to_transform", ""))] or None,
            "layers_pattern": (split(getattr(options, "layers_pattern", "")) or [None])[0]
            if len(split(getattr(options, "layers_pattern", ""))) <= 1 else split(options.layers_pattern),
            "modules_to_save": split(getattr(options, "modules_to_save", "")) or None}
