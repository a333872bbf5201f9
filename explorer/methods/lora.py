"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

W' = W + (alpha / r)·B·A with A ∈ ℝ^{r×in}, B ∈ ℝ^{out×r}: r·(in + out) trainable parameters per
adapted linear layer, built by PEFT. rsLoRA (Kalajievska 2023) scales by alpha/√r instead.
DoRA and QLoRA reuse this file's target handling.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..costs.specs import Arch
from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term

PRESETS = ("q,v", "attention", "all-linear", "custom")


def _unambiguous(arch: Arch, names: list[str]) -> list[str]:
    """Each linear's shortest name that PEFT's suffix rule matches with nothing else: "q_proj", but GPT-2's
    "attn.c_proj" (a bare "c_proj" would also match mlp.c_proj)."""
    every = [lin.name for block in arch.blocks for lin in block.linears]
    out = []
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if all(other == name or not (other == suffix or other.endswith("." + suffix)) for other in every):
                out.append(suffix)
                break
    return list(dict.fromkeys(out))


_presets: dict[tuple, tuple] = {}


def preset_targets(arch: Arch, preset: str):
    """The presets, written as PEFT targets: the LoRA paper's q and v projections (or the fused projection
    that holds them), every attention projection, or PEFT's "all-linear" (memoized per model)."""
    key = (id(arch), preset)
    hit = _presets.get(key)
    if hit is None or hit[0] is not arch:
        if len(_presets) > 1024:
            _presets.clear()
        hit = _presets[key] = (arch, _preset_targets(arch, preset))
    return hit[1]


def _preset_targets(arch: Arch, preset: str):
    attention = [lin.name for block in arch.blocks for lin in block.linears if lin.reads in ("attn_in", "attn_core")]
    if preset == "q,v":
        shorts = {lin.short for block in arch.blocks for lin in block.linears}
        chosen = [n for n in ("q_proj", "v_proj") if n in shorts]
        fused = [lin.name for lin in arch.linears if lin.reads == "attn_in"]
        return chosen or _unambiguous(arch, fused[:1])
    if preset == "attention":
        return _unambiguous(arch, list(dict.fromkeys(attention)))
    if preset == "all-linear":  # PEFT's expansion of "all-linear": as short names where they name exactly it
        names = _unambiguous(arch, list(dict.fromkeys(arch.local_name(n) for n in sorted(arch.all_linear))))
        matched = {n for n in arch.module_names if any(n == e or n.endswith("." + e) for e in names)}
        return names if matched == set(arch.all_linear) else frozenset(arch.all_linear)
    raise ExplorerError(f"Unknown target preset '{preset}'; choose one of {', '.join(PRESETS)}.")


def target_spec(arch: Arch, options):
    """target_modules as PEFT will get it: a preset's, or the user's (a comma list, "re:<regex>", "all-linear")."""
    if options.target_preset != "custom":
        return preset_targets(arch, options.target_preset)
    spec = peft_targets.peft_form(options.target_modules)
    if spec is None and not peft_targets.split(getattr(options, "target_parameters", "")):
        raise ExplorerError("target_modules is empty: name linear layers, e.g. q_proj,v_proj "
                            "(or re:<regex>, or all-linear).")
    return spec


def resolve_match(arch: Arch, options, dora: bool = False) -> peft_targets.Match:
    _config(arch, options, dora, False)  # PEFT's own checks of the config first
    kwargs = peft_targets.peft_kwargs(options)
    peft_targets.layer_indices(getattr(options, "layers_to_transform", ""), arch.layers)
    found = peft_targets.match(arch, "lora", target_spec(arch, options), kwargs["exclude_modules"],
                               kwargs["layers_to_transform"], kwargs["layers_pattern"], kwargs["modules_to_save"],
                               peft_targets.split(getattr(options, "target_parameters", "")) or None,
                               options.r, options.lora_alpha)
    if found.params:  # PEFT's ParamWrapper (LoRA on a parameter) refuses these (peft.tuners.lora.layer)
        why = f" ({found.converted})" if found.converted else ""
        if options.lora_dropout:
            raise ExplorerError(f"PEFT: lora.ParamWrapper does not work with lora_dropout != 0{why}. Set "
                                "lora_dropout=0, or target other layers (e.g. target_preset=attention).")
        if dora:
            raise ExplorerError(f"PEFT: lora.ParamWrapper does not work with use_dora=True{why}. Target other layers "
                                "(e.g. target_preset=attention).")
    return found


def resolve_targets(arch: Arch, options) -> list[str]:
    """The full names of the modules LoRA adapts (PEFT's matching)."""
    return list(resolve_match(arch, options).targets)


@dataclass
class LoraOptions:
    r: int = option(8, "Rank r of the update B·A: trainable parameters grow linearly with it.", min=1, max=4096)
    lora_alpha: int = option(16, "Scaling numerator: the update is multiplied by alpha/r (alpha/√r with rsLoRA).",
                             min=1, max=65536)
    lora_dropout: float = option(0.05, "Dropout on the LoRA path's input during training.", min=0.0, max=0.9)
    target_preset: str = option("all-linear", "Which linear layers get an update: q and v (the LoRA paper), "
                                "all attention projections, every linear layer of the block, or a custom list.",
                                choices=PRESETS)
    target_modules: str = option("", "PEFT's target_modules (custom preset): names matched as PEFT does (a module "
                                 "whose name is or ends with '.'+entry), comma-separated; re:<regex> for a regex "
                                 "on the whole name; all-linear.")
    exclude_modules: str = option("", "PEFT's exclude_modules: names (or re:<regex>) never adapted.")
    layers_to_transform: str = option("", "PEFT's layers_to_transform: adapt only these layer indices (comma list).")
    layers_pattern: str = option("", "PEFT's layers_pattern: the name of the layer list, e.g. layers or h.")
    modules_to_save: str = option("", "PEFT's modules_to_save: modules trained in full as a copy (e.g. lm_head).")
    target_parameters: str = option("", "PEFT's target_parameters: parameters (e.g. MoE expert matrices "
                                    "mlp.experts.gate_up_proj) that get a LoRA update of their own.")
    use_rslora: bool = option(False, "rsLoRA: scale by alpha/√r, which keeps high ranks stable.")


# LoRA's starting points (PEFT's init_lora_weights). PiSSA and OLoRA, which move part of W into the adapter, are
# methods of their own (pissa.py: their saved adapter is converted for the original base).
INITS = ("default", "gaussian", "eva", "corda", "lora_ga")
REFUSED_INITS = {
    "corda": "CorDA (PEFT's preprocess_corda) moves the top of each weight's data-weighted decomposition into the "
             "adapter and subtracts it from the base weights, as PiSSA does, so its adapter only applies to the "
             "changed base; a LoRA run here saves a LoRA of the original base, so CorDA is not offered.",
    "lora_ga": "LoRA-GA (PEFT's preprocess_loraga) starts the adapter from the gradient's singular vectors and "
               "subtracts that start from the base weights, as PiSSA does, so its adapter only applies to the "
               "changed base; a LoRA run here saves a LoRA of the original base, so LoRA-GA is not offered.",
}


@dataclass
class LoraInitOptions(LoraOptions):
    init_lora_weights: str = option(
        "default", "How A and B start (PEFT's init_lora_weights); B starts at zero in all of them. default: A "
        "random (Kaiming-uniform); gaussian: A normal with std 1/r; eva: A from the top singular vectors of each "
        "layer's inputs on a few training batches (PEFT's EVA), computed on the CPU when training starts: seconds on "
        "the tiny model, minutes on the bundled one (an incremental SVD per layer at every pass). corda and lora_ga "
        "are refused: both change the base weights, so their adapter would need PiSSA's save conversion.",
        choices=INITS)
    eva_rho: float = option(1.0, "EVA's rho (PEFT's EvaConfig.rho): a layer may get up to rho·r rank, moved between "
                            "layers by explained variance. 1 keeps r everywhere (the count is exact); above 1 the "
                            "count is known only once EVA has run, and the run reports it.", min=1.0, max=10.0)
    eva_batches: int = option(4, "Training batches EVA's SVD reads, cycled until its components settle.",
                              min=1, max=64)
    eva_tau: float = option(0.99, "EVA's tau (PEFT's EvaConfig.tau): a layer's components have settled when their "
                            "cosine similarity from one batch to the next reaches tau; lower settles sooner.",
                            min=0.0, max=1.0)


# Passes over the batches EVA may take before the run is refused: PEFT cycles until every layer settles, without
# end. Measured on the bundled model (4 batches of 4 pirate rows, r 8, tau 0.9, 2 busy cores): 40 passes, 290 CPU-s,
# and 3 of its 210 layers still unsettled; the tiny model settles in a few passes.
EVA_CYCLES = 10


class _Unsettled(Exception):
    pass


class _Stopped(Exception):
    pass


def check_init(options) -> None:
    init = getattr(options, "init_lora_weights", "default")
    if init in REFUSED_INITS:
        raise ExplorerError(REFUSED_INITS[init])


def _module_update(arch: Arch, name: str, r: int, dora: bool) -> tuple[int, str]:
    m = arch.by_name[name]
    fan_in, fan_out = m.in_features, m.out_features
    per = r * (fan_in + fan_out) + (fan_out if dora and m.kind != "embedding" else 0)
    expr = f"{r}·({fan_in}+{fan_out})" + (f" + {fan_out} (magnitude)" if dora and m.kind != "embedding" else "")
    return per, expr


def lora_terms(spec, options, dora: bool = False) -> list[Term]:
    arch = spec.arch
    found = resolve_match(arch, options, dora)
    terms = []
    entry_of = {}
    for entry, names in found.by_entry:
        for name in names:
            entry_of.setdefault(name, entry)
    for local, layers, example in peft_targets.group(arch, found.targets):
        per, expr = _module_update(arch, example, options.r, dora)
        n = max(len(layers), 1)
        where = f" × {n} {peft_targets.layer_span(layers)}" if layers else ""
        matched_by = entry_of.get(example, "")
        label = local if matched_by in ("", local) else f"{local} (matched by {matched_by})"
        terms.append(Term(label, per * n, f"{expr}{where} = {per * n:,}"))
    shapes = {name: (shape, factor) for name, shape, factor in found.params}
    for local, layers, example in peft_targets.group(arch, list(shapes)):
        shape, factor = shapes[example]
        experts, a, b = (shape if len(shape) == 3 else (1, *shape))
        rank = options.r * factor  # PEFT doubles the rank of a fused gate_up_proj it converted w1+w3 into
        per = rank * experts * (a + b)
        n = max(len(layers), 1)
        terms.append(Term(f"{local} (parameter)", per * n,
                          f"{rank}·{experts} experts·({a}+{b}) × {n} {peft_targets.layer_span(layers)} = {per * n:,}"))
    for name in found.saved:
        count = arch.params_under(name)
        terms.append(Term(f"{name} (modules_to_save: a trained copy)", count, f"{count:,} parameters copied"))
    return terms


def lora_adaptation(spec, options, dora: bool = False) -> Adaptation:
    found = resolve_match(spec.arch, options, dora)
    saved_per_token, saved_per_step = dora_saved(spec.arch, found.targets) if dora else (0, 0)
    return Adaptation(lora={n: options.r for n in found.targets}, dora=dora, lora_dropout=options.lora_dropout,
                      lora_params={n: options.r * factor for n, _, factor in found.params},
                      trainable_modules=frozenset(found.saved), saved_per_token=saved_per_token,
                      saved_per_step=saved_per_step)


def dora_saved(arch: Arch, targets) -> tuple[int, int]:
    """What DoRA's forward (peft/tuners/lora/dora.py, DoraLinearLayer.forward) keeps for backward beyond LoRA's, as
    (elements per token, elements per forward), over the adapted block linears:
    - per token, the two operands of ``(m/‖W+BA‖ - 1)·base_result + m/‖W+BA‖·lora_result·scaling`` that the
      magnitude's gradient needs: the base output and the LoRA output (2·out);
    - per forward, the divisor ‖W+BA‖ (out, detached) and the scale m/‖W+BA‖ as (1, out), twice (3·out).
    Not kept: get_lora_weight's ``lora_B(lora_A(eye(in)))`` saves the identity (in²) and A's output (in·r), but
    its product is detached (‖W+BA‖ takes no gradient, DoRA §4.3), so that graph is freed when the layer's forward
    returns: one layer's at a time, gone before the loss (the peak)."""
    modules = [arch.by_name[n] for n in targets if arch.layer_of(n) is not None]
    return sum(2 * m.out_features for m in modules), sum(3 * m.out_features for m in modules)


def _config(arch: Arch, options, dora: bool, conv1d: bool):
    """PEFT's LoraConfig for these options; its own checks turned into a one-line message."""
    from peft import LoraConfig

    try:
        return LoraConfig(task_type="CAUSAL_LM", r=options.r, lora_alpha=options.lora_alpha,
                          lora_dropout=options.lora_dropout, target_modules=target_spec(arch, options),
                          target_parameters=peft_targets.split(options.target_parameters) or None,
                          use_rslora=options.use_rslora, use_dora=dora, fan_in_fan_out=conv1d,
                          **peft_targets.peft_kwargs(options))
    except (ValueError, TypeError) as error:
        raise ExplorerError(f"PEFT: {str(error).strip().splitlines()[0]}") from None


def peft_lora_config(spec, options, dora: bool = False):
    arch = spec.arch
    found = resolve_match(arch, options, dora)
    # GPT-2's Conv1D stores W transposed
    return _config(arch, options, dora, any(arch.by_name[n].kind == "conv1d" for n in found.targets))


def apply_lora(model, spec, options, dora: bool = False):
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(spec, options, dora))


def apply_with_start(model, spec, options):
    """LoRA with its chosen start. EVA's needs training batches (``apply_for_training``): built without them (the
    Calculator's count on the meta device, a recipe's config) it starts as default, with the same shapes."""
    import dataclasses

    from peft import get_peft_model

    check_init(options)
    config = peft_lora_config(spec, options)
    if options.init_lora_weights == "gaussian":
        config = dataclasses.replace(config, init_lora_weights="gaussian")
    return get_peft_model(model, config)


def apply_for_training(model, spec, options, data):
    """EVA (Paischer et al. 2024; PEFT's initialize_lora_eva_weights): an incremental SVD of each adapted layer's
    inputs at the target tokens of a few training batches; A starts as its top right singular vectors, B at zero,
    so the model is unchanged at step 0 and the base weights stay as they are."""
    if options.init_lora_weights != "eva":
        return apply_with_start(model, spec, options)
    import contextlib
    import dataclasses
    import io

    from peft import EvaConfig, get_peft_model, initialize_lora_eva_weights

    # PEFT skips a batch with fewer SVD rows (answer tokens: use_label_mask) than components, and cycles the batches
    # until every layer converges: with no batch large enough it would cycle for ever (peft.tuners.lora.eva.SVDHook).
    need = round(options.r * options.eva_rho)
    drawn = data.batches(options.eva_batches)
    tokens = [int((batch["labels"] != -100).sum()) for batch in drawn]
    usable = [batch for batch, n in zip(drawn, tokens) if n >= need]
    if not usable:
        raise ExplorerError(f"EVA computes {need} components (r·eva_rho) per layer from the answer tokens of a batch, "
                            f"and this data's batches hold at most {max(tokens, default=0)}: raise batch_size, or "
                            "lower r or eva_rho.")
    config = dataclasses.replace(peft_lora_config(spec, options), init_lora_weights="eva",
                                 eva_config=EvaConfig(rho=options.eva_rho, tau=options.eva_tau))
    peft_model = get_peft_model(model, config)
    limit, passes = EVA_CYCLES * len(usable), []

    def forward(model, inputs):  # PEFT's forward_fn_dict, counted, and left at a stop
        passes.append(1)
        if data.should_stop():
            raise _Stopped
        if len(passes) > limit:
            raise _Unsettled
        return model(**inputs)

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # PEFT prints each batch it skips
            initialize_lora_eva_weights(peft_model, dataloader=usable, forward_fn=forward, show_progress_bar=False)
    except ValueError as error:  # PEFT's own refusals (a layer that did not converge, ...)
        raise ExplorerError(f"PEFT's EVA: {str(error).strip().splitlines()[0]}") from None
    except _Stopped:
        return peft_model  # unfinished: the loop stops before training it
    except _Unsettled:
        batches = f"{len(usable)} training batch" + ("es" if len(usable) > 1 else "")
        raise ExplorerError(f"EVA's components had not settled after {limit} passes over {batches} (eva_tau "
                            f"{options.eva_tau}): lower eva_tau, or raise eva_batches.") from None
    return peft_model


METHOD = Method(
    name="lora", title="LoRA", where="linear weights (a low-rank update added beside them)",
    explanation="Freezes the model and learns, for chosen linear layers, a low-rank update B·A added to "
                "the frozen weight W. Only A and B train.",
    when_to_use="The default for almost any custom fine-tune: cheap to train, and merges into the weights "
                "so serving costs nothing extra.",
    default_lr=1e-3, options_type=LoraInitOptions, mergeable=True,
    merge_reason="B·A has the shape of W, so W + (alpha/r)·B·A is an ordinary weight: zero inference overhead.",
    uses_peft=True, terms=lora_terms, adaptation=lora_adaptation, apply=apply_with_start,
    apply_for_training=apply_for_training,
    recipe_refusal_for=lambda options: (
        "its EVA start is computed by this app's training loop from the run's first batches (PEFT's "
        "initialize_lora_eva_weights), which a recipe's Trainer does not call: it would start LoRA from PEFT's "
        "default" if options.init_lora_weights == "eva" else ""),
    validate=lambda spec, options: (check_init(options), resolve_match(spec.arch, options)), textbook="lora",
    family="lora",
    peft_type="LORA", combinations=("linear", "cat", "ties", "svd", "dare_linear", "dare_ties", "magnitude_prune"),
    artifact="LoRA adapter", switches={"use_dora": {True: "dora", False: "lora"}}, mixed_batch=True, strength=True,
    literature=("Paischer et al. 2024 (EVA, \"One Initialization to Rule them All: Fine-tuning via Explained Variance "
                "Adaptation\", abstract) claim EVA converges faster than competing initialisations and reaches the "
                "highest average score across language generation and understanding, image classification and "
                "reinforcement learning tasks (init_lora_weights=eva).",))
