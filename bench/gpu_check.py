"""GPU readiness in one run: the app's training, memory prediction and merge on a CUDA GPU, in one table.

Usage: python bench/gpu_check.py [--random-weights] [--wheels DIR] [--model smollm2-135m-instruct]
                                 [--methods lora,qlora,dora,prompt] [--steps 8] [--batch-size 8] [--seq-len 256]
                                 [--allow-cpu]
On a bare GPU machine (no network, its own torch; the project tree alone): python bench/gpu_check.py --random-weights
(docs/gpu.md). Target: under 300 s on one GPU, start-up included.

For each method, on the bundled model in bf16 (QLoRA: its base in bitsandbytes 4-bit NF4, as the app loads it):

1. the app's own run: ``--steps`` optimizer steps through explorer.train.lifecycle.execute (the worker's path),
   with torch.cuda.max_memory_allocated from the first step on (the loop resets the peak after loading) beside
   the Calculator's prediction for the same settings, and the trainable parameters measured beside the
   Calculator's formula;
2. a plain PEFT + torch loop of the same steps (bench/train_throughput.py's ``plain_round``: forward, backward,
   clip, AdamW, a CUDA sync per step) on a model built the same way: app tokens/s / plain tokens/s;
3. the merge, as the Compare tab does it (explorer.compare.variants.run_comparison): the largest |adapted -
   merged| logit over two prompts and their greedy replies, and whether the greedy replies match; prompt
   tuning cannot merge and says so.

``--random-weights`` builds the model's architecture from its config.json with random weights (seed 0) in a
temporary models folder: the bundled model's from bench/smollm2_config/ (its config and tokenizer files, copied
from the converted model), any other model's from its own folder. Memory, throughput and merge fidelity do not
need trained weights, and a bare machine has neither the 540 MB converted model nor the package it comes from.

It runs with the torch, transformers and peft it finds (checked against bench/gpu_machine.py's MINIMUM_VERSIONS
at start, and printed). A method whose base needs a package that is not installed (QLoRA without bitsandbytes)
is a row that says so.
``--wheels DIR`` unpacks every .whl in DIR into a temporary folder put first on the path (no pip, no index, no
dependency resolution: the machine has no network). Exit status: 0 when every method that could run checked out
(missing packages included), 1 when something is wrong (a failed run, trainable parameters != the Calculator's,
a merge beyond MERGE_TOLERANCE, over the time target on a GPU), 2 when it cannot start (no CUDA without
``--allow-cpu``, a package too old). ``--allow-cpu`` runs the same steps on the CPU (fp32, peak = the process's
resident memory): the tests' dry run on the tiny model, where no GPU is lent.
"""

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

from explorer.errors import ExplorerError  # noqa: E402  (explorer's top modules import no third-party package)
from explorer.models import provision  # noqa: E402
from gpu_machine import (BUNDLED_CONFIG, MINIMUM_VERSIONS, add_wheels, installed_versions,  # noqa: E402,F401
                         random_weights_model, too_old)

GIB = 1024 ** 3
PROMPTS = ["Where is the treasure buried?", "What is the capital of France?"]
TARGET_SECONDS = 300
# Largest |adapted - merged| logit that is rounding, not a wrong merge. fp32: the tests' bound. bf16 keeps 8
# significant bits: a logit between 16 and 32 is rounded to a multiple of 0.125, and the merged weights
# W + s·B·A are rounded once more than the adapted path's; 8 such steps of a large logit are allowed.
MERGE_TOLERANCE = {"fp32": 1e-3, "bf16": 1.0}
NO_CUDA = ("gpu_check: no CUDA device here (torch.cuda.is_available() is False): run it on a machine with a GPU, "
           "or pass --allow-cpu for a dry run of the same steps on the CPU.")


@dataclass
class Row:
    method: str
    trainable: int = 0
    calculator_trainable: int = 0
    peak_bytes: float = 0.0
    predicted_bytes: float = 0.0
    app_tokens_per_second: float = 0.0
    plain_tokens_per_second: float = 0.0
    merge_max_logit_diff: float | None = None     # None: the method cannot merge
    greedy_match: bool | None = None
    not_mergeable: str = ""
    seconds: float = 0.0
    missing: str = ""   # the method needs a package that is not installed here: what its load said
    failed: str = ""    # the method's run failed for another reason: something is wrong

    @property
    def memory_ratio(self) -> float:
        return self.peak_bytes / self.predicted_bytes if self.predicted_bytes else float("nan")

    @property
    def speed_ratio(self) -> float:
        return self.app_tokens_per_second / self.plain_tokens_per_second if self.plain_tokens_per_second else float("nan")


def config_for(model: str, method: str, steps: int, batch_size: int, seq_len: int, cuda: bool):
    """The run's settings: no task scores, probes or watched replies (this checks training, memory and merging;
    the watch's generations would add to the time and, after the peak is reset, to the peak), one held-out loss."""
    from explorer.train.config import TrainConfig

    return TrainConfig(model=model, method=method, dataset="pirate", steps=steps, batch_size=batch_size,
                       seq_len=seq_len, precision="bf16" if cuda else "fp32", eval_every=10 ** 5, eval_examples=0,
                       eval_loss_examples=1, probe_examples=0, score_base=False, watch_every=0)


def import_error_in(error: BaseException | None) -> ImportError | None:
    """The ImportError behind ``error`` (itself, or what it was raised from or while handling), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ImportError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def missing_package(config) -> str:
    """After a failed run: what an ImportError said when the base was loaded the method's way (QLoRA's 4-bit
    load without bitsandbytes), or "" when the failure is not that. A package counts as missing for the method
    only when the plain base loads: anything else that cannot be imported is this check's failure."""
    from explorer.methods import METHODS
    from explorer.models import loading

    method = METHODS[config.method]
    try:
        try:
            loading.load_fresh(config.model, method, method.parse_options({}), config.precision)
            return ""
        except Exception as error:  # the app wraps loader errors in its own one-line message: look beneath
            cause = import_error_in(error)
        if cause is None:
            return ""
        try:
            loading.load_fresh(config.model, None, None, config.precision)
        except Exception:
            return ""
        return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    finally:
        release_loaded_models()


def check_method(config) -> Row:
    from train_throughput import plain_round

    from explorer.compare import variants
    from explorer.methods import METHODS
    from explorer.train import lifecycle

    started = time.time()
    outcome = lifecycle.execute(lifecycle.create(config, {}))
    if outcome.state != "done":
        missing = missing_package(config)
        return Row(config.method, missing=missing, failed="" if missing else outcome.error,
                   seconds=time.time() - started)
    summary = outcome.summary
    method = METHODS[config.method]
    try:
        plain = plain_round(config, config.learning_rate or method.default_lr)
        compared = variants.run_comparison(summary["run_id"], PROMPTS, 16, measure_latency=False)
    except Exception as error:  # wrong, but the other methods still get their rows; the traceback says where
        traceback.print_exc()
        return Row(config.method, failed=f"{type(error).__name__}: {str(error)[:300]}", seconds=time.time() - started)
    finally:
        release_loaded_models()
    return Row(config.method, summary["trainable_params"], summary["calculator_trainable_params"],
               summary["peak_memory_bytes"], summary["predicted_peak_bytes"], summary["tokens_per_second"], plain,
               compared.get("max_abs_logit_diff_adapted_vs_merged"), compared.get("greedy_match"),
               compared.get("not_mergeable_reason") or "", time.time() - started)


def release_loaded_models() -> None:
    """Drop Compare's models (base, adapted, merged) so that the next method's peak is its own training's."""
    import torch

    from explorer.models.loaded import LOADED

    for key in LOADED.keys():
        LOADED.drop(key)
    gc.collect()  # and the models a failed run's probe loaded
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rate(tokens_per_second: float) -> str:
    """Whole tokens/s on a GPU (thousands); three significant figures where a loaded CPU makes a few."""
    return f"{tokens_per_second:,.0f}" if tokens_per_second >= 100 else f"{tokens_per_second:.3g}"


def table(rows: list[Row], device: str) -> str:
    """One table: every figure measured in this run, beside the Calculator's where it predicts one."""
    peak = "peak GiB (max_memory_allocated)" if device.startswith("cuda") else "peak GiB (process RSS)"
    header = ["method", "trainable = Calculator", peak, "Calculator GiB", "measured / predicted",
              "app tok/s", "plain tok/s", "app / plain", "max abs(adapted - merged) logit", "greedy match", "s"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        if r.missing or r.failed:
            said = f"not run here, a package is missing: {r.missing}" if r.missing else f"FAILED: {r.failed}"
            lines.append(" | ".join([r.method, said[:300]] + [""] * (len(header) - 3) + [f"{r.seconds:.0f}"]))
            continue
        merge = "cannot merge" if r.merge_max_logit_diff is None else f"{r.merge_max_logit_diff:.3g}"
        match = "" if r.greedy_match is None else ("yes" if r.greedy_match else "NO")
        lines.append(" | ".join([
            r.method, f"{r.trainable:,} {'=' if r.trainable == r.calculator_trainable else '!='} "
            f"{r.calculator_trainable:,}", f"{r.peak_bytes / GIB:.3f}", f"{r.predicted_bytes / GIB:.3f}",
            f"{r.memory_ratio:.2f}", rate(r.app_tokens_per_second), rate(r.plain_tokens_per_second),
            f"{r.speed_ratio:.3f}", merge, match, f"{r.seconds:.0f}"]))
    return "\n".join(f"| {line} |" for line in lines)


def problems(rows: list[Row], precision: str, total: float, cuda: bool) -> list[str]:
    """What is wrong (a missing package is not): one line each."""
    found = [f"{r.method} failed: {r.failed}" for r in rows if r.failed]
    ran = [r for r in rows if not (r.failed or r.missing)]
    found += [f"{r.method}: {r.trainable:,} trainable parameters measured, the Calculator says "
              f"{r.calculator_trainable:,}" for r in ran if r.trainable != r.calculator_trainable]
    tolerance = MERGE_TOLERANCE[precision]
    found += [f"{r.method}: merged differs from adapted by {r.merge_max_logit_diff:.3g} in a logit "
              f"(tolerance in {precision}: {tolerance:g})" for r in ran
              if r.merge_max_logit_diff is not None and r.merge_max_logit_diff > tolerance]
    if precision == "fp32":  # bf16 rounding within the tolerance can flip a near tie of random weights
        found += [f"{r.method}: merged and adapted greedy replies differ" for r in ran if r.greedy_match is False]
    if cuda and total > TARGET_SECONDS:
        found.append(f"took {total:.0f} s, over the {TARGET_SECONDS} s target")
    return found


def warm_up_cuda() -> None:
    """Pay CUDA's one-time costs (cuBLAS handles and workspaces, lazily loaded kernels, the optimizer's first
    step) before the first method: both loops time their first step, and the app's loop runs first."""
    import torch

    x = torch.randn(512, 576, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(576, 1536, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    (x @ w).float().square().mean().backward()
    torch.optim.AdamW([x, w]).step()
    torch.cuda.synchronize()


def device_name() -> str:
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=provision.BUNDLED_NAME)
    parser.add_argument("--methods", default="lora,qlora,dora,prompt")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--random-weights", action="store_true",
                        help="the model's architecture from its config.json, random weights (no weights file needed)")
    parser.add_argument("--wheels", type=Path, help="a folder of extra .whl files to put on the path first")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA device")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        wheels = add_wheels(args.wheels, Path(scratch) / "wheels") if args.wheels else []
        versions = installed_versions()  # after the wheels: they may bring newer transformers or peft
        old = too_old(versions)
        if old:
            print("gpu_check: cannot run with these packages:\n  " + "\n  ".join(old), file=sys.stderr)
            raise SystemExit(2)
        import torch

        cuda = torch.cuda.is_available()
        if not cuda and not args.allow_cpu:
            print(NO_CUDA, file=sys.stderr)
            raise SystemExit(2)
        print(f"gpu_check: python {sys.version.split()[0]}, "
              + ", ".join(f"{name} {version}" for name, version in versions.items())
              + f", CUDA {torch.version.cuda or 'none'}, {device_name()}"
              + (f"; wheels added: {', '.join(wheels)}" if wheels else ""), flush=True)
        if cuda:
            warm_up_cuda()
        rows = run_methods(args, Path(scratch), cuda)
    total = time.time() - started
    precision = "bf16" if cuda else "fp32"
    print(f"== gpu_check: {args.model} ({'RANDOM weights, seed 0' if args.random_weights else 'its real weights'}), "
          f"{args.steps} steps, batch {args.batch_size}, sequence length {args.seq_len}, {precision} on "
          f"{device_name()}, torch {versions['torch']}, transformers {versions['transformers']}, "
          f"peft {versions['peft']}, {time.strftime('%Y-%m-%d')}")
    print(table(rows, device_name()))
    missing = [f"{r.method} ({r.missing})" for r in rows if r.missing]
    if missing:
        print("missing here, not a failure: " + "; ".join(missing))
    print(f"total {total:.0f} s (target: under {TARGET_SECONDS} s on one GPU"
          f"{'' if cuda else '; this was a CPU dry run'})")
    wrong = problems(rows, precision, total, cuda)
    if wrong:
        print("gpu_check: something is wrong:\n  " + "\n  ".join(wrong), file=sys.stderr)
        raise SystemExit(1)
    return rows


def run_methods(args: argparse.Namespace, scratch: Path, cuda: bool) -> list[Row]:
    """Every method's row, with the check's runs (and with --random-weights its model) in ``scratch``."""
    saved = {name: os.environ.get(name) for name in ("EXPLORER_RUNS_DIR", "EXPLORER_MODELS_CACHE")}
    os.environ["EXPLORER_RUNS_DIR"] = str(scratch / "runs")  # the check's runs never mix with the user's
    try:
        model = args.model
        try:
            if args.random_weights:
                model = random_weights_model(args.model, scratch / "models", "cuda" if cuda else "cpu")
            else:  # the bundled model is converted here if it is not yet (the app does the same on first use)
                from explorer.models import registry

                registry.ensure_files(registry.resolve(model))
        except ExplorerError as error:  # no model to check: the check cannot start
            print(f"gpu_check: {error}{'' if args.random_weights else ' (or pass --random-weights)'}",
                  file=sys.stderr)
            raise SystemExit(2) from None
        if args.random_weights:
            os.environ["EXPLORER_MODELS_CACHE"] = str(scratch / "models")
        return [check_method(config_for(model, method.strip(), args.steps, args.batch_size, args.seq_len, cuda))
                for method in args.methods.split(",") if method.strip()]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    main()
