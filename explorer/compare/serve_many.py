"""One base, many adapters: the chapter's "multi-tenant friendly — one frozen base; swap LoRA adapters per
customer; scales to thousands of customised behaviours from one base", measured.

Several finished LoRA-family runs on one base model are loaded as named adapters of ONE PeftModel. PEFT's
mixed-batch inference (``generate(..., adapter_names=[...])``, one name per row, "__base__" for the bare
base) answers every adapter in one batch: each LoRA layer runs the base matmul once for the whole batch and
each adapter's B·A on its own rows (PEFT's ``LoraLayer._mixed_batch_forward``).

Measured here, on the loaded models:
  - memory: bytes of the tensors held by one base with N adapters, against N merged copies (each merged copy
    built for real and measured: ``merge_and_unload`` of a fresh base with that run's adapter);
  - throughput: new tokens per second of (a) the mixed batch, one generate call for every adapter and prompt,
    (b) each merged model in turn, one batch of the prompts each, (c) one request at a time, swapping the
    active adapter between requests (``set_adapter``) as a server without mixed batches would.
And computed (the Calculator's formulas): the same memory for a large model and N up to thousands.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..errors import ExplorerError
from ..methods import METHODS
from ..models import loading
from ..models.loaded import LOADED, tensor_bytes
from ..train import runs
from ..train.runs import Run

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
MAX_ADAPTERS = 8
SERVABLE = [name for name, m in METHODS.items() if m.mixed_batch]
FLEET_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


# --------------------------------------------------------------------------- checks


def parse_run_ids(run_ids) -> list[str]:
    """Run ids from a list or a comma-separated text; a clear line for none, too many or repeats."""
    if isinstance(run_ids, str):
        run_ids = run_ids.split(",")
    ids = [str(r).strip() for r in (run_ids or []) if r is not None and str(r).strip()]
    if not ids:
        raise ExplorerError("Choose at least one finished run to serve (LoRA-family runs on one base model).")
    if len(ids) > MAX_ADAPTERS:
        raise ExplorerError(f"{len(ids)} runs given; serve at most {MAX_ADAPTERS} at once here.")
    repeated = sorted({r for r in ids if ids.count(r) > 1})
    if repeated:
        raise ExplorerError(f"Run {repeated[0]} is listed twice: list each run once.")
    return ids


def check_runs(run_ids) -> list[Run]:
    """Open and check the runs: LoRA-family adapters PEFT can mix in a batch, all on one identical base."""
    chosen = [runs.open_run(r) for r in parse_run_ids(run_ids)]
    supported = ", ".join(f"{METHODS[n].title} ({n})" for n in SERVABLE)
    for run in chosen:
        if not run.method.mixed_batch:
            raise ExplorerError(f"Run {run.run_id} uses {run.method.title} ({run.method.name}); one base serving "
                                f"many adapters in one batch needs runs of {supported}.")
        if not (run.folder / runs.ADAPTER_DIR / "adapter_model.safetensors").is_file():
            raise ExplorerError(f"The adapter of run {run.run_id} cannot be loaded: adapter_model.safetensors is "
                                "missing (only safetensors adapters are loaded).")
    first = chosen[0]
    for run in chosen[1:]:
        if run.config.model != first.config.model:
            raise ExplorerError(f"Runs {first.run_id} and {run.run_id} were trained on different base models "
                                f"({first.config.model} and {run.config.model}); one base serves only adapters "
                                "trained on it.")
        if run.method.quantized_base != first.method.quantized_base:
            quantized, other = (run, first) if run.method.quantized_base else (first, run)
            raise ExplorerError(f"Run {quantized.run_id} ({quantized.method.title}) needs a 4-bit base and run "
                                f"{other.run_id} ({other.method.title}) a float one: serve runs of one kind of base.")
    return chosen


# --------------------------------------------------------------------------- one base with N adapters


@dataclass
class Fleet:
    """One fresh base with each run's adapter loaded under the name "r0", "r1", ... (in the runs' order)."""

    model: object
    tokenizer: object
    device: str
    runs: list
    names: list
    lock: threading.Lock = field(default_factory=threading.Lock)  # set_adapter changes the model's state

    def label(self, name: str) -> str:
        return "base" if name == BASE else self.runs[self.names.index(name)].run_id


def load_fleet(chosen: list[Run]) -> Fleet:
    from peft import PeftModel

    first = chosen[0]
    precision = "bf16" if all(r.config.precision == "bf16" for r in chosen) else "fp32"
    loaded = loading.load_fresh(first.config.model, first.method, first.method.parse_options(first.options),
                                precision)
    model, names = loaded.model, [f"r{i}" for i in range(len(chosen))]
    for name, run in zip(names, chosen):
        adapter = str(run.folder / runs.ADAPTER_DIR)
        try:
            if name == "r0":
                model = PeftModel.from_pretrained(model, adapter, adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(adapter, adapter_name=name, is_trainable=False)
        except Exception as error:  # corrupt or foreign files: any loader error means "cannot load"
            raise ExplorerError(f"The adapter of run {run.run_id} cannot be loaded (missing, incomplete or "
                                f"corrupt files): {str(error)[:300]}") from None
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Fleet(model.eval(), loaded.tokenizer, loaded.device, chosen, names)


def fleet_for(run_ids) -> Fleet:
    """The runs' shared model, from the least-recently-used cache of loaded models (loaded on first use)."""
    chosen = check_runs(run_ids)
    key = "fleet:" + ",".join(run.run_id for run in chosen)
    return LOADED.get(key, lambda: load_fleet(chosen), lambda fleet: tensor_bytes(fleet.model))


def _batch(tokenizer, prompts: list[str], device: str):
    """Left-padded prompt ids and mask (decoder-only models pad on the left), as evaluate.py batches them."""
    import torch

    from ..data import chat

    pad = chat.pad_id(tokenizer)
    ids = [chat.prompt_ids(tokenizer, p) for p in prompts]
    width = max(len(i) for i in ids)
    return (torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device),
            torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device), width)


def generate(fleet: Fleet, prompts: list[str], names: list[str] | None, max_new_tokens: int,
             exact_length: bool = False, model=None) -> list[list[int]]:
    """New token ids of one greedy batch: row i is prompts[i] answered by adapter names[i] (BASE for the base;
    names None: the model as it is, e.g. a merged copy given as ``model``). ``exact_length``: every row
    generates exactly max_new_tokens (for timing: the same work each way)."""
    import torch

    from ..data import chat

    input_ids, mask, width = _batch(fleet.tokenizer, prompts, fleet.device)
    pad = chat.pad_id(fleet.tokenizer)
    extra = {"min_new_tokens": max_new_tokens} if exact_length else {}
    if names is not None:
        extra["adapter_names"] = list(names)
    with torch.no_grad():
        out = (model or fleet.model).generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                              max_new_tokens=max_new_tokens, pad_token_id=pad, **extra)
    if fleet.device == "cuda":
        torch.cuda.synchronize()
    stops = {pad, fleet.tokenizer.eos_token_id}
    replies = []
    for row in out[:, width:].tolist():
        while row and not exact_length and row[-1] in stops:
            row.pop()
        replies.append(row)
    return replies


def mixed_replies(fleet: Fleet, prompts: list[str], max_new_tokens: int, with_base: bool = True) -> dict:
    """{adapter name: [token ids per prompt]} from ONE generate call holding every adapter's rows."""
    served = ([BASE] if with_base else []) + fleet.names
    rows = generate(fleet, [p for _ in served for p in prompts], [n for n in served for _ in prompts], max_new_tokens)
    return {name: rows[i * len(prompts):(i + 1) * len(prompts)] for i, name in enumerate(served)}


def own_replies(fleet: Fleet, name: str, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """The same prompts answered by one adapter alone: the usual way, that adapter active for the whole batch
    (the base with every adapter disabled)."""
    from ..evaluate import generate_token_ids

    if name == BASE:
        with fleet.model.disable_adapter():
            return generate_token_ids(fleet.model, fleet.tokenizer, prompts, max_new_tokens, fleet.device)
    fleet.model.set_adapter(name)
    return generate_token_ids(fleet.model, fleet.tokenizer, prompts, max_new_tokens, fleet.device)


def mixed_logits(fleet: Fleet, prompts: list[str], names: list[str]):
    """Logits of one forward pass over a mixed batch (row i through adapter names[i])."""
    import torch

    input_ids, mask, _ = _batch(fleet.tokenizer, prompts, fleet.device)
    with torch.no_grad():
        return fleet.model(input_ids=input_ids, attention_mask=mask, adapter_names=list(names)).logits.float()


def own_logits(fleet: Fleet, name: str, prompts: list[str]):
    import torch

    input_ids, mask, _ = _batch(fleet.tokenizer, prompts, fleet.device)
    with torch.no_grad():
        if name == BASE:
            with fleet.model.disable_adapter():
                return fleet.model(input_ids=input_ids, attention_mask=mask).logits.float()
        fleet.model.set_adapter(name)
        return fleet.model(input_ids=input_ids, attention_mask=mask).logits.float()


# --------------------------------------------------------------------------- measured memory and throughput


def adapter_bytes(fleet: Fleet) -> dict:
    """Bytes of each adapter's LoRA tensors in the shared model (PEFT keeps them in float32)."""
    sizes = {name: 0 for name in fleet.names}
    for key, parameter in fleet.model.named_parameters():
        for name in fleet.names:
            if key.endswith(f".{name}.weight") and ".lora_" in key:
                sizes[name] += parameter.numel() * parameter.element_size()
    return sizes


def merged_copy(run: Run):
    """A fresh base with the run's adapter merged in (a plain transformers model), as a merged deployment holds."""
    loaded = loading.load_with_adapter(run.config.model, run.method, run.method.parse_options(run.options),
                                       run.config.precision, run.folder / runs.ADAPTER_DIR, f"run {run.run_id}",
                                       dequantize=run.method.quantized_base)
    return loaded.model.merge_and_unload().eval()


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(fleet: Fleet, prompts: list[str], new_tokens: int = 16, repeats: int = 3) -> dict:
    """Memory of the shared model against N merged copies, and tokens/s of three ways to answer the same
    requests (every prompt asked of every adapter, ``new_tokens`` each): the median of ``repeats`` timings
    after one warm-up. Each merged copy is built, measured and timed in turn, then dropped (N copies at once
    would hold N models in memory just to be timed)."""
    import gc
    import statistics

    requests = [(name, p) for p in prompts for name in fleet.names]  # arrivals interleave the adapters
    tokens = len(requests) * new_tokens

    def timed(work) -> float:
        work()  # warm-up
        return statistics.median(_seconds(work) for _ in range(repeats))

    def mixed():
        generate(fleet, [p for _, p in requests], [n for n, _ in requests], new_tokens, exact_length=True)

    def swapping():
        for name, prompt in requests:
            fleet.model.set_adapter(name)
            generate(fleet, [prompt], None, new_tokens, exact_length=True)

    seconds = {"mixed_batch": timed(mixed), "swap_per_request": timed(swapping)}
    merged_bytes, merged_seconds = [], []
    for run in fleet.runs:
        merged = merged_copy(run)
        merged_bytes.append(tensor_bytes(merged))
        merged_seconds.append(timed(lambda model=merged: generate(fleet, prompts, None, new_tokens,
                                                                  exact_length=True, model=model)))
        del merged
        gc.collect()
    seconds["merged_in_turn"] = sum(merged_seconds)
    shared = tensor_bytes(fleet.model)
    adapters = adapter_bytes(fleet)
    return {
        "memory": {"shared_base_and_adapters_bytes": shared, "base_bytes": shared - sum(adapters.values()),
                   "adapter_bytes": {fleet.label(n): b for n, b in adapters.items()},
                   "merged_copies_bytes": sum(merged_bytes),
                   "merged_copy_bytes": {r.run_id: b for r, b in zip(fleet.runs, merged_bytes)},
                   "ratio_merged_to_shared": sum(merged_bytes) / shared},
        "throughput": {"requests": len(requests), "new_tokens_per_request": new_tokens, "tokens": tokens,
                       "seconds": seconds, "tokens_per_second": {k: tokens / v for k, v in seconds.items()},
                       "repeats": repeats, "device": fleet.device},
    }


def fleet_figures(model: str, method_name: str | None = None, options: dict | None = None,
                  sizes=FLEET_SIZES) -> dict:
    """The Calculator's memory for serving N fine-tunes of ``model``: one frozen base (4-bit NF4, or bf16)
    plus N adapters, against N merged bf16 copies. Adapters count at PEFT's float32 (its saved size)."""
    from .. import calculator
    from ..costs import memory
    from ..methods import DEFAULT_METHOD, get
    from ..models import specs as model_specs

    method = get(method_name or DEFAULT_METHOD)
    if not method.mixed_batch:
        raise ExplorerError(f"{method.title} adapters are not served in mixed batches; choose "
                            f"{', '.join(SERVABLE)}.")
    spec = model_specs.resolve(model)
    result = calculator.calculate(spec, method.name, method.parse_options(options or {}), exact_mode="skip")
    adapter = result.adapter_file_bytes
    base_bf16 = memory.base_weight_bytes(spec.arch, "bf16")
    base_4bit = memory.base_weight_bytes(spec.arch, "bf16", nf4=True)
    rows = [{"adapters": n, "base_4bit_plus_adapters_bytes": base_4bit + n * adapter,
             "base_bf16_plus_adapters_bytes": base_bf16 + n * adapter, "merged_bf16_copies_bytes": n * base_bf16}
            for n in sizes]
    return {"model": spec.name, "method": method.name, "options": options or {},
            "adapter_trainable_params": result.trainable, "adapter_bytes": adapter,
            "base_bf16_bytes": base_bf16, "base_4bit_bytes": base_4bit, "rows": rows}


# --------------------------------------------------------------------------- one call: replies, checks, costs


def serve(run_ids, prompts, max_new_tokens: int = 32, measure_costs: bool = True, new_tokens: int = 16,
          repeats: int = 3, large_model: str = "llama-2-70b") -> dict:
    """Every adapter (and the base) answers the prompts in ONE mixed batch; each reply is checked against that
    adapter's own replies (greedy ids equal; logits of one forward pass, largest difference); with
    ``measure_costs``, measured memory and throughput (``measure``) and the Calculator's figures for
    ``large_model``. Plain JSON-able values."""
    from ..generate import check_max_new_tokens
    from .variants import check_prompts, decode

    prompts = check_prompts(prompts)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    new_tokens = check_max_new_tokens(new_tokens)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
        raise ExplorerError(f"repeats must be a whole number from 1 to 20, got {repeats!r}.")
    chosen = check_runs(run_ids)
    figures = fleet_figures(large_model, chosen[0].method.name, chosen[0].options) if measure_costs else None
    fleet = fleet_for(run_ids)
    with fleet.lock:
        mixed = mixed_replies(fleet, prompts, max_new_tokens)
        own = {name: own_replies(fleet, name, prompts, max_new_tokens) for name in mixed}
        served = list(mixed)
        logits = mixed_logits(fleet, [p for _ in served for p in prompts], [n for n in served for _ in prompts])
        _, mask, _ = _batch(fleet.tokenizer, prompts, fleet.device)
        real = mask.bool()
        diffs = {}
        for i, name in enumerate(served):
            mine = logits[i * len(prompts):(i + 1) * len(prompts)]
            diffs[name] = float((mine - own_logits(fleet, name, prompts)).abs()[real].max())
        costs = measure(fleet, prompts, new_tokens, repeats) if measure_costs else None
    labels = {name: fleet.label(name) for name in served}
    result = {
        "runs": [run.run_id for run in chosen], "model": chosen[0].config.model, "prompts": prompts,
        "adapters": [{"label": labels[n], "method": None if n == BASE else fleet.runs[fleet.names.index(n)].method.name,
                      "dataset": None if n == BASE else fleet.runs[fleet.names.index(n)].dataset_label} for n in served],
        "batch_rows": len(served) * len(prompts), "max_new_tokens": max_new_tokens,
        "replies": {labels[n]: [decode(fleet.tokenizer, ids) for ids in mixed[n]] for n in served},
        "greedy_match": {labels[n]: mixed[n] == own[n] for n in served},
        "max_abs_logit_diff": {labels[n]: diffs[n] for n in served},
        "memory": costs["memory"] if costs else None, "throughput": costs["throughput"] if costs else None,
        "calculator": figures,
    }
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> str:
    n = len(result["runs"])
    same = all(result["greedy_match"].values())
    worst = max(result["max_abs_logit_diff"].values())
    text = (f"One base answered {n} adapter{'s' if n > 1 else ''} and itself in one batch of {result['batch_rows']} "
            f"rows; every reply {'equals' if same else 'does NOT always equal'} that adapter's own greedy reply "
            f"(largest logit difference {worst:.2g}).")
    memory, speed = result["memory"], result["throughput"]
    if memory:
        text += (f" Measured: the base with {n} adapter{'s' if n > 1 else ''} holds "
                 f"{memory['shared_base_and_adapters_bytes'] / 2**20:,.0f} MiB, {n} merged copies "
                 f"{memory['merged_copies_bytes'] / 2**20:,.0f} MiB ({memory['ratio_merged_to_shared']:.2f}×).")
    if speed:
        tps = speed["tokens_per_second"]
        text += (f" Tokens/s: mixed batch {tps['mixed_batch']:.1f}, merged models in turn {tps['merged_in_turn']:.1f}, "
                 f"swapping adapters per request {tps['swap_per_request']:.1f}.")
    figures = result["calculator"]
    if figures:
        last = figures["rows"][-1]
        text += (f" The Calculator, for {last['adapters']:,} fine-tunes of {figures['model']}: one 4-bit base + "
                 f"adapters {last['base_4bit_plus_adapters_bytes'] / 2**30:,.1f} GiB against "
                 f"{last['merged_bf16_copies_bytes'] / 2**30:,.0f} GiB of merged bf16 copies.")
    return text
