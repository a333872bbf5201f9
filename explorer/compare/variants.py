"""Compare a saved run's base, adapted and merged models: outputs, merge fidelity, latency, held-out scores.

One session per run holds the adapted model (the adapter active, unmerged) and the merged model (the
adapter folded into the base weights, a plain transformers model). The base column uses the shared
inference copy of the base model (explorer.models.loading), and PEFT's ``disable_adapter`` gives the same
logits from the adapted model's own weights (a test checks they are equal exactly). Sessions live in
the same least-recently-used memory budget as the base models (explorer.models.loaded).

Methods that cannot merge (prompt tuning, prefix tuning, Houlsby adapters) get no merged model and
the method's one-sentence reason. Head-only and full fine-tuning produce a plain model already:
their "merged" model is the adapted one. A classifier or embedding head gives labels or vectors, not replies:
explorer.compare.heads compares those runs instead. QLoRA merges into the de-quantized (float) base; merging
into the 4-bit weights themselves re-rounds them, and ``merge_fidelity`` measures that rounding too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .. import evaluate, scored
from ..data import chat, probe, scores, sources
from ..errors import ExplorerError
from ..methods.base import Method
from ..models import loading
from ..models.loaded import LOADED, tensor_bytes
from ..train import runs
from ..train.runs import Run, open_run
from . import heads

VARIANTS = ("base", "adapted", "merged")


def not_mergeable_reason(method: Method) -> str | None:
    return None if method.mergeable else method.merge_reason


# --------------------------------------------------------------------------- building the variants


def _load_adapted(run: Run, dequantize: bool = False):
    """A fresh base (never the shared inference copy) with the run's adapter loaded, in eval mode.
    ``dequantize``: a 4-bit base turned into float weights first (what the merge folds into)."""
    method = run.method
    loaded = loading.load_with_adapter(run.config.model, method, method.parse_options(run.options),
                                       run.config.precision, run.folder / runs.ADAPTER_DIR, f"run {run.run_id}",
                                       dequantize=dequantize)
    return loaded.model, loaded.tokenizer, loaded.device


def _merge(peft_model):
    return peft_model.merge_and_unload().eval()


@dataclass
class Session:
    run: Run
    tokenizer: object
    device: str
    base: object
    adapted: object
    merged: object | None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def models(self) -> dict:
        return {"base": self.base, "adapted": self.adapted, "merged": self.merged}


def _build_session(run: Run) -> Session:
    base = loading.load(run.config.model)
    adapted, tokenizer, device = _load_adapted(run)
    if run.method.new_model:  # full fine-tuning, a head: the trained model is the result, nothing to merge
        merged = adapted
    elif not run.method.mergeable:
        merged = None
    else:
        # LoRA, DoRA, IA³; a 4-bit base (QLoRA) merges into its de-quantized (float) copy.
        merged = _merge(_load_adapted(run, dequantize=run.method.quantized_base)[0])
    return Session(run, tokenizer, device, base.model, adapted, merged)


def session(run_id: str) -> Session:
    """The run's loaded variants, from the shared least-recently-used cache (loaded on first use)."""
    run = open_run(run_id)
    if heads.head_kind(run):  # labels or vectors, not replies: nothing to generate, time or export
        raise ExplorerError(f"Run {run.run_id} trained a {heads.head_kind(run)} head, which gives labels or "
                            "vectors, not replies: Compare shows what it says about each held-out text instead.")
    return LOADED.get("compare:" + run.run_id, lambda: _build_session(run),
                      lambda s: tensor_bytes(s.adapted) + (0 if s.merged in (None, s.adapted) else
                                                           tensor_bytes(s.merged)))


# --------------------------------------------------------------------------- outputs


def check_prompts(prompts) -> list[str]:
    from ..generate import check_prompt

    if isinstance(prompts, str):
        prompts = prompts.splitlines()
    prompts = [p for p in (prompts or []) if p and str(p).strip()]
    if not prompts:
        raise ExplorerError("The prompt is empty: type a prompt (one per line for several), or use the run's "
                            "held-out prompts.")
    if len(prompts) > 32:
        raise ExplorerError(f"{len(prompts)} prompts given; compare at most 32 at once.")
    return [check_prompt(p) for p in prompts]


def heldout_prompts(run_id: str, limit: int = 4) -> list[str]:
    run = open_run(run_id)
    if heads.head_kind(run):  # every held-out text: a head's table is cheap to fill
        return heads.heldout_texts(run, heads.MAX_TEXTS)
    _, heldout = sources.load_dataset(run.config.dataset)
    return [evaluate.user_and_reference(row)[0] for row in heldout[:limit]]


def check_strength(method: Method, strength) -> float:
    """The adapter strength: a number from -1 to 3 (1 = as trained); other than 1 only where the method's whole
    update is scaled by PEFT's scaling (LoRA's alpha/r)."""
    import math

    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or not -1 <= strength <= 3:
        raise ExplorerError(f"adapter strength must be a number from -1 to 3 (1 = as trained), got {strength!r}.")
    if strength != 1 and not method.strength:
        raise ExplorerError(f"Adapter strength scales a LoRA update (PEFT's scaling); {method.title} has no such "
                            "scale: leave the strength at 1.")
    return float(strength)


def adapter_strength(model, strength: float):
    """A context in which every LoRA layer's update is multiplied by ``strength`` (PEFT's rescale_adapter_scale:
    W + strength·(alpha/r)·B·A; 0 is the base, 1 the trained adapter, above 1 extrapolates)."""
    from contextlib import nullcontext

    if strength == 1:
        return nullcontext()
    from peft.helpers import rescale_adapter_scale

    return rescale_adapter_scale(model, float(strength))


def generate_all(s: Session, prompts: list[str], max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0, strength: float = 1.0) -> dict[str, list[list[int]] | None]:
    """New token ids per variant and prompt; greedy unless temperature > 0 (then the same seed per column).
    ``strength`` scales the adapted column's update (the merged column stays as trained)."""
    out = {}
    for name, model in s.models.items():
        if model is None:
            out[name] = None
            continue
        with adapter_strength(model, strength if name == "adapted" else 1):
            out[name] = evaluate.generate_token_ids(model, s.tokenizer, prompts, max_new_tokens, s.device,
                                                    temperature=temperature, seed=seed)
    return out


def token_diff(tokenizer, ids: list[int], reference: list[int]) -> list[tuple[str, bool]]:
    """The reply as (token text, differs from the base reply) pieces: difflib on token ids."""
    import difflib

    same = [False] * len(ids)
    for block in difflib.SequenceMatcher(a=reference, b=ids, autojunk=False).get_matching_blocks():
        for j in range(block.b, block.b + block.size):
            same[j] = True
    return [(tokenizer.decode([t], skip_special_tokens=True), not same[i]) for i, t in enumerate(ids)]


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- merge fidelity


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()


def max_abs_logit_diff(model_a, model_b, sequences) -> float:
    return max(float((logits(model_a, ids) - logits(model_b, ids)).abs().max()) for ids in sequences)


def fidelity_sequences(s: Session, prompts: list[str], adapted_ids: list[list[int]]):
    """Each prompt followed by the adapted model's reply: the positions where merging could matter."""
    import torch

    return [torch.tensor([chat.prompt_ids(s.tokenizer, p) + list(reply)], device=s.device)
            for p, reply in zip(prompts, adapted_ids)]


def qlora_rounding(s: Session, sequences, prompts: list[str], max_new_tokens: int,
                   adapted_texts: list[str]) -> dict:
    """Merge the QLoRA adapter into the 4-bit weights (PEFT de-quantizes, adds, re-quantizes) and
    measure what that rounding does to the update and the outputs; the copy is dropped afterwards."""
    import copy

    from . import qlora_merge

    merged_4bit = _merge(copy.deepcopy(s.adapted))  # merging changes the 4-bit weights: a copy
    report = qlora_merge.rounding_report(s.adapted, merged_4bit)
    ids = evaluate.generate_token_ids(merged_4bit, s.tokenizer, prompts, max_new_tokens, s.device)
    texts = [decode(s.tokenizer, r) for r in ids]
    return {**report, "max_abs_logit_diff": max_abs_logit_diff(s.adapted, merged_4bit, sequences),
            "greedy_match": texts == adapted_texts, "explanation": qlora_merge.explain(report)}


# --------------------------------------------------------------------------- latency


def generation_ms_per_token(s: Session, model, prompt: str, new_tokens: int) -> float:
    """Milliseconds per token of one greedy generation of exactly ``new_tokens`` tokens (bench/ times it too)."""
    import time

    import torch

    ids = torch.tensor([chat.prompt_ids(s.tokenizer, prompt)], device=s.device)
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=chat.pad_id(s.tokenizer))
    if s.device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / new_tokens


def latency_ms_per_token(s: Session, prompt: str, new_tokens: int = 24, repeats: int = 5) -> dict:
    """Median milliseconds per generated token of each variant, after one warm-up each.

    Variants are timed in turn within each repeat (in a rotating order), so a slow moment of the machine
    hits all of them."""
    import statistics

    live = {name: m for name, m in s.models.items() if m is not None}
    samples = {name: [] for name in live}
    for model in live.values():
        generation_ms_per_token(s, model, prompt, new_tokens)
    names = list(live)
    for r in range(repeats):  # the order rotates, so no variant always runs first (or right after another)
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(generation_ms_per_token(s, live[name], prompt, new_tokens))
    result = {name: (statistics.median(samples[name]) if name in samples else None) for name in VARIANTS}
    return result


def measure_cost(run_id: str, prompt: str, new_tokens: int = 24, repeats: int = 5) -> dict:
    """Measured latency and tokens/s of the three variants, their overhead against the base, and the
    Calculator's FLOP overhead beside them."""
    s = session(run_id)
    prompt = check_prompts([prompt])[0]
    with s.lock:
        latency = latency_ms_per_token(s, prompt, new_tokens, repeats)
    return {"latency_ms_per_token": latency, "tokens_per_second": {v: (1000 / ms if ms else None)
                                                                 for v, ms in latency.items()},
            "latency_overhead_percent": overhead_percent(latency),
            "flop_overhead_percent": calculator_overhead_percent(s.run), "new_tokens": new_tokens,
            "repeats": repeats, "device": s.device}


def overhead_percent(latency: dict) -> dict:
    base = latency.get("base")
    return {name: (None if latency.get(name) is None or not base else 100 * (latency[name] / base - 1))
            for name in ("adapted", "merged")}


def calculator_overhead_percent(run: Run) -> dict:
    """The Calculator's inference FLOP overhead for the same method, options and model (exact formulas)."""
    from .. import calculator
    from ..models import specs as model_specs

    spec = model_specs.resolve(run.config.model)
    result = calculator.calculate(spec, run.method.name, run.method.parse_options(run.options), exact_mode="skip")
    f = result.flops
    return {"adapted": 100 * f.inference_overhead_per_token_unmerged / f.base_forward_per_token,
            "merged": None if not run.method.mergeable else
            100 * f.inference_overhead_per_token_merged / f.base_forward_per_token}


# --------------------------------------------------------------------------- held-out evaluation


def evaluate_heldout(run_id: str, examples: int = 8, probe_examples: int = 0) -> dict:
    if not isinstance(examples, int) or not 1 <= examples <= 64:
        raise ExplorerError(f"held-out examples must be a whole number from 1 to 64, got {examples!r}.")
    if not isinstance(probe_examples, int) or not 0 <= probe_examples <= len(probe.questions()):
        raise ExplorerError(f"probe questions must be a whole number from 0 to {len(probe.questions())}, "
                            f"got {probe_examples!r}.")
    s = session(run_id)
    with s.lock:
        return heldout_eval(s, examples, probe_examples=probe_examples)


def heldout_eval(s: Session, examples: int = 8, max_new_tokens: int | None = None, probe_examples: int = 0) -> dict:
    """Task score (from real greedy generations) and mean held-out loss of each variant; with
    ``probe_examples``, the share of the forgetting probe's general questions each variant answers."""
    run = s.run
    _, rows = sources.load_dataset(run.config.dataset)
    rows = rows[:examples]
    task = scores.task_for(run.config.dataset, run.config.score)
    encoded, _ = chat.encode_dataset(s.tokenizer, rows, run.config.seq_len)
    pad = chat.pad_id(s.tokenizer)
    tokens = max_new_tokens or run.config.max_new_tokens
    result = {"examples": len(rows), "task": task.name if task else None, "task_score": {}, "heldout_loss": {},
              "probe_score": {}, "probe_right": {}, "probe_examples": probe_examples}
    asked = scored.ScoredQuestions(rows, task, probe_examples)  # task and probe replies: one batched generation
    for name, model in s.models.items():
        if model is None:
            for key in ("task_score", "heldout_loss", "probe_score", "probe_right"):
                result[key][name] = None
            continue
        task_score, probe_score = asked.scores(asked.ask(model, s.tokenizer, tokens, s.device))
        result["task_score"][name], result["probe_score"][name] = task_score, probe_score
        result["probe_right"][name] = None if probe_score is None else round(probe_score * probe_examples)
        result["heldout_loss"][name] = evaluate.heldout_loss(model, encoded, pad, s.device, limit=examples)
    return result


# --------------------------------------------------------------------------- one comparison


def run_comparison(run_id: str, prompts, max_new_tokens=32, temperature: float = 0.0, seed: int = 0,
                   measure_latency: bool = True, heldout_examples: int = 0, probe_examples: int = 0,
                   strength: float = 1.0) -> dict:
    """Everything the Compare tab and the ``compare`` CLI show, as plain JSON-able values. ``strength`` scales
    the adapted column's update; merge fidelity is measured at strength 1 only (the merged model is)."""
    import math

    from ..generate import check_max_new_tokens

    run = open_run(run_id)
    if heads.head_kind(run):  # a classifier or embedding head: per-text labels or retrievals
        strength = check_strength(run.method, strength)  # a head has no such scale: only 1
        return {**heads.run_comparison(run, prompts), "strength": strength}
    prompts = check_prompts(prompts)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and 0 <= temperature <= 5):
        raise ExplorerError(f"temperature must be between 0 (greedy) and 5, got {temperature!r}.")
    strength = check_strength(run.method, strength)
    s = session(run_id)
    run, tok = s.run, s.tokenizer
    with s.lock:  # PEFT's disable_adapter and merges change model state: one comparison at a time per run
        ids = generate_all(s, prompts, max_new_tokens, temperature, seed, strength)
        greedy = ids if temperature == 0 and strength == 1 else generate_all(s, prompts, max_new_tokens)
        texts = {v: None if ids[v] is None else [decode(tok, r) for r in ids[v]] for v in VARIANTS}
        pieces = {v: None if ids[v] is None else [token_diff(tok, r, b) for r, b in zip(ids[v], ids["base"])]
                  for v in ("adapted", "merged")}
        fidelity = {"max_abs_logit_diff": None, "greedy_match": None}
        if s.merged is not None:
            sequences = fidelity_sequences(s, prompts, greedy["adapted"])
            fidelity = {"max_abs_logit_diff": 0.0 if s.merged is s.adapted else
                        max_abs_logit_diff(s.adapted, s.merged, sequences),
                        "greedy_match": greedy["adapted"] == greedy["merged"]}
            if run.method.quantized_base:
                fidelity["merge_into_4bit"] = qlora_rounding(
                    s, sequences, prompts, max_new_tokens, [decode(tok, r) for r in greedy["adapted"]])
    cost = measure_cost(run_id, prompts[0]) if measure_latency else {}
    heldout = evaluate_heldout(run_id, heldout_examples, probe_examples) if heldout_examples else None
    single = len(prompts) == 1
    return {
        "run_id": run.run_id, "method": run.method.name, "model": run.config.model, "dataset": run.config.dataset,
        "mergeable": run.method.mergeable, "merge_reason": run.method.merge_reason,
        "not_mergeable_reason": not_mergeable_reason(run.method),
        "nothing_to_merge": run.method.new_model,
        "prompts": prompts, "decoding": "greedy" if temperature == 0 else f"sampling, temperature {temperature}, seed {seed}",
        "outputs": {v: (t[0] if single else t) if t is not None else None for v, t in texts.items()},
        "outputs_per_prompt": texts, "pieces": pieces,
        "max_abs_logit_diff_adapted_vs_merged": fidelity["max_abs_logit_diff"],
        "greedy_match": fidelity["greedy_match"], "fidelity": fidelity,
        "latency_ms_per_token": cost.get("latency_ms_per_token"), "tokens_per_second": cost.get("tokens_per_second"),
        "latency_overhead_percent": cost.get("latency_overhead_percent"),
        "flop_overhead_percent": calculator_overhead_percent(run),
        "task_score": None if heldout is None else heldout["task_score"],
        "heldout_loss": None if heldout is None else heldout["heldout_loss"],
        "heldout_examples": None if heldout is None else heldout["examples"],
        "probe_score": None if heldout is None else heldout["probe_score"],
        "probe_right": None if heldout is None else heldout["probe_right"],
        "probe_examples": None if heldout is None else heldout["probe_examples"],
        "strength": strength,
    }
