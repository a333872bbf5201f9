"""Composition experiment: do two adapters trained for different tasks still work when combined?

LoRA adapters are combined with PEFT's ``add_weighted_adapter`` into a third adapter "combined":
  - "cat":    A = cat_i(w_i·s_i·A_i) (rows), B = cat_i(B_i) (columns), rank Σr_i, scaling 1, so
              B·A = Σ w_i·s_i·B_i·A_i exactly: the weighted sum of the two updates (s_i = alpha_i/r_i).
  - "linear": A = Σ sign(w_i)·√|w_i·s_i|·A_i, B = Σ √|w_i·s_i|·B_i, same rank, scaling 1. B·A then holds
              cross terms B_1·A_2 + B_2·A_1 besides the two updates: a rough approximation (equal ranks).
  - "ties":   TIES on the A and on the B factors separately (keep the largest `density` share of each, elect
              a sign per entry, average the agreeing entries), same rank.
  - "dare_linear", "dare_ties": DARE (Yu et al. 2023): drop each factor entry with probability 1 − density and
              rescale the rest by 1/density, then sum linearly or with TIES' sign election; same rank.
  - "magnitude_prune": keep the largest `density` share of each factor's entries, then sum; same rank.
              These four weigh the factors like "linear" (√|w_i·s_i|): at density 1, dare_linear and
              magnitude_prune are "linear" exactly (the tests check it).
  - "svd":    the exact weighted sum of the updates Σ w_i·ΔW_i, then its best rank-max(r_i) approximation
              (truncated SVD, per layer).
Soft prompts compose by concatenation: the combined prompt is [P_A ; P_B] (n_A + n_B virtual tokens).
Prefixes compose by concatenating their per-layer keys and values (explorer.compare.prefix_concat).

Each variant (A alone, B alone, combined) is scored on both runs' held-out data from real greedy
generations; "interference" is the combined score minus the score of that task's own adapter.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ExplorerError
from ..methods import METHODS
from ..options import whole
from .compose_demo import BUNDLED, COMPOSABLE, DEMO_RUNS, DEMO_TASKS  # noqa: F401
from .compose_demo import demo_runs, ensure_demo_runs, find_demo_run  # noqa: F401 (the experiment's demo runs)
from .pairing import DEFAULT_DENSITY, DENSITY_TYPES, Combination, check_density, check_pair, load_both  # noqa: F401

VARIANTS = ("A", "B", "combined")
def _unit_scaling(model, adapter_name: str) -> None:
    """PEFT 0.21 gives the combined adapter lora_alpha = r so that its scaling is 1 (the sources' scalings
    are already folded into the factors), but copies use_rslora from the first source: with rsLoRA the
    scaling becomes alpha/√r = √r. Put it back to 1 (fixed upstream in huggingface/peft#3449)."""
    from peft.tuners.lora import LoraLayer

    config = model.peft_config[adapter_name]
    if not config.use_rslora:
        return
    model.peft_config[adapter_name] = replace(config, use_rslora=False)
    for module in model.modules():
        if isinstance(module, LoraLayer) and adapter_name in module.scaling:
            module.scaling[adapter_name] = 1.0
            module.use_rslora[adapter_name] = False


def add_weighted(model, adapters: list[str], weights: list[float], how: str, density: float | None,
                 name: str = "combined") -> None:
    """PEFT's add_weighted_adapter as ``name`` (seeded: DARE drops entries at random), with unit scaling."""
    import torch

    torch.manual_seed(0)
    try:
        model.add_weighted_adapter(adapters=adapters, weights=list(weights), adapter_name=name,
                                   combination_type=how, density=density)
    except ValueError as error:
        raise ExplorerError(f"PEFT cannot combine these adapters with '{how}': {error}") from None
    _unit_scaling(model, name)


def build_lora_combination(run_a: str, run_b: str, how: str = "cat", weights=(1.0, 1.0),
                           density: float | None = None) -> Combination:
    """Both LoRA adapters on one fresh base, and PEFT's add_weighted_adapter of them as "combined"."""
    a, b, weights = check_pair(run_a, run_b, how, weights)  # how "cat" etc. refuses prompt-tuning runs
    density = check_density(how, density)
    model, tokenizer, device = load_both(a, b)
    add_weighted(model, ["a", "b"], weights, how, density)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    ranks = [model.peft_config[name].r for name in ("a", "b")]
    info = {"rank": model.peft_config["combined"].r, "ranks": ranks}
    if density is not None:
        info["density"] = density
    combination = Combination(model, tokenizer, device, a.method.name, how, weights, (a, b), info)
    combination.select("combined")
    return combination


def build_prompt_combination(run_a: str, run_b: str, how: str = "concat", weights=(1.0, 1.0),
                             density: float | None = None) -> Combination:
    """Both soft prompts on one fresh base, and "combined": a prompt of n_A + n_B virtual tokens whose
    embedding is [w_A·P_A ; w_B·P_B] (A first; with the default weights exactly the two prompts)."""
    import torch
    from peft import PromptTuningInit

    a, b, weights = check_pair(run_a, run_b, how, weights)  # how "concat" refuses LoRA runs
    model, tokenizer, device = load_both(a, b)
    sizes = [model.peft_config[name].num_virtual_tokens for name in ("a", "b")]
    parts = [model.prompt_encoder[name].embedding.weight.detach() for name in ("a", "b")]
    if parts[0].shape[1] != parts[1].shape[1]:
        raise ExplorerError(f"The two soft prompts have different widths ({parts[0].shape[1]} and "
                            f"{parts[1].shape[1]}): they were not trained on the same base model.")
    config = replace(model.peft_config["a"], num_virtual_tokens=sum(sizes), prompt_tuning_init=PromptTuningInit.RANDOM,
                     prompt_tuning_init_text=None, tokenizer_name_or_path=None, inference_mode=True)
    try:
        model.add_adapter("combined", config)
    except ValueError as error:
        raise ExplorerError(f"PEFT cannot build the concatenated prompt: {error}") from None
    embedding = model.prompt_encoder["combined"].embedding
    with torch.no_grad():
        embedding.weight.copy_(torch.cat([weights[0] * parts[0], weights[1] * parts[1]]).to(embedding.weight))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    info = {"num_virtual_tokens": sum(sizes), "parts": sizes}
    combination = Combination(model, tokenizer, device, a.method.name, how, weights, (a, b), info)
    combination.select("combined")
    return combination


def builder(how: str):
    """The function that builds a combination of this kind (the combination names are the methods' own)."""
    if how == "concat":
        return build_prompt_combination
    if how == "kv_concat":
        from .prefix_concat import build_prefix_combination

        return build_prefix_combination
    return build_lora_combination


# --------------------------------------------------------------------------- the experiment


def compose(run_a: str, run_b: str, how: str, weights=(1.0, 1.0), examples: int = 8, max_new_tokens: int = 32,
            sample_outputs: int = 2, density: float | None = None) -> dict:
    """Score A alone, B alone and their combination on both runs' held-out data (greedy replies to the first
    ``examples`` rows). Returns {"runs", "method", "how", "weights", "datasets", "model", "examples",
    "max_new_tokens", "scores": {variant: {dataset: score or None}}, "outputs": [{"dataset", "prompt",
    "reference", "replies": {variant: text}}], "combined": {"rank", "ranks"(, "density")} or
    {"num_virtual_tokens", "parts"(, "per_layer_keys")}, "interference": {dataset: combined minus own adapter's score (the better
    of the two when both runs share the dataset), None without a task score}, "summary": one sentence}."""
    from .. import evaluate
    from ..data import scores as scoring, sources
    from ..generate import check_max_new_tokens

    a, _, _ = check_pair(run_a, run_b, how, weights)  # cheap checks before any model loads
    density = check_density(how, density)
    examples = whole("examples", examples, 1, 64)
    sample_outputs = whole("sample_outputs", sample_outputs, 0, 16)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    combination = builder(how)(run_a, run_b, how, weights, density)
    a, b = combination.runs
    datasets = [a.config.dataset, b.config.dataset]
    own_score = {a.config.dataset: a.config.score, b.config.dataset: b.config.score}  # an upload's chosen score
    unique = list(dict.fromkeys(datasets))
    rows = {d: sources.load_dataset(d)[1] for d in unique}
    scores = {v: {} for v in VARIANTS}
    replies = {v: {} for v in VARIANTS}
    tok = combination.tokenizer
    for variant in VARIANTS:
        model = combination.select(variant)
        for d in unique:
            chosen = rows[d][:max(examples, sample_outputs)]
            prompts = [evaluate.user_and_reference(r)[0] for r in chosen]
            texts = evaluate.generate_replies(model, tok, prompts, max_new_tokens, combination.device)
            replies[variant][d] = texts
            task = scoring.task_for(d, own_score.get(d, ""))
            scored = list(zip(texts, chosen))[:examples]
            scores[variant][d] = None if task is None else float(task.score(
                [t for t, _ in scored], [evaluate.user_and_reference(r)[1] for _, r in scored]))
    outputs = []
    for d in unique:
        for i, row in enumerate(rows[d][:sample_outputs]):
            prompt, reference = evaluate.user_and_reference(row)
            outputs.append({"dataset": d, "prompt": prompt, "reference": reference,
                            "replies": {v: replies[v][d][i] for v in VARIANTS}})
    interference = {}
    for d in unique:
        own = [scores[v][d] for v, dataset in zip(("A", "B"), datasets) if dataset == d]
        combined = scores["combined"][d]
        interference[d] = None if combined is None or None in own else combined - max(own)
    result = {"runs": [a.folder.name, b.folder.name], "method": combination.method, "how": how,
              "weights": list(combination.weights), "datasets": datasets, "model": a.config.model,
              "examples": {d: min(examples, len(rows[d])) for d in unique}, "max_new_tokens": max_new_tokens,
              "scores": scores, "outputs": outputs, "combined": combination.info, "interference": interference}
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> str:
    """One plain sentence about the measurement."""
    unique = list(dict.fromkeys(result["datasets"]))
    w, combined = result["weights"], result["scores"]["combined"]
    artifact = METHODS[result["method"]].artifact
    kind = artifact + ("es" if artifact.endswith(("x", "s")) else "s")
    density = result["combined"].get("density")
    head = (f"Combining the two {kind} ({result['how']}" + (f", density {density:g}" if density is not None else "")
            + f", weights {w[0]:g} and {w[1]:g})")
    same = (f"; both runs trained on {unique[0]}, so this stacks two adapters for one task rather than "
            "composing two tasks") if len(unique) == 1 else ""
    known = {d: v for d, v in result["interference"].items() if v is not None}
    if not known:
        return f"{head} gives no automatic score (uploaded datasets have none): compare the replies{same}."
    parts = "; ".join(f"{d} {combined[d]:.2f} against its own adapter's {combined[d] - v:.2f} ({v:+.2f})"
                      for d, v in known.items())
    if all(combined[d] - v == 0 for d, v in known.items()):
        verdict = "the adapters alone score 0 on their own tasks, so there is nothing to lose yet (train longer)"
    elif min(known.values()) < 0:
        verdict = "the combination lost ground on at least one task: interference"
    else:
        verdict = "no interference measured on these examples"
    n = ", ".join(str(k) for k in dict.fromkeys(result["examples"].values()))
    return f"{head} scores {parts} on {n} held-out examples each: {verdict}{same}."
