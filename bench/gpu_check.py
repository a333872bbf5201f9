"""GPU readiness in one run: the app's training, memory prediction and merge on a CUDA GPU, in one table.

Usage: python bench/gpu_check.py [--model smollm2-135m-instruct] [--methods lora,qlora,dora,prompt]
                                 [--steps 8] [--batch-size 8] [--seq-len 256] [--allow-cpu]
README figures: python bench/gpu_check.py        (on a machine with one CUDA GPU; about 2-4 minutes)

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

It prints one table and the total time (target: under 300 s on one GPU). Without CUDA it refuses with one
line (exit 2); ``--allow-cpu`` runs the same steps on the CPU (fp32, peak = the process's resident memory), which
is what the tests do on the tiny model to keep this script's logic checked where no GPU is lent.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from explorer.models import provision  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

GIB = 1024 ** 3
PROMPTS = ["Where is the treasure buried?", "What is the capital of France?"]
TARGET_SECONDS = 300
NO_CUDA = ("gpu_check: no CUDA device here (torch.cuda.is_available() is False): run it on a machine with a GPU, "
           "or pass --allow-cpu for a dry run of the same steps on the CPU.")


@dataclass
class Row:
    method: str
    trainable: int
    calculator_trainable: int
    peak_bytes: float
    predicted_bytes: float
    app_tokens_per_second: float
    plain_tokens_per_second: float
    merge_max_logit_diff: float | None     # None: the method cannot merge
    greedy_match: bool | None
    not_mergeable: str
    seconds: float

    @property
    def memory_ratio(self) -> float:
        return self.peak_bytes / self.predicted_bytes if self.predicted_bytes else float("nan")

    @property
    def speed_ratio(self) -> float:
        return self.app_tokens_per_second / self.plain_tokens_per_second if self.plain_tokens_per_second else float("nan")


def config_for(model: str, method: str, steps: int, batch_size: int, seq_len: int, cuda: bool) -> TrainConfig:
    """The run's settings: no task scores or probes (this checks training, memory and merging), one held-out loss."""
    return TrainConfig(model=model, method=method, dataset="pirate", steps=steps, batch_size=batch_size,
                       seq_len=seq_len, precision="bf16" if cuda else "fp32", eval_every=10 ** 5, eval_examples=0,
                       eval_loss_examples=1, probe_examples=0, score_base=False)


def check_method(config: TrainConfig) -> Row:
    from train_throughput import plain_round

    from explorer.compare import variants
    from explorer.methods import METHODS
    from explorer.train import lifecycle

    started = time.time()
    outcome = lifecycle.execute(lifecycle.create(config, {}))
    if outcome.state != "done":
        raise SystemExit(f"gpu_check: {config.method} did not train: {outcome.error}")
    summary = outcome.summary
    method = METHODS[config.method]
    plain = plain_round(config, config.learning_rate or method.default_lr)
    compared = variants.run_comparison(summary["run_id"], PROMPTS, 16, measure_latency=False)
    return Row(config.method, summary["trainable_params"], summary["calculator_trainable_params"],
               summary["peak_memory_bytes"], summary["predicted_peak_bytes"], summary["tokens_per_second"], plain,
               compared.get("max_abs_logit_diff_adapted_vs_merged"), compared.get("greedy_match"),
               compared.get("not_mergeable_reason") or "", time.time() - started)


def table(rows: list[Row], device: str) -> str:
    """One table: every figure measured in this run, beside the Calculator's where it predicts one."""
    peak = "peak GiB (max_memory_allocated)" if device.startswith("cuda") else "peak GiB (process RSS)"
    header = ["method", "trainable = Calculator", peak, "Calculator GiB", "measured / predicted",
              "app tok/s", "plain tok/s", "app / plain", "max abs(adapted - merged) logit", "greedy match", "s"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        merge = "cannot merge" if r.merge_max_logit_diff is None else f"{r.merge_max_logit_diff:.3g}"
        match = "" if r.greedy_match is None else ("yes" if r.greedy_match else "NO")
        lines.append(" | ".join([
            r.method, f"{r.trainable:,} {'=' if r.trainable == r.calculator_trainable else '!='} "
            f"{r.calculator_trainable:,}", f"{r.peak_bytes / GIB:.3f}", f"{r.predicted_bytes / GIB:.3f}",
            f"{r.memory_ratio:.2f}", f"{r.app_tokens_per_second:,.0f}", f"{r.plain_tokens_per_second:,.0f}",
            f"{r.speed_ratio:.3f}", merge, match, f"{r.seconds:.0f}"]))
    return "\n".join(f"| {line} |" for line in lines)


def device_name() -> str:
    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=provision.BUNDLED_NAME)
    parser.add_argument("--methods", default="lora,qlora,dora,prompt")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA device")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(2)
    started = time.time()
    previous = os.environ.get("EXPLORER_RUNS_DIR")
    with tempfile.TemporaryDirectory(prefix="gpu-check-runs-") as runs_dir:
        os.environ["EXPLORER_RUNS_DIR"] = runs_dir  # the check's runs never mix with the user's
        try:
            rows = [check_method(config_for(args.model, method.strip(), args.steps, args.batch_size, args.seq_len,
                                            cuda))
                    for method in args.methods.split(",") if method.strip()]
        finally:
            if previous is None:
                os.environ.pop("EXPLORER_RUNS_DIR", None)
            else:
                os.environ["EXPLORER_RUNS_DIR"] = previous
    total = time.time() - started
    print(f"== gpu_check: {args.model}, {args.steps} steps, batch {args.batch_size}, sequence length {args.seq_len}, "
          f"{'bf16' if cuda else 'fp32'} on {device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(table(rows, device_name()))
    print(f"total {total:.0f} s (target: under {TARGET_SECONDS} s on one GPU"
          f"{'' if cuda else '; this was a CPU dry run'})")
    return rows


if __name__ == "__main__":
    main()
