"""The app's training loop against a plain PEFT + torch loop, and the model FLOP utilisation, in one run.

Usage: python bench/train_throughput.py [--model smollm2-135m-instruct] [--method lora] [--steps 4]
                                        [--batch-size 4] [--seq-len 96] [--warmup 1] [--rounds N] [--seconds 900]
README figures: python bench/train_throughput.py --seconds 900

Each round runs, in rotating order (bench/measure.py): the app's loop (explorer.train.loop.train, as a run
trains: fresh model, ``--steps`` steps, its own tokens/s from the run summary), a plain loop of the same
steps that a user would write by hand (forward, backward, clip, AdamW step) on a model built the same way
(same loader, same PEFT wrapper, same data, batches and optimizer settings), the plain loop a second time
(the A/A control), and a float32 matmul burst (the machine's peak, measured between the training samples
rather than once at the start, since it drifts with the load too). Both loops pay a cold first step: each
starts from a freshly loaded model every round. Rounds repeat after one warm-up round until the intervals
are within ±1%, or the time cap.

Prints, per figure, the median, its 95% interval, the A/A resolution and the verdict:
- app / plain tokens/s, target >= 0.95 (the app's callbacks, logging and peak-memory reads cost under 5%);
- the model FLOP utilisation of each loop: tokens/s x training FLOPs per token (explorer.costs.flops, exact
  for this model and method, at the data's mean example length) / the matmul peak of the same round;
- the matmul peak itself and each loop's tokens/s.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import measure  # noqa: E402
from explorer.models import specs as model_specs  # noqa: E402
from explorer.costs.flops import count_flops  # noqa: E402
from explorer.data import chat, sources  # noqa: E402
from explorer.methods import METHODS  # noqa: E402
from explorer.models import loading, provision  # noqa: E402
from explorer.train import loop as training  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

DATASET = "pirate"


def matmul_flops_per_second(seconds: float, n: int = 1024) -> float:
    """Float32 n x n matmuls for ``seconds``: FLOP/s (2n³ per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def app_round(config: TrainConfig) -> float:
    """One run of the app's loop (evaluations off, as far as the loop allows): its measured tokens/s."""
    with tempfile.TemporaryDirectory() as folder:
        return training.train(config, {}, Path(folder))["tokens_per_second"]


def plain_round(config: TrainConfig, lr: float) -> float:
    """What a user would write by hand with PEFT and torch: tokens per second of the same training steps."""
    torch.manual_seed(config.seed)
    prep = training.prepare(config, {})
    model = METHODS[config.method].apply(prep.model, prep.spec, prep.options)
    model.train()
    tok = prep.tokenizer
    encoded, _ = chat.encode_dataset(tok, sources.load_dataset(config.dataset)[0], config.seq_len)
    stream = training.batches(encoded, config.batch_size, chat.pad_id(tok), config.seed)
    trainable = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    tokens, seconds = 0, 0.0
    for _ in range(config.steps):
        batch = {k: v.to(prep.device) for k, v in next(stream).items()}
        start = time.perf_counter()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if prep.device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def flops_per_token(config: TrainConfig) -> float:
    """Training FLOPs (forward + backward) per token at the training data's mean example length."""
    spec = model_specs.resolve(config.model)
    method = METHODS[config.method]
    adaptation = method.adaptation(spec, method.parse_options({}))
    tokenizer = loading.load(config.model).tokenizer
    encoded, _ = chat.encode_dataset(tokenizer, sources.load_dataset(config.dataset)[0], config.seq_len)
    length = round(statistics.mean(len(e.input_ids) for e in encoded))
    forward, backward = count_flops(spec.arch, adaptation, length)
    return (forward + backward) / length


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=provision.BUNDLED_NAME)
    parser.add_argument("--method", default="lora", choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=4, help="training steps per loop per round")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=96)
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="matmul burst per round")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds before measuring")
    parser.add_argument("--seconds", type=float, default=900.0, help="time cap for the whole bench")
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds")
    args = parser.parse_args(argv)
    config = TrainConfig(model=args.model, method=args.method, dataset=DATASET, steps=args.steps,
                         batch_size=args.batch_size, seq_len=args.seq_len, eval_examples=0, eval_every=10 ** 6,
                         score_base=False)
    lr = config.learning_rate or METHODS[config.method].default_lr
    per_token = flops_per_token(config)
    print(f"model {args.model}, method {args.method}, {args.steps} steps x batch {args.batch_size} per loop "
          f"per round, {torch.get_num_threads()} threads; training FLOPs per token {per_token / 1e9:.3f} GFLOP",
          flush=True)
    rounds = measure.interleave(
        {"app": lambda: app_round(config), "plain": lambda: plain_round(config, lr),
         "peak": lambda: matmul_flops_per_second(args.peak_seconds)},
        control="plain", seconds=args.seconds, warmup=args.warmup, max_rounds=args.rounds, precision=0.01,
        ratios=[("app", "plain"), ("app", "peak"), ("plain", "peak")],
        progress=lambda r: print(f"  round {r.count}: app {r.samples['app'][-1]:.1f} tokens/s, plain "
                                 f"{r.samples['plain'][-1]:.1f}, peak {r.samples['peak'][-1] / 1e9:.1f} GFLOP/s",
                                 flush=True))
    print(measure.final_block("train_throughput", figures(rounds, per_token), rounds.describe()))


def figures(rounds: measure.Rounds, per_token: float) -> list[measure.Figure]:
    noise = rounds.resolution()
    mfu = {loop: rounds.ratio(loop, "peak").scaled(per_token) for loop in ("app", "plain")}
    return [
        measure.Figure("app / plain tokens/s", rounds.ratio("app", "plain"), noise, measure.at_least(0.95)),
        measure.Figure("A/A: plain / plain", rounds.control_ratio(), noise),
        measure.Figure("model FLOP utilisation, app", mfu["app"], noise, fmt="{:.1%}"),
        measure.Figure("model FLOP utilisation, plain", mfu["plain"], noise, fmt="{:.1%}"),
        measure.Figure("fp32 matmul peak GFLOP/s", rounds.interval("peak").scaled(1e-9), noise, fmt="{:.1f}"),
        measure.Figure("app tokens/s", rounds.interval("app"), noise, fmt="{:.1f}"),
        measure.Figure("plain tokens/s", rounds.interval("plain"), noise, fmt="{:.1f}"),
    ]


if __name__ == "__main__":
    main()
